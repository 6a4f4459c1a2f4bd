"""PyTorch backend: the reference. torch is imported when the backend is opened, not before.

Runs the checkpoint through ``model.checkpoint.load_checkpoint`` (safe loading, family
detection), so it computes exactly what the export was verified against. On CUDA it can run
in FP16 and/or channels_last, and times host-to-device, compute and device-to-host with CUDA
events.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserError
from ...spec import ModelSpec
from .base import Backend, TensorInfo, check_input


class TorchBackend(Backend):
    """Run a PyTorch checkpoint (or an in-memory module via ``from_module``).

    Args:
        path: checkpoint (.pth/.pt).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        fp16: run in half precision (CUDA only).
        channels_last: NHWC memory format (faster convolutions on recent GPUs).
        threads: intra-op threads on the CPU (0: torch's default).
        arch, trust: passed to ``load_checkpoint``.
    """

    name = "torch"

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        fp16: bool = False,
        channels_last: bool = False,
        threads: int = 0,
        arch: str | None = None,
        trust: bool = False,
        _loaded: Any = None,
    ) -> None:
        super().__init__(path)
        import torch

        from ...model.checkpoint import load_checkpoint

        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("device 'cuda' asked for, but torch sees no CUDA GPU here")
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise UserError(f"unknown torch device {device!r}; choose auto, cpu or cuda[:N]")
        if fp16 and not device.startswith("cuda"):
            raise UserError("fp16 needs a CUDA device (CPU half-precision convolutions are slow and inexact)")
        if threads:
            torch.set_num_threads(int(threads))
        loaded = _loaded or load_checkpoint(self.path, arch=arch, trust=trust)
        self.spec: ModelSpec = loaded.spec
        self.notes = list(loaded.notes)
        self._device = torch.device(device)
        self.device = str(self._device)
        self._dtype = torch.float16 if fp16 else torch.float32
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = loaded.model.eval().to(self._device, dtype=self._dtype, memory_format=self._memory_format)
        self.precision = "fp16" if fp16 else "fp32"
        self.options = {"fp16": fp16, "channels_last": channels_last, "threads": threads}
        self._cuda = self._device.type == "cuda"

    @classmethod
    def from_module(cls, module: Any, spec: ModelSpec, name: str = "<module>", **options: Any) -> TorchBackend:
        """Wrap an in-memory nn.Module (eval mode) and its spec."""
        from ...model.checkpoint import LoadedCheckpoint
        from ...model.families import get_family

        loaded = LoadedCheckpoint(model=module, spec=spec, family=get_family(spec.arch))
        return cls(name, _loaded=loaded, **options)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo("input", (None, 3, None, None), np.dtype(np.float32))]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo("logits", (None, self.spec.num_classes, None, None), np.dtype(np.float32))]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        check_input(self.inputs[0], batch)
        torch = self._torch
        with torch.inference_mode():
            if not self._cuda:
                start = time.perf_counter()
                out = self.model(torch.from_numpy(batch)).numpy()
                self.last_stage_times = {"compute": time.perf_counter() - start}
                return out
            events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            events[0].record()
            x = torch.from_numpy(batch).to(self._device, non_blocking=False)
            x = x.to(dtype=self._dtype, memory_format=self._memory_format)
            events[1].record()
            y = self.model(x)
            events[2].record()
            out = y.float().cpu().numpy()
            events[3].record()
            events[3].synchronize()
            ms = [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(3)]
            self.last_stage_times = {"h2d": ms[0], "compute": ms[1], "d2h": ms[2]}
            return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(self.options)
        return info

    def close(self) -> None:
        self.model = None
        super().close()
