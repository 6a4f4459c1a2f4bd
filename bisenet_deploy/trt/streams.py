"""TensorRT for the streaming runtime: one execution context per CUDA stream (placeholder
until the pool lands: None means "use the Segmenter's serialized call")."""

from __future__ import annotations

from typing import Any


def context_pool(segmenter: Any, parallel: int) -> Any | None:
    return None
