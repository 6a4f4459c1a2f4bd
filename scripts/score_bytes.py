"""Bytes per frame of each ONNX model's outputs (what the network writes and the host reads
back for the label stage), as JSON on stdout and a markdown table on stderr.

    python scripts/score_bytes.py model.onnx model.full-size.onnx ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper


def output_bytes(path: Path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    outputs = []
    for out in model.graph.output:
        t = out.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        per_frame = None if any(d is None for d in dims[1:]) else int(np.prod(dims[1:])) * dtype.itemsize
        outputs.append({"name": out.name, "shape": dims, "dtype": str(dtype), "bytes_per_frame": per_frame})
    return {"model": path.name, "outputs": outputs,
            "bytes_per_frame": sum(o["bytes_per_frame"] or 0 for o in outputs)}


def main() -> None:
    rows = [output_bytes(Path(p)) for p in sys.argv[1:]]
    json.dump(rows, sys.stdout, indent=1)
    print()
    print("| model | outputs | bytes per frame |\n|---|---|---:|", file=sys.stderr)
    for r in rows:
        shapes = ", ".join(f"{o['name']} {'x'.join(str(d) for d in o['shape'])} {o['dtype']}" for o in r["outputs"])
        print(f"| {r['model']} | {shapes} | {r['bytes_per_frame']:,} ({r['bytes_per_frame'] / 2**20:.1f} MiB) |",
              file=sys.stderr)


if __name__ == "__main__":
    main()
