#!/usr/bin/env bash
# The Cityscapes-size cell of benchmarks/results/ (the size users compare with the BiSeNet paper
# and CoinCheung's TensorRT table): a 19-class BiSeNetV1 in CoinCheung's layout at 1024x2048,
# batch 1. Rows: PyTorch FP32 (the reference), onnxruntime FP32 and INT8, OpenVINO FP32 and
# INT8 with in-graph and with host pre/post (and OpenVINO bf16 where the CPU has bf16).
#
# RANDOM WEIGHTS: the checkpoint is written here with seeded random weights (speed does not
# depend on them; nothing is downloaded), saved as CoinCheung's tools/train_amp.py saves
# model_final.pth. Its label agreement figures are not those of a trained model.
#
# Where bisenet-export has --full-size-output (the artifact's default then ends at the
# network's output stride), both forms are exported and timed in the same run, so the
# before/after rows come from one run; the score tensor bytes per frame of every model
# go to NAME.cityscapes.outputs.json and the markdown.
#
#   scripts/bench_cityscapes.sh                 # called by scripts/bench_cpu.sh (CITYSCAPES=0 skips it)
#   CITY_ITERATIONS=3 OUT=/tmp/check scripts/bench_cityscapes.sh
#   CITY_SIZE=256x512 CITY_ITERATIONS=1 OUT=/tmp/check scripts/bench_cityscapes.sh   # does it run?
#
# PyTorch FP32 takes ~1.6-3 s a frame at this size on 2 cores: few rounds (CITY_ITERATIONS,
# default 5) keep the cell to about 15-20 minutes there, exports included.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
ITERATIONS=${CITY_ITERATIONS:-5}
SIZE=${CITY_SIZE:-1024x2048}   # another size only to check the script quickly
THREADS=${THREADS:-2}
WORK=${WORK:-build/bench-cpu}/cityscapes
OUT=${OUT:-benchmarks/results}
mkdir -p "$WORK" "$OUT"
name="$OUT/cpu-$("$PYTHON" -c 'from bisenet_deploy.machine import cpu_kind; print(cpu_kind())').cityscapes"

ckpt="$WORK/model_final.pth"
"$PYTHON" scripts/cityscapes_checkpoint.py "$ckpt" --classes 19 --seed 0
export_cmd=("$PYTHON" -m bisenet_deploy.cli.export "$ckpt" -q --size "$SIZE" --precision fp32,int8 --calib-count 8)
# INT8 calibrated on the built-in sample photos (random weights: any frames do for speed).
"${export_cmd[@]}" -o "$WORK/city.onnx"
models=("$WORK/city.onnx" "$WORK/city.int8.onnx")
if "$PYTHON" -m bisenet_deploy.cli.export --help | grep -q -- '--full-size-output'; then
    "${export_cmd[@]}" --full-size-output -o "$WORK/city.full-size.onnx"
    models+=("$WORK/city.full-size.onnx" "$WORK/city.full-size.int8.onnx")
    forms="the default export (city*.onnx) and --full-size-output (city.full-size*.onnx)"
else
    forms="the default export (city*.onnx; this bisenet-export has no --full-size-output, so it is the full-size graph)"
fi
hints=f32
if [[ -n "$("$PYTHON" -c 'from bisenet_deploy.machine import cpu_flags, has_bf16; print("y" if has_bf16(cpu_flags()) else "")')" ]]; then
    hints=f32,bf16
fi
"$PYTHON" -m bisenet_deploy.cli.bench --checkpoint "$ckpt" "${models[@]}" \
    --sizes "$SIZE" --batch 1 --threads "$THREADS" --device cpu --iterations "$ITERATIONS" \
    --warmup 2 --warmup-max 4 --max-images 2 --backend onnxruntime,openvino --ov-prepost graph,host --ov-hint "$hints" \
    --json "$name.json" --csv "$name.csv" --markdown "$name.md" --plot "$name.png"
"$PYTHON" scripts/score_bytes.py "${models[@]}" > "$name.outputs.json" 2> "$WORK/score_bytes.md"
{
    echo
    echo "### Score tensor per frame (what the network writes and the host reads for the labels)"
    echo
    cat "$WORK/score_bytes.md"
    echo
    echo "Models: $forms. RANDOM WEIGHTS: a 19-class CoinCheung BiSeNetV1 (ResNet-18) written by"
    echo "scripts/cityscapes_checkpoint.py with seeded random weights, saved as his train_amp.py saves"
    echo "model_final.pth; timings are those of the trained network, label agreement figures are not."
} >> "$name.md"
cat "$WORK/score_bytes.md"
echo "RANDOM WEIGHTS: the Cityscapes cell times an untrained network (speed only)"
echo "wrote $name.{json,csv,md,png,outputs.json}"
