"""Runtime: ``Segmenter`` over onnxruntime, TensorRT and PyTorch backends.

Never imports torch at import time (robots do not carry torch): the torch backend imports it
only when a ``.pth`` model is opened.
"""

from .backends import Backend
from .choice import open_model as open_backend  # the factory with the policy: auto, defaults
from .processing import colorize, overlay, palette_for, replace_background
from .segmenter import Segmenter

__all__ = ["Backend", "Segmenter", "colorize", "open_backend", "overlay", "palette_for", "replace_background"]
