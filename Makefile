# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each sets up what it needs when missing: the virtualenv with the pinned packages and
# Debian's Fashion-MNIST package (the embedded default data set).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
STAMP := $(VENV)/.pabt-installed
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP) $(DATA)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

$(DATA):
	$(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist

demo: setup
	$(PY) -m experiments.quickstart

test: setup
	$(PY) -m pytest -q tests

test-slow: setup
	$(PY) -m pytest -q -m slow tests

bench: setup
	$(PY) -m experiments.bench_layers

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
