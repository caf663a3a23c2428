# Two commands do all the set-up (see README):
#   make demo   train the quickstart model on the built-in demo data
#   make test   run the whole test suite
# Both create ./.venv and install effnet into it on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77" wheel
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/effnet train --gin quickstart --model-dir runs/quickstart

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.bench-installed
	$(PY) -m benchmarks.run

# torch + timm for the benchmark's peer rows (large: only `make bench` installs them)
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

clean:
	rm -rf $(VENV) runs build *.egg-info
