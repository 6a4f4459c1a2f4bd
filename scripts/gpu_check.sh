#!/usr/bin/env bash
# Run once on a machine with an NVIDIA GPU and TensorRT (Jetson or desktop): every engine path,
# one command, one report file (OUT_DIR/gpu_check_report.json) to attach to an issue.
#   1. bisenet_deploy.cli.gpu_check: exports the demo model fixed / dynamic, each with logits
#      and with --argmax --fuse-preprocess, at FP32/FP16/INT8; builds every engine with
#      `bisenet-export --engine` (one shared timing cache); compares each engine's labels with
#      onnxruntime FP32; CUDA graph == plain path; GPU-resident input; timing cache reused by a
#      rebuild; layer reports; a DLA engine where the machine has DLA cores.
#   2. pytest -m "gpu or tensorrt": the builder and compat tests against the real TensorRT
#      (tests/trt_fixtures.builder_module prefers it over TensorRT-RTX), the runtime tests
#      (tiny engines FP32/FP16/INT8 x fixed/dynamic, argmax + fused preprocessing, graphs,
#      misaligned GPU inputs, DLA), cuda-python plumbing.
#   3. scripts/gpu_check_report.py merges both with versions and the device into one file.
# About 5-10 minutes on a desktop GPU; on a Jetson Orin pass --size 128x256 to stay under 15.
# Without a usable GPU nothing runs: the report says why (verdict "NOT RUN: ...") and the exit
# status is 2. Exit 0: every path passed; 1: something failed.
#
# usage: scripts/gpu_check.sh [OUT_DIR] [--size HxW] [--tensorrt auto|tensorrt|tensorrt_rtx]
#                             [--forms F,...] [--precisions P,...]
#   OUT_DIR defaults to ./gpu_check; the options go to bisenet_deploy.cli.gpu_check.
# Needs: pip install -e '.[test,gpu]' plus TensorRT (JetPack ships it; pip install tensorrt).
set -uo pipefail
usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }
fail() { echo "gpu_check.sh: error: $*" >&2; exit 2; }
out_arg="" passed=()
while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --size|--tensorrt|--forms|--precisions)
            (($# >= 2)) || fail "$1 needs a value (see --help)"
            passed+=("$1" "$2"); shift 2 ;;
        --size=*|--tensorrt=*|--forms=*|--precisions=*) passed+=("$1"); shift ;;
        -*) fail "unknown option '$1' (see --help)" ;;
        *) [[ -z $out_arg ]] || fail "one output folder, got '$out_arg' and '$1'"
           out_arg=$1; shift ;;
    esac
done
# OUT_DIR is relative to where the user ran the script, not to the checkout.
OUT=$(realpath -m -- "${out_arg:-gpu_check}")
# One line, not mkdir's message and a traceback from the report writer, when it cannot be made.
mkdir -p -- "$OUT" 2>/dev/null && [[ -w $OUT ]] || fail "cannot create or write the output folder '$OUT'"
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

rm -f "$OUT/checks.json" "$OUT/pytest.xml" "$OUT/gpu_check_report.json"

# Without a usable GPU there is nothing to check: say so in one line (with the fix, e.g. the
# cuda-python line for this driver) and in the report a user attaches, run nothing, exit 2.
problem=$("$PYTHON" -c 'from bisenet_deploy.trt.cuda_buffers import gpu_problem; print(gpu_problem(0) or "")' 2>&1)
if [[ -n "$problem" ]]; then
    problem=${problem##*$'\n'}
    echo "gpu_check.sh: nothing checked: $problem" >&2
    "$PYTHON" scripts/gpu_check_report.py "$OUT" --not-run "$problem" >/dev/null
    exit 2
fi
start=$SECONDS
"$PYTHON" -m bisenet_deploy.cli.gpu_check --out "$OUT" "${passed[@]}"
"$PYTHON" -m pytest -q -rs -p no:cacheprovider -m "gpu or tensorrt" --junitxml="$OUT/pytest.xml" tests/
"$PYTHON" scripts/gpu_check_report.py "$OUT" --seconds $((SECONDS - start))
