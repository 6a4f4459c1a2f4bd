# Two commands do everything (see README):
#   make demo   set up .venv, export the built-in demo model, run it, print a benchmark
#   make test   set up .venv and run the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch as served on the project's build machines; override for other platforms, e.g.
#   make test TORCH="torch torchvision"
TORCH ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo

.PHONY: demo test setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,rtx]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	mkdir -p $(DEMO_DIR)
	$(BIN)/bisenet-export --demo -o $(DEMO_DIR)/model.onnx --size 512x512

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
