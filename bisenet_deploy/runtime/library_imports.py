"""Importing onnxruntime and OpenVINO without their telemetry noise.

Both libraries persist a telemetry identifier under the user's home when first imported;
where that home is not writable (a service account, a read-only container) each prints its
own warnings (onnxruntime a C++ log line from ``import``, OpenVINO's telemetry package two or
three ``WARNING:root:`` lines) on top of our one "running without a cache" line. Nothing is
lost by dropping exactly those lines: the libraries carry on with an in-memory identifier.
Every import of these libraries in the runtime goes through here (the first one counts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from types import ModuleType

# onnxruntime 1.2x's line: "[W:onnxruntime:Default, telemetry_1ds.cc:613 operator()] Failed
# to persist telemetry device ID; using an in-memory identifier"
_ORT_TELEMETRY = (b"telemetry_1ds", b"telemetry device ID")


class _DropTelemetry(logging.Filter):
    """Drops the records of the ``openvino_telemetry`` package (it logs on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "openvino_telemetry" not in record.pathname


@contextlib.contextmanager
def _stderr_without(markers: tuple[bytes, ...]):
    """File descriptor 2 captured for the block (a C++ library writes there directly), then
    written back without the lines that contain one of ``markers``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield  # no real descriptor 2 (embedded interpreter): leave it alone
        return
    with tempfile.TemporaryFile() as captured:  # unlinked at once: never outlives the run
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True)
                    if not any(m in line for m in markers)]
            if kept:
                os.write(2, b"".join(kept))


@contextlib.contextmanager
def _root_logging_without_telemetry():
    root = logging.getLogger()
    drop = _DropTelemetry()
    # logging.warning() on a root logger without handlers installs a stderr handler for good
    # (basicConfig): a NullHandler for the import keeps the process's logging as it was
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder:
        root.addHandler(placeholder)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if placeholder:
            root.removeHandler(placeholder)


def import_onnxruntime() -> ModuleType:
    """``import onnxruntime`` (ImportError as usual), without its telemetry warning."""
    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    with _stderr_without(_ORT_TELEMETRY):
        import onnxruntime
    return onnxruntime


def import_openvino() -> ModuleType:
    """``import openvino`` (ImportError as usual), without its telemetry package's warnings."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    with _root_logging_without_telemetry():
        import openvino
    return openvino
