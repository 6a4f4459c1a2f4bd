"""Read an ONNX file's ``metadata_props`` without the ``onnx`` package.

Backends other than onnxruntime (OpenVINO reads ONNX itself) still need the ModelSpec the
file carries, and a robot should not install ``onnx`` for that. ``metadata_props`` is field
14 of the top-level ``ModelProto`` message; every other top-level field (the graph, tens of
megabytes) is skipped by its length without being read.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from ..errors import ArtifactError
from ..spec import METADATA_KEY, ModelSpec, SpecError

_METADATA_FIELD = 14


def _varint(f: BinaryIO) -> int | None:
    shift, value = 0, 0
    while True:
        byte = f.read(1)
        if not byte:
            return None if shift == 0 else _bad()
        b = byte[0]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7
        if shift > 63:
            _bad()


def _bad() -> int:
    raise ValueError("not a protobuf message")


def _entry(data: bytes) -> tuple[str, str]:
    """One ``StringStringEntryProto``: key (field 1) and value (field 2)."""
    key = value = ""
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x07 != 2:
            raise ValueError("unexpected metadata entry")
        length, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        text = data[i : i + length].decode("utf-8")
        i += length
        if tag >> 3 == 1:
            key = text
        elif tag >> 3 == 2:
            value = text
    return key, value


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """``{key: value}`` of the file's ``metadata_props`` (empty when it has none)."""
    path = Path(path)
    out: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            while True:
                tag = _varint(f)
                if tag is None:
                    return out
                field, wire = tag >> 3, tag & 0x07
                if wire == 0:
                    _varint(f)
                elif wire == 1:
                    f.seek(8, 1)
                elif wire == 5:
                    f.seek(4, 1)
                elif wire == 2:
                    length = _varint(f)
                    if length is None or f.tell() + length > size:
                        _bad()
                    if field == _METADATA_FIELD:
                        key, value = _entry(f.read(length))
                        out[key] = value
                    else:
                        f.seek(length, 1)
                else:
                    _bad()
    except (ValueError, IndexError, UnicodeDecodeError, OSError) as exc:
        raise ArtifactError(f"'{path}' is not a readable ONNX model ({exc})") from None


def spec_from_metadata(meta: dict[str, str], path: str | Path) -> ModelSpec | None:
    """The ModelSpec a file's metadata carries (None when it carries none); an unreadable
    one is an ArtifactError naming the file."""
    text = meta.get(METADATA_KEY)
    if text is None:
        return None
    try:
        return ModelSpec.from_json(text)
    except SpecError as exc:
        raise ArtifactError(f"'{path}' carries an unreadable ModelSpec: {exc}") from None
