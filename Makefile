# The README's two set-up commands: `make demo` and `make test`.
# Each creates .venv (once) and installs pinned versions from constraints.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[dev]'
	# torchcam would pull torchvision (no CPU build here): install it without deps.
	$(PIP) install -c constraints.txt --no-deps torchcam
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/camlens demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# make bench B=engine runs benchmarks/bench_engine.py (B=methods, train, ... likewise)
B ?= engine
bench: $(STAMP)
	$(PY) benchmarks/bench_$(B).py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
