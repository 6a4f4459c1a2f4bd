#!/usr/bin/env bash
# CPU results for benchmarks/results/ (what the README quotes): onnxruntime and OpenVINO (and
# the automatic choice between them) on FP32 and INT8 vs PyTorch eager FP32 at 512x512 and
# 512x1024, batch 1, 2 threads; PyTorch bf16 and OpenVINO bf16 rows where the CPU has bf16;
# OpenVINO's in-graph and host pre/postprocessing; an in-graph-argmax FP32 model at 512x512.
# Results are named after the CPU model, its int8/bf16 ISA and the usable CPUs, so runs on
# different CPU kinds (AVX2 EPYC, AVX-512/VNNI EPYC, AMX Xeon) sit side by side.
#
#   make bench-cpu                     # or: PYTHON=.venv/bin/python scripts/bench_cpu.sh
#   ITERATIONS=5 OUT=/tmp/check scripts/bench_cpu.sh    # quick check that it works
#   CITYSCAPES=0 scripts/bench_cpu.sh       # without the Cityscapes-size cell (1024x2048, 19 classes)
#   CITYSCAPES=only scripts/bench_cpu.sh    # only that cell (scripts/bench_cityscapes.sh)
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
CITYSCAPES=${CITYSCAPES:-1}
mkdir -p "$WORK" "$OUT"
if [[ "$CITYSCAPES" == only ]]; then
    exec env PYTHON="$PYTHON" THREADS="$THREADS" WORK="$WORK" OUT="$OUT" scripts/bench_cityscapes.sh
fi

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

name="$OUT/cpu-$("$PYTHON" -c 'from bisenet_deploy.machine import cpu_kind; print(cpu_kind())')"
bf16=$("$PYTHON" -c 'from bisenet_deploy.machine import cpu_flags, has_bf16; print("yes" if has_bf16(cpu_flags()) else "")')
extra=()
if [[ -n "$bf16" ]]; then extra+=(--torch-variant bf16+channels_last --ov-hint f32,bf16); fi
# Backend choices are measured fresh (a private cache): the auto rows show a first decision.
export BISENET_DEPLOY_CACHE="$WORK/cache"
rm -rf "$BISENET_DEPLOY_CACHE"
"$PYTHON" -m bisenet_deploy.cli.bench --demo "${models[@]}" \
    --sizes 512x512,512x1024 --batch 1 --threads "$THREADS" --device cpu --iterations "$ITERATIONS" \
    --images "$WORK/scenes/images" --labels "$WORK/scenes/labels" --backend onnxruntime,openvino,auto \
    --ov-prepost graph,host "${extra[@]}" \
    --json "$name.json" --csv "$name.csv" --markdown "$name.md" --plot "$name.png"
# OpenVINO's first start (empty compiled-model cache) and second start (cache hit).
"$PYTHON" scripts/openvino_start.py "$WORK/model-512x512.onnx" "$WORK/model-512x512.int8.onnx" > "$name.openvino-start.json"
echo "wrote $name.{json,csv,md,png,openvino-start.json}"
# The size users compare with (the paper, CoinCheung's table): 19 classes at 1024x2048.
if [[ "$CITYSCAPES" != 0 ]]; then
    PYTHON="$PYTHON" THREADS="$THREADS" WORK="$WORK" OUT="$OUT" scripts/bench_cityscapes.sh
fi
