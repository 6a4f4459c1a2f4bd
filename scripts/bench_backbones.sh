#!/usr/bin/env bash
# Xception-39 (the BiSeNet paper's fastest context path) against ResNet-18 on this CPU: FLOPs
# (counted from each ONNX graph) and end-to-end speed with onnxruntime and OpenVINO at
# 512x512 and 768x1536 (the paper's speed setting), batch 1, one interleaved run. The
# Xception-39 weights are seeded, untrained: speed and FLOPs do not depend on them, and
# agreement with the ResNet-18 rows means nothing (different networks).
#
#   PYTHON=.venv/bin/python scripts/bench_backbones.sh      # -> benchmarks/results/backbones-<cpu>.*
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ITERATIONS=${ITERATIONS:-20}
WORK=${WORK:-build/bench-backbones}
OUT=${OUT:-benchmarks/results}
mkdir -p "$WORK" "$OUT"
"$PYTHON" - "$WORK/x39.pth" <<'PY'
import sys, torch
from bisenet_deploy.model import BiSeNet
from bisenet_deploy.datasets import shapes
torch.manual_seed(0)
torch.save({"state_dict": BiSeNet(shapes.NUM_CLASSES, backbone="xception39").eval().state_dict()}, sys.argv[1])
PY
models=()
for size in 512x512 768x1536; do
    "$PYTHON" -m bisenet_deploy.cli.export "$WORK/x39.pth" -o "$WORK/xception39-$size.onnx" --size "$size" -q --no-verify
    "$PYTHON" -m bisenet_deploy.cli.export --demo -o "$WORK/resnet18-$size.onnx" --size "$size" -q --no-verify
    models+=("$WORK/resnet18-$size.onnx" "$WORK/xception39-$size.onnx")
done
cpu=$("$PYTHON" -c 'import re; from bisenet_deploy.machine import cpu_facts as f; c = f(); fl = c["isa_flags"]
isa = "amx" if "amx_int8" in fl else "avx512-vnni" if "avx512_vnni" in fl else "avx2" if "avx2" in fl else "base"
print(re.sub("[^a-z0-9]+", "-", c["model"].lower()).strip("-") + "-" + isa + "-" + str(c["usable_cpus"]) + "c")')
name="$OUT/backbones-$cpu"
"$PYTHON" -m bisenet_deploy.cli.bench "${models[@]}" --no-reference --backend onnxruntime,openvino \
    --sizes 512x512,768x1536 --device cpu --iterations "$ITERATIONS" \
    --json "$name.json" --markdown "$name.md" --csv "$name.csv" -q
echo "wrote $name.{json,md,csv}"
