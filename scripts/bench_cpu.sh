#!/usr/bin/env bash
# CPU results for benchmarks/results/ (what the README quotes): onnxruntime FP32 and INT8 vs
# PyTorch eager FP32 at 512x512 and 512x1024, batch 1, 2 threads, plus an in-graph-argmax FP32
# model at 512x512 (Segmenter overhead and host postprocessing, issue 3).
#
#   make bench-cpu                     # or: PYTHON=.venv/bin/python scripts/bench_cpu.sh
#   ITERATIONS=5 OUT=/tmp/check scripts/bench_cpu.sh    # quick check that it works
#
# Run it on an otherwise idle machine: other processes on the same cores make PyTorch's
# OpenMP threads wait for each other and distort every ratio (the report warns when the
# load average was high at the start).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ITERATIONS=${ITERATIONS:-30}
THREADS=${THREADS:-2}
WORK=${WORK:-build/bench-cpu}
OUT=${OUT:-benchmarks/results}
mkdir -p "$WORK" "$OUT"

# The demo model segments coloured objects: calibrate INT8 on training scenes and measure
# speed and agreement on held-out scenes (photos never seen in training).
"$PYTHON" -m bisenet_deploy.datasets.shapes "$WORK/scenes" --split heldout --count 8 --size 512x1024
export_cmd=("$PYTHON" -m bisenet_deploy.cli.export --demo -q)
models=()
for size in 512x512 512x1024; do
    "$PYTHON" -m bisenet_deploy.datasets.shapes "$WORK/calib-$size" --split train --count 32 --seed 7 --size "$size"
    "${export_cmd[@]}" -o "$WORK/model-$size.onnx" --size "$size" --precision fp32,int8 \
        --calib "$WORK/calib-$size/images" --calib-count 32 \
        --val-images "$WORK/scenes/images" --val-labels "$WORK/scenes/labels" --val-count 8
    models+=("$WORK/model-$size.onnx" "$WORK/model-$size.int8.onnx")
done
"${export_cmd[@]}" -o "$WORK/model-512x512.argmax.onnx" --size 512x512 --argmax --no-verify
models+=("$WORK/model-512x512.argmax.onnx")

cpu=$("$PYTHON" -c 'import re; from bisenet_deploy.benchmarks.system import cpu_facts as f; c = f()
print(re.sub("[^a-z0-9]+", "-", c["model"].lower()).strip("-") + "-" + str(c["usable_cpus"]) + "c")')
name="$OUT/cpu-$cpu"
"$PYTHON" -m bisenet_deploy.cli.bench --demo "${models[@]}" \
    --sizes 512x512,512x1024 --batch 1 --threads "$THREADS" --device cpu --iterations "$ITERATIONS" --images "$WORK/scenes/images" \
    --json "$name.json" --csv "$name.csv" --markdown "$name.md" --plot "$name.png"
