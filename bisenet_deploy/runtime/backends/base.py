"""The one backend interface (after Polygraphy's runners, not its code).

A backend is constructed from an artifact path and options, exposes its input and output
tensors and the ModelSpec the artifact carries, and runs ``infer(batch) -> output`` on host
arrays. Lifecycle goes through a context manager (or ``close()``). Segmenter and the
benchmark only ever talk to this interface.

As in Polygraphy's ``BaseRunner``, the public ``infer()`` lives here: it checks that the
backend is still open and that the batch fits the model's input, then calls the subclass's
``infer_impl()``. So "called after close()" or a wrong dtype is the same clear error for every
backend, and a new backend implements only its own call.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ClosedError, InputError
from ...spec import ModelSpec


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (``None`` for a dynamic axis) and numpy dtype of one model tensor."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {dims} {np.dtype(self.dtype).name}"


def check_input(info: TensorInfo, batch: Any) -> None:
    """Clear error for a batch whose dtype, rank or fixed dimensions do not fit the model."""
    if batch is None:
        raise InputError(f"model input '{info.name}' takes an array of shape {info}, got None")
    if not hasattr(batch, "shape"):
        raise InputError(f"model input '{info.name}' takes an array of shape {info}, got {type(batch).__name__}")
    shape = tuple(batch.shape)
    dtype = getattr(batch, "dtype", None)
    try:
        given = None if dtype is None else np.dtype(str(dtype).replace("torch.", ""))
    except TypeError:
        given = "unknown"
    if given is not None and given != info.dtype:
        raise InputError(f"model input '{info.name}' takes {info.dtype.name}, got {dtype}")
    if len(shape) != len(info.shape) or any(d is not None and d != s for d, s in zip(info.shape, shape)):
        raise InputError(f"model input '{info.name}' takes shape {info}, got {'x'.join(map(str, shape))}")


class Backend(abc.ABC):
    """Runs one single-input, single-output segmentation artifact.

    Attributes set by implementations:
        name: short backend name (``onnxruntime``, ``tensorrt``, ``torch``).
        path: the artifact.
        spec: the ModelSpec from the artifact's metadata (``None`` if it has none).
        device: where compute happens, e.g. ``cpu`` or ``cuda:0``.
        precision: ``fp32``, ``fp16``, ``int8`` or ``mixed`` as recorded in the artifact.
        thread_safe: whether ``infer`` may be called from several threads at once.
        last_stage_times: seconds spent per stage in the last ``infer`` (keys among
            ``h2d``, ``compute``, ``d2h``) where the backend can tell them apart.
    """

    name: str = "backend"
    thread_safe: bool = False
    #: ModelSpec fields the backend compiled into its graph (Segmenter refuses overrides of them)
    fixed_spec_fields: tuple[str, ...] = ()

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.spec: ModelSpec | None = None
        self.device = "cpu"
        self.precision = "fp32"
        self.last_stage_times: dict[str, float] = {}
        self.choice: dict[str, Any] | None = None  # how backend="auto" chose this backend
        self._closed = False

    # A backend sets self._inputs / self._outputs when it opens its model, or overrides these.
    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def infer(self, batch: Any) -> np.ndarray:
        """Run the model on one input batch and return its (single) output on the host."""
        self.ensure_open()
        self.check_batch(batch)
        return self.infer_impl(batch)

    def check_batch(self, batch: Any) -> None:
        """Refuse a batch that does not fit the input (dtype, rank, fixed dimensions).
        Backends that take objects without ``shape`` (e.g. DLPack capsules) check them in
        ``infer_impl`` instead."""
        check_input(self.inputs[0], batch)

    @abc.abstractmethod
    def infer_impl(self, batch: Any) -> np.ndarray:
        """The backend's own call on a batch ``infer`` has already checked."""

    def logits_backend(self) -> Backend | None:
        """A backend on the same artifact that returns class scores: this one when its output
        is logits; None when the artifact itself computes labels (an ``--argmax`` export). A
        backend that compiles an argmax of its own choosing (OpenVINO's in-graph
        postprocessing) returns a variant without it, so scores never depend on that choice."""
        if self.spec is not None and self.spec.output_kind != "logits":
            return None
        return self

    @property
    def closed(self) -> bool:
        return self._closed

    def ensure_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the {self.name} backend for '{self.path.name}' is closed; open the model again")

    def describe(self) -> dict[str, Any]:
        """Facts for reports: backend, device, precision, tensors and options."""
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "inputs": [str(t) for t in self.inputs],
            "outputs": [str(t) for t in self.outputs],
        }

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name} on {self.device}>"
