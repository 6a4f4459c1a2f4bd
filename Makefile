# Two commands do everything (see README):
#   make demo   set up .venv, export the built-in demo model, run it, print a benchmark
#   make test   set up .venv and run the test suite (what CI runs)
#   make bench-cpu / bench-gpu   regenerate benchmarks/results/ (idle machine; GPU for the second)
#   make serve-demo   serve the demo model with a real Triton server and call it (.venv-serve)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Triton's Python-backend build (nvidia-pytriton) needs numpy < 2: serving gets its own environment.
SERVE_VENV ?= .venv-serve
# PyTorch as served on the project's build machines; override for other platforms, e.g.
#   make test TORCH="torch torchvision"
TORCH ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo

.PHONY: demo test setup clean bench-cpu bench-gpu serve-setup serve-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,rtx]'
	touch $@

setup: $(VENV)/.installed

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q -e '.[serve]'
	touch $@

serve-setup: $(SERVE_VENV)/.installed

# Export the demo model if needed, write a Triton repository, start bisenet-serve run on free
# ports of 127.0.0.1, compare gRPC/HTTP clients with the local Segmenter, stop the server.
serve-demo: setup serve-setup
	$(BIN)/python scripts/serve_demo.py

# The built-in demo model (BiSeNet-R18 trained on the synthetic shapes scenes): write calibration
# scenes (training photos) and held-out scenes, export FP32/FP16/INT8 ONNX with a fidelity report,
# segment a held-out scene, then benchmark PyTorch (reference) vs onnxruntime FP32 and INT8 at
# 512x512 on the held-out scenes: about 75 s on 2 cores once set up. Everything lands in $(DEMO_DIR)/.
demo: setup
	mkdir -p $(DEMO_DIR)
	$(BIN)/python -m bisenet_deploy.datasets.shapes $(DEMO_DIR)/calib --split train --count 32 --seed 7
	$(BIN)/python -m bisenet_deploy.datasets.shapes $(DEMO_DIR)/scenes --split heldout --count 8
	$(BIN)/bisenet-export --demo -o $(DEMO_DIR)/model.onnx --size 512x512 --precision fp32,fp16,int8 \
	    --calib $(DEMO_DIR)/calib/images --calib-count 32 \
	    --val-images $(DEMO_DIR)/scenes/images --val-labels $(DEMO_DIR)/scenes/labels --val-count 8
	$(BIN)/bisenet-infer $(DEMO_DIR)/model.int8.onnx $(DEMO_DIR)/scenes/images -o $(DEMO_DIR)/masks --mode overlay -q
	$(BIN)/bisenet-bench --demo $(DEMO_DIR)/model.onnx $(DEMO_DIR)/model.int8.onnx \
	    --images $(DEMO_DIR)/scenes/images --sizes 512x512 --iterations 15 --max-images 8 \
	    --json $(DEMO_DIR)/bench.json --markdown $(DEMO_DIR)/bench.md --plot $(DEMO_DIR)/bench.png

# Checked-in results (benchmarks/results/): run on an otherwise idle machine.
bench-cpu: setup
	PYTHON=$(BIN)/python scripts/bench_cpu.sh

bench-gpu: setup
	PYTHON=$(BIN)/python scripts/bench_gpu.sh

test: setup serve-setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(SERVE_VENV) $(DEMO_DIR) .pytest_cache build/bench-cpu build/bench-gpu build/serve-demo
