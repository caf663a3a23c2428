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
TEST_STAMP := $(VENV_DIR)/.installed-test
PYTEST_ARGS ?=
# What `make test` adds: the test tools and every integration extra, so no integration test is
# skipped in CI for want of its tool. `make demo` needs none of them.
TEST_EXTRAS := test,onnx,openvino,openvino-int8,mlflow,wandb,optuna,torch
# The torch extra asks for any torch >= 2.6; installed first, the CPU build (a 183 MB wheel, ~1 GB installed,
# under a minute) satisfies it, where pip would otherwise pick the ~5.5 GB CUDA build.
TORCH_CPU ?= torch==2.13.0
# setuptools' note about editable installs is information, not a problem: keep the first screen clean
PIP_QUIET := PYTHONWARNINGS="ignore:Editable installation." $(PY) -m pip install --quiet

.PHONY: setup horovod demo test bench reliability clean

setup: $(STAMP)

# effnet and its core dependencies (matplotlib for the training curves)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV_DIR)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77" wheel
	$(PIP_QUIET) -e '.[plot]'
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP_QUIET) "$(TORCH_CPU)"
	$(PIP_QUIET) -e '.[$(TEST_EXTRAS)]'
	touch $@

demo: $(STAMP)
	$(VENV_DIR)/bin/effnet train --gin quickstart --model-dir runs/quickstart

# Horovod has no wheel on PyPI: build it once against the installed TensorFlow (cached in
# ~/.cache/effnet/wheels, outside the repo) so the Horovod tests run instead of being skipped.
# EFFNET_SKIP_HOROVOD=1 skips the install (those tests are then skipped).
horovod: $(STAMP)
	@$(PY) -c "import horovod.tensorflow" 2>/dev/null || [ -n "$$EFFNET_SKIP_HOROVOD" ] || PYTHON=$(PY) bash scripts/install_horovod.sh

test: $(TEST_STAMP) horovod
	$(PY) -m pytest $(PYTEST_ARGS)

# The full kill-anywhere set (30 training + 4 export points, ~40 min on 2 busy cores) and the hostile-input catalogue.
reliability: $(TEST_STAMP)
	EFFNET_RELIABILITY_FULL=1 $(PY) -m pytest tests/reliability -s $(PYTEST_ARGS)

bench: $(VENV_DIR)/.bench-installed
	$(PY) -m benchmarks.run

# torch + timm for the benchmark's peer rows (large: only `make bench` installs them)
$(VENV_DIR)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

clean:
	rm -rf $(VENV_DIR) runs build *.egg-info
