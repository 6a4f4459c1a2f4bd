"""The Ray executor of ``jobs``: ``bisenet-infer --ray``. Built on the runtime and on ``jobs``
(the same job, items, rows and summary as a local run), never the other way round. ``ray`` is
imported only when a job runs."""

from .ray_segment import RayOptions, run

__all__ = ["RayOptions", "run"]
