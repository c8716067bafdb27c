# The README's two set-up commands: `make demo` and `make test`.
# Each creates .venv (once) and installs pinned versions from constraints.txt: the demo only what it runs,
# the tests the dev tools (pytest, ruff, mypy, mkdocs, the peers) on top.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint docs bench clean

# The demo needs the package and its plotting/CLI extras only; the tests add the dev tools on top.
$(DEMO_STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[all]'
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(PIP) install -c constraints.txt -e '.[dev]'
	# torchcam would pull torchvision (no CPU build here): install it without deps.
	$(PIP) install -c constraints.txt --no-deps torchcam
	touch $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/camlens demo $(ARGS)

# ruff (rules in pyproject.toml), mypy on the package, then the suite; any finding or failure fails the target
test: lint
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks docs
	$(VENV)/bin/mypy src/camlens

# the API reference, generated from the docstrings, with the pages of docs/ (mkdocs.yml): open site/index.html
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# make bench B=engine runs benchmarks/bench_engine.py (B=methods, train, ... likewise)
B ?= engine
bench: $(STAMP)
	$(PY) benchmarks/bench_$(B).py $(ARGS)

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info
