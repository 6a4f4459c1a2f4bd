#!/usr/bin/env bash
# GPU results for benchmarks/results/ on a machine with an NVIDIA GPU: PyTorch eager FP32 vs
# FP16 / channels_last / CUDA graphs, onnxruntime (CUDA EP, when onnxruntime-gpu is installed:
# otherwise its rows are listed as not run, with the reason) and TensorRT engines, at 512x1024
# and 1024x2048, batch 1 and 4. (SIZES/BATCHES change the sweep; MIN/OPT/MAX_SHAPE the
# engines' profile.)
#
#   make bench-gpu                     # or: PYTHON=.venv/bin/python scripts/bench_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ITERATIONS=${ITERATIONS:-50}
SIZES=${SIZES:-512x1024,1024x2048}
BATCHES=${BATCHES:-1,4}
WORK=${WORK:-build/bench-gpu}
OUT=${OUT:-benchmarks/results}
mkdir -p "$WORK" "$OUT"

help=$("$PYTHON" -m bisenet_deploy.cli.export --help)
# One dynamic model runs at every size and batch of the sweep.
"$PYTHON" -m bisenet_deploy.cli.export --demo -q -o "$WORK/model.onnx" --size 512x1024 \
    --dynamic batch,height,width
if grep -q -- '--precision' <<<"$help"; then
    "$PYTHON" -m bisenet_deploy.cli.export "$WORK/model.onnx" --precision fp16,int8 -q \
        || echo "bench_gpu: no FP16/INT8 ONNX copies" >&2
fi
models=("$WORK"/model.onnx)
for p in fp16 int8; do
    if [[ -f "$WORK/model.$p.onnx" ]]; then models+=("$WORK/model.$p.onnx"); fi
done
# TensorRT engines with a profile that covers the sweep; a failed build only drops the
# engine rows (the table lists sizes outside an engine's profile as not run).
if grep -q -- '--engine' <<<"$help"; then
    for onnx in "${models[@]}"; do
        engine="${onnx%.onnx}.engine"
        if "$PYTHON" -m bisenet_deploy.cli.export "$onnx" --engine -o "$engine" -q \
            --min-shape "${MIN_SHAPE:-1x3x512x1024}" --opt-shape "${OPT_SHAPE:-1x3x512x1024}" \
            --max-shape "${MAX_SHAPE:-4x3x1024x2048}"; then
            models+=("$engine")
        else
            echo "bench_gpu: no engine for $onnx" >&2
        fi
    done
fi

gpu=$("$PYTHON" -c 'import re, torch; print(re.sub("[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-"))')
name="$OUT/gpu-$gpu"
"$PYTHON" -m bisenet_deploy.cli.bench --demo "${models[@]}" --device cuda \
    --torch-variant fp16 --torch-variant channels_last --torch-variant fp16+channels_last \
    --torch-variant fp16+channels_last+cuda_graph \
    --sizes "$SIZES" --batch "$BATCHES" --iterations "$ITERATIONS" \
    --json "$name.json" --csv "$name.csv" --markdown "$name.md" --plot "$name.png"
