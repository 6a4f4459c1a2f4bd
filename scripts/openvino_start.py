"""First and second start of the OpenVINO backend: time from opening the ONNX file to the
first mask, in fresh processes, with an empty compiled-model cache and then with the cache
the first start wrote. Prints one JSON object (what scripts/bench_cpu.sh saves).

    python scripts/openvino_start.py demo/model.int8.onnx [more.onnx ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import sys, time
start = time.perf_counter()
import numpy as np
from bisenet_deploy.runtime import Segmenter
seg = Segmenter(sys.argv[1], backend="openvino")
imported = time.perf_counter()
mask = seg(np.zeros((seg.spec.height, seg.spec.width, 3), np.uint8))
done = time.perf_counter()
print(f"{done - start:.4f} {seg.backend.compile_seconds:.4f} {int(seg.backend.cache_hit)}")
"""


def start_times(path: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="ov-start-") as cache:
        env = {**os.environ, "BISENET_DEPLOY_CACHE": cache}
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", CHILD, path], env=env, capture_output=True, text=True,
                                 check=True, timeout=600).stdout.split()
            runs.append({"to_first_mask_s": float(out[0]), "compile_s": float(out[1]), "cache_hit": bool(int(out[2]))})
    return {"artifact": path, "first_start": runs[0], "second_start": runs[1]}


if __name__ == "__main__":
    print(json.dumps([start_times(p) for p in sys.argv[1:]], indent=1))
