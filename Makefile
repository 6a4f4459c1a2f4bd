# Two commands do everything (see README):
#   make demo   set up .venv, export the built-in demo model, run it, print a benchmark
#   make test   set up .venv and run the test suite (what CI runs)
#   make bench-cpu / bench-gpu   regenerate benchmarks/results/ (idle machine; GPU for the second)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch as served on the project's build machines; override for other platforms, e.g.
#   make test TORCH="torch torchvision"
TORCH ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo

.PHONY: demo test setup clean bench-cpu bench-gpu

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,rtx]'
	touch $@

setup: $(VENV)/.installed

# Export the demo model (FP32, and INT8 where bisenet-export has --precision), segment a sample
# photo, then benchmark PyTorch (reference) vs onnxruntime at 512x512: about 3 minutes on 2 cores.
demo: setup
	mkdir -p $(DEMO_DIR)
	if $(BIN)/bisenet-export --help | grep -q -- '--precision'; then \
	    $(BIN)/bisenet-export --demo -o $(DEMO_DIR)/model.onnx --size 512x512 --precision fp32,int8 --calib-count 32; \
	else \
	    $(BIN)/bisenet-export --demo -o $(DEMO_DIR)/model.onnx --size 512x512; \
	fi
	$(BIN)/bisenet-infer $(DEMO_DIR)/model.onnx "$$($(BIN)/python -c 'from bisenet_deploy.samples import sample_photo_paths as p; print(p()[0])')" \
	    -o $(DEMO_DIR)/masks --mode overlay -q
	$(BIN)/bisenet-bench --demo $(DEMO_DIR)/model.onnx $$(ls $(DEMO_DIR)/model.int8.onnx 2>/dev/null) \
	    --sizes 512x512 --iterations 15 --max-images 6 \
	    --json $(DEMO_DIR)/bench.json --markdown $(DEMO_DIR)/bench.md --plot $(DEMO_DIR)/bench.png

# Checked-in results (benchmarks/results/): run on an otherwise idle machine.
bench-cpu: setup
	PYTHON=$(BIN)/python scripts/bench_cpu.sh

bench-gpu: setup
	PYTHON=$(BIN)/python scripts/bench_gpu.sh

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build/bench-cpu build/bench-gpu
