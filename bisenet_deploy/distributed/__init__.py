"""Segmentation at fleet scale on Ray Data: ``bisenet-infer --ray`` and ``segment()``.

Built on the runtime and on ``jobs`` (the same plan, output names, outputs and summary as a
local run), never the other way round. ``ray`` is imported only when a job runs.
"""

from .ray_segment import RayOptions, segment

__all__ = ["RayOptions", "segment"]
