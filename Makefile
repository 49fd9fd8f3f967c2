# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each sets up what it needs when missing: the virtualenv with the tested packages
# (setup.py's ranges, pinned by constraints.txt) and Debian's Fashion-MNIST package (the
# embedded default data set).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install -c constraints.txt
DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
STAMP := $(VENV)/.pabt-installed
DOCS_STAMP := $(VENV)/.pabt-docs-installed
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test test-slow lint docs bench clean

setup: $(STAMP) $(DATA)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PIP_INSTALL) -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PIP_INSTALL) -e '.[dev,docs]'
	$(PY) -m pip check
	touch $(DOCS_STAMP)

$(DATA):
	$(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist

demo: setup
	$(VENV)/bin/pabt-quickstart

# Two pytest-xdist workers (one TensorFlow thread each, tests/conftest.py): faster on
# two cores than one process; a test file's tests stay on one worker (module fixtures).
test: setup
	$(PY) -m pytest -q -n 2 --dist loadscope tests

test-slow: setup
	$(PY) -m pytest -q -m slow tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: setup
	$(PY) -m experiments.bench_layers

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache build dist site
