"""What the engine builder needs to know about an ONNX file, read from the file itself.

Precision comes from the ONNX: the ``bisenet_deploy.precision`` metadata entry when the
file has one, otherwise from the graph (Q/DQ nodes mean int8, float16 tensors mean fp16).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, UserError
from ..fileio import sha256_file
from ..runtime.onnx_metadata import spec_from_metadata
from ..spec import CALIBRATION_KEY, PRECISION_KEY, ModelSpec

PRECISIONS = ("fp32", "fp16", "int8", "mixed")


@dataclass
class OnnxFacts:
    path: Path
    sha256: str
    spec: ModelSpec | None
    precision: str
    precision_source: str  # "metadata" or "graph"
    calibration: Any = None
    opset: int = -1
    inputs: list[tuple[str, tuple[int | None, ...]]] = field(default_factory=list)


def _graph_precision(graph: Any) -> str:
    from onnx import TensorProto

    ops = {n.op_type for n in graph.node}
    half = any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)
        for n in graph.node
    )
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return "mixed" if half else "int8"
    return "fp16" if half else "fp32"


def read_onnx_facts(path: str | Path) -> OnnxFacts:
    """Spec, precision, calibration provenance and inputs of an ONNX model."""
    try:
        import onnx
    except ImportError:
        raise UserError("reading ONNX models needs the onnx package: pip install 'bisenet-deploy[export]'") from None
    path = Path(path)
    from .artifacts import what_is_wrong_with

    problem = what_is_wrong_with(path, "ONNX model")  # a folder or a pipe is not "not found"
    if problem:
        raise ArtifactError(problem)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ArtifactError(f"'{path}' is not an ONNX model ({type(exc).__name__}: {str(exc).strip()[:120]})") from None
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [
        (i.name, tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                       for d in i.type.tensor_type.shape.dim))
        for i in proto.graph.input
        if i.name not in initializers
    ]
    if not proto.graph.node or not inputs:
        raise ArtifactError(f"'{path}' is not an ONNX model with a graph (no nodes or no inputs)")
    meta = {p.key: p.value for p in proto.metadata_props}
    spec = spec_from_metadata(meta, path)
    precision, source = meta.get(PRECISION_KEY), "metadata"
    if precision is None:
        precision, source = _graph_precision(proto.graph), "graph"
    if precision not in PRECISIONS:
        raise ArtifactError(f"'{path}' records precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    calibration: Any = meta.get(CALIBRATION_KEY)
    if calibration is not None:
        try:
            calibration = json.loads(calibration)
        except json.JSONDecodeError:
            pass  # keep the raw text: it is provenance, not something we interpret
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)
    return OnnxFacts(path, sha256_file(path), spec, precision, source, calibration, opset, inputs)
