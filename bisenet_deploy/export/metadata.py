"""ONNX ``metadata_props`` and opset helpers that need only the ``onnx`` package (no torch).

The exporter, the precision passes (FP16 / INT8) and the runtime all read and write the
provenance stored here, and the precision passes must work on an ONNX file on a machine
without PyTorch.
"""

from __future__ import annotations

from typing import Any


def opset_of(proto: Any) -> int:
    """The default-domain opset a model declares (-1 when none)."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)


def set_metadata(proto: Any, entries: dict[str, str]) -> None:
    """Replace or add ``metadata_props`` entries."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in entries.items():
        if key in existing:
            existing[key].value = value
        else:
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value


def read_metadata(proto: Any) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def read_metadata_file(path: Any) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (weights are read too: onnx has no header-only load)."""
    import onnx

    return read_metadata(onnx.load(str(path), load_external_data=False))
