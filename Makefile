# The README's two set-up commands: `make demo` and `make test`, each with its own environment.
# make demo: .venv, the package and its plotting/CLI extras on torch 2.13.0 (CPU build), pinned by constraints.txt: fast.
# make test: .venv-test, everything the suite runs (the dev tools, torchvision and timm zoos, the peers, the browser
#            for the HTML report) on torch 2.14.1 + torchvision 0.29.1, pinned by constraints-test.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
DEMO_STAMP := $(VENV)/.installed-demo
TVENV  := .venv-test
TPY    := $(TVENV)/bin/python
TPIP   := $(TPY) -m pip --disable-pip-version-check -q
TEST_STAMP := $(TVENV)/.installed-test
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint docs bench browser clean

$(DEMO_STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[all]'
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml constraints-test.txt Makefile
	$(PYTHON) -m venv $(TVENV)
	$(TPIP) install -c constraints-test.txt -e '.[test]'
	# Quantus is the metrics tests' reference; its own requirements pull opencv-python (the GUI build) beside the
	# headless one pytorch-grad-cam brings: install it without them (it imports and runs on what is here).
	$(TPIP) install -c constraints-test.txt --no-deps quantus
	touch $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/camlens demo $(ARGS)

# The HTML report tests open pages in Debian's chromium (playwright drives it; no browser download).
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && apt-get install -y -qq chromium; }

# ruff (rules in pyproject.toml), mypy on the package, then the suite; any finding or failure fails the target
test: lint browser
	$(TPY) -m pytest -q $(ARGS)

lint: $(TEST_STAMP)
	$(TVENV)/bin/ruff check src tests benchmarks docs
	$(TVENV)/bin/mypy src/camlens

# the API reference, generated from the docstrings, with the pages of docs/ (mkdocs.yml): open site/index.html
docs: $(TEST_STAMP)
	$(TVENV)/bin/mkdocs build --strict --site-dir site

# make bench B=engine runs benchmarks/bench_engine.py (B=methods, train, ... likewise)
B ?= engine
bench: $(TEST_STAMP)
	$(TPY) benchmarks/bench_$(B).py $(ARGS)

clean:
	rm -rf $(VENV) $(TVENV) build site *.egg-info src/*.egg-info
