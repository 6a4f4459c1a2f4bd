#!/usr/bin/env bash
# Run once on a machine with an NVIDIA GPU and TensorRT (Jetson or desktop) to settle whether
# the engine path works there:
#   1. bisenet_deploy.cli.gpu_check: exports the demo model, builds FP32/FP16/INT8 engines
#      (and a dynamic-shape one) with `bisenet-export --engine`, runs them with the TensorRT
#      backend and compares labels with onnxruntime FP32 (>= 99.9 / 99.5 / 99 %), checks the
#      CUDA-graph path and GPU-resident input, prints a table and a verdict;
#   2. the test suite's `gpu` and `tensorrt` markers (cuda-python plumbing, backend tests).
#
# usage: scripts/gpu_check.sh [OUT_DIR] [extra gpu_check options, e.g. --size 512x1024]
# Needs: pip install -e '.[test,gpu]' plus TensorRT (JetPack ships it; pip install tensorrt).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT=${1:-gpu_check}
shift || true

# Without a usable GPU there is nothing to check: say so in one line, run nothing.
problem=$("$PYTHON" -c 'from bisenet_deploy.trt.cuda_buffers import gpu_problem; print(gpu_problem(0) or "")' 2>&1)
if [[ -n "$problem" ]]; then
    echo "gpu_check.sh: nothing checked: ${problem##*$'\n'}" >&2
    exit 2
fi

"$PYTHON" -m bisenet_deploy.cli.gpu_check --out "$OUT" "$@"
check=$?
"$PYTHON" -m pytest -q -rs -m "gpu or tensorrt" tests/
tests=$?

report=""
[[ -f "$OUT/gpu_check.json" ]] && report="; report: $OUT/gpu_check.json"
echo
if [[ $check -eq 0 && $tests -eq 0 ]]; then
    echo "gpu_check.sh: PASS (engines agree with onnxruntime, GPU tests pass$report)"
    exit 0
fi
echo "gpu_check.sh: FAIL (gpu_check exit $check, marker tests exit $tests$report)"
exit 1
