# Two commands do all the set-up (see README):
#   make demo   train the quickstart model on the built-in demo data
#   make test   run the whole test suite
# Both create ./.venv and install effnet into it on first use.

PYTHON ?= python3
VENV   ?= .venv
# Absolute paths from here on: the Horovod build runs pip from other folders, where a relative
# .venv/bin/python does not exist.
VENV_DIR := $(abspath $(VENV))
PY     := $(VENV_DIR)/bin/python
STAMP  := $(VENV_DIR)/.installed
PYTEST_ARGS ?=
# What `make test` installs: the test tools and every integration extra, so no integration test is
# skipped in CI for want of its tool.
TEST_EXTRAS := test,onnx,openvino,mlflow,wandb,optuna,torch

.PHONY: setup horovod demo test bench reliability clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV_DIR)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77" wheel
	@# setuptools' note about editable installs is information, not a problem: keep the first screen clean
	PYTHONWARNINGS="ignore:Editable installation." $(PY) -m pip install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV_DIR)/bin/effnet train --gin quickstart --model-dir runs/quickstart

# Horovod has no wheel on PyPI: build it once against the installed TensorFlow (cached in
# ~/.cache/effnet/wheels, outside the repo) so the Horovod tests run instead of being skipped.
# EFFNET_SKIP_HOROVOD=1 skips the install (those tests are then skipped).
horovod: $(STAMP)
	@$(PY) -c "import horovod.tensorflow" 2>/dev/null || [ -n "$$EFFNET_SKIP_HOROVOD" ] || PYTHON=$(PY) bash scripts/install_horovod.sh

test: $(STAMP) horovod
	$(PY) -m pytest $(PYTEST_ARGS)

# The full kill-anywhere set (30 training + 4 export points, ~40 min on 2 busy cores) and the hostile-input catalogue.
reliability: $(STAMP)
	EFFNET_RELIABILITY_FULL=1 $(PY) -m pytest tests/reliability -s $(PYTEST_ARGS)

bench: $(VENV_DIR)/.bench-installed
	$(PY) -m benchmarks.run

# torch + timm for the benchmark's peer rows (large: only `make bench` installs them)
$(VENV_DIR)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

clean:
	rm -rf $(VENV_DIR) runs build *.egg-info
