# One command sets up and runs the demo, one runs the tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build this machine has on disk; a looser requirement
# makes pip fetch a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.edgepack-setup
DEMO_DIR := examples/digits/artifacts
DEMO_BUNDLE := dist/digits-host

.PHONY: setup demo lint test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml runtime/pyproject.toml Makefile scripts/setup-system.sh scripts/setup-ultralytics.sh
	scripts/setup-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e './runtime[onnx,tflite,ncnn,serve,image,text,signing]' -e '.[dev,tflite,ncnn,fleet]' $(TORCH_PIN)
	VENV=$(VENV) scripts/setup-ultralytics.sh
	touch $(STAMP)

demo: setup
	$(PY) examples/digits/train.py $(DEMO_DIR)
	$(VENV)/bin/edgepack build examples/digits/model.py:create --target host \
		--weights $(DEMO_DIR)/weights.safetensors \
		--calibration $(DEMO_DIR)/calib.npz --eval $(DEMO_DIR)/eval.npz \
		-o $(DEMO_BUNDLE)
	$(VENV)/bin/edgepack-runtime verify $(DEMO_BUNDLE)

# ruff (F, E, B, I) on the whole tree, mypy strict on the runtime and plain on the packager
# (configured in the two pyproject.toml files; caches in .cache/, ~2 s when warm). test and
# test-fast run it first.
lint:
	$(VENV)/bin/ruff check .
	cd runtime && $(abspath $(VENV))/bin/mypy
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest

# The inner loop, at most 4 minutes here: everything but the tests marked slow (real-model
# builds, emulation, whole int8 searches of large inputs, fuzzing, server timeouts, fleets
# over ssh); the digits fixtures come from .cache/tests (tests/fixture_cache.py). CI runs
# `make test`, all of them.
test-fast: setup lint
	$(PY) -m pytest -m "not slow" -q

clean:
	rm -rf $(VENV) dist $(DEMO_DIR) .pytest_cache
