"""PyTorch backend: the reference. torch is imported when the backend is opened, not before.

Runs the checkpoint through ``model.checkpoint.load_checkpoint`` (safe loading, family
detection), so it computes exactly what the export was verified against. On CUDA it can run
in FP16 and/or channels_last, replay a captured CUDA graph, and times host-to-device, compute and device-to-host with CUDA
events.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserError
from ...spec import ModelSpec
from .base import Backend, TensorInfo


class TorchBackend(Backend):
    """Run a PyTorch checkpoint (or an in-memory module via ``from_module``).

    Args:
        path: checkpoint (.pth/.pt).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        fp16: run in half precision (CUDA only).
        bf16: bfloat16 autocast (on a CPU with AVX-512-BF16 or AMX the fastest PyTorch gets;
            on CUDA too); weights stay FP32, outputs come back as FP32.
        channels_last: NHWC memory format (faster convolutions on recent GPUs).
        cuda_graph: capture the forward pass once per input shape and replay it (CUDA only):
            removes the per-layer kernel launch cost that dominates small inputs.
        threads: intra-op threads on the CPU (0: torch's default).
        arch, trust: passed to ``load_checkpoint``.
    """

    name = "torch"

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        fp16: bool = False,
        bf16: bool = False,
        channels_last: bool = False,
        threads: int = 0,
        cuda_graph: bool = False,
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
        if cuda_graph and not device.startswith("cuda"):
            raise UserError("cuda_graph needs a CUDA device")
        if fp16 and bf16:
            raise UserError("choose fp16 or bf16, not both")
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
        self.precision = "fp16" if fp16 else "bf16" if bf16 else "fp32"
        self._autocast = bf16
        self.options = {"fp16": fp16, "bf16": bf16, "channels_last": channels_last, "cuda_graph": cuda_graph,
                        "threads": threads}
        self._cuda = self._device.type == "cuda"
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] | None = {} if cuda_graph else None

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

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self._autocast):
            if not self._cuda:
                start = time.perf_counter()
                x = torch.from_numpy(batch)
                if self._memory_format is torch.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = self.model(x).float().contiguous().numpy()  # channels_last: NCHW for the argmax
                self.last_stage_times = {"compute": time.perf_counter() - start}
                return out
            graph = self._graph_for(tuple(batch.shape)) if self._graphs is not None else None
            events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            events[0].record()
            x = torch.from_numpy(batch).to(self._device, non_blocking=False)
            if graph is not None:
                graph[1].copy_(x)  # into the captured input (casts to its dtype and layout)
            else:
                x = x.to(dtype=self._dtype, memory_format=self._memory_format)
            events[1].record()
            if graph is not None:
                graph[0].replay()
                y = graph[2]
            else:
                y = self.model(x)
            events[2].record()
            out = y.float().cpu().numpy()
            events[3].record()
            events[3].synchronize()
            ms = [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(3)]
            self.last_stage_times = {"h2d": ms[0], "compute": ms[1], "d2h": ms[2]}
            return out

    def _graph_for(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        """(CUDAGraph, static input, static output) for one input shape, captured on first use
        after a few eager runs on a side stream (cuDNN picks its algorithms there)."""
        entry = self._graphs.get(shape)
        if entry is None:
            torch = self._torch
            static_in = torch.zeros(shape, device=self._device, dtype=self._dtype)
            static_in = static_in.contiguous(memory_format=self._memory_format)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
            entry = self._graphs[shape] = (graph, static_in, static_out)
        return entry

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(self.options)
        return info

    def close(self) -> None:
        self._graphs = None if self._graphs is None else {}
        self.model = None
        super().close()
