"""PyTorch -> ONNX: one self-contained, simplified, checked file with the ModelSpec inside.

We use the TorchScript-based exporter (``dynamo=False``) at opset 17 by default: TensorRT
8.x (JetPack 6.0) parses at most opset 17, and the dynamo exporter may raise the opset and
write external data files. The opset actually written is checked.

Optional graph extensions (``DeployWrapper``):

* ``fuse_preprocess``: the graph takes uint8 NHWC frames and does color order, scaling,
  normalization and layout itself (the host only resizes).
* ``argmax``: the graph ends in ArgMax (or a threshold for binary models) and returns int32
  labels (N, H, W), so a robot never copies C float maps off the GPU.

Low-resolution outputs (the default): every supported head computes class scores at 1/8 of
the input and upsamples them bilinearly; the graph ends before that upsample (64x fewer
score bytes per frame, and no full-size Resize) and the ModelSpec records the head's rule
(``spec.upsample``), from which the runtime's exact label stage (``runtime/upsampling.py``)
gives the labels of the full-size result. ``full_size_output`` keeps the family's own
graph (for consumers outside this toolkit); ``argmax`` implies it, since in-graph labels
must be full size and a Resize + ArgMax is what the full graph computes.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import ExportError
from ..spec import METADATA_KEY, PRECISION_KEY, VERSIONS_KEY, ModelSpec, Upsample
from ..versions import tool_versions
from .metadata import opset_of, read_metadata, set_metadata  # noqa: F401 - re-exported

INPUT_NAME = "input"
LOGITS_NAME = "logits"
LABELS_NAME = "labels"
DEFAULT_OPSET = 17
_MAX_OPSET = 21


class DeployWrapper(nn.Module):
    """The exported graph: optional in-graph preprocessing and argmax around the network."""

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model
        self.low_resolution = spec.upsample is not None
        self.fuse_preprocess = spec.input_layout == "NHWC_UINT8"
        self.argmax = spec.output_kind == "labels"
        self.binary = spec.is_binary
        self.threshold = float(spec.binary_threshold)
        std = torch.tensor(spec.std, dtype=torch.float64)
        # normalized = pixel * a + b, in network channel order (same as processing._affine).
        self.register_buffer("a", (spec.scale / std).float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            "b", (-torch.tensor(spec.mean, dtype=torch.float64) / std).float().view(1, 3, 1, 1), persistent=False
        )
        # Frames arrive in frame_color_order; the network wants color_order.
        swap = spec.frame_color_order != spec.color_order
        self.register_buffer("channels", torch.tensor([2, 1, 0] if swap else [0, 1, 2]), persistent=False)
        self.swap = swap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuse_preprocess:
            x = x.float()
            if self.swap:
                x = torch.index_select(x, 3, self.channels)
            x = x.permute(0, 3, 1, 2) * self.a + self.b
        logits = self.model.low_resolution(x) if self.low_resolution else self.model(x)
        if not self.argmax:
            return logits
        if self.binary:
            return (logits[:, 0] > self.threshold).to(torch.int32)
        return torch.argmax(logits, dim=1).to(torch.int32)


@dataclass(frozen=True)
class ExportOptions:
    """How to export.

    Attributes:
        size: network input (H, W).
        batch: batch size of the example input (and of the graph unless batch is dynamic).
        dynamic: axes left dynamic, among ``batch``, ``height``, ``width``.
        opset: ONNX opset (17 by default for TensorRT 8.6 / JetPack 6.0).
        argmax: end the graph in ArgMax -> int32 labels.
        fuse_preprocess: take uint8 NHWC frames in ``frame_color_order``.
        frame_color_order: channel order of the frames a fused graph takes.
        simplify: run onnxslim after export.
        full_size_output: keep the head's upsample in the graph (scores at the input size)
            instead of ending at the network's output stride (the default, where the
            family records its upsampling rule; ``argmax`` implies full size).
    """

    size: tuple[int, int] = (512, 1024)
    batch: int = 1
    dynamic: tuple[str, ...] = ()
    opset: int = DEFAULT_OPSET
    argmax: bool = False
    fuse_preprocess: bool = False
    frame_color_order: str = "BGR"
    simplify: bool = True
    full_size_output: bool = False

    def artifact_spec(self, spec: ModelSpec, rule: Upsample | None = None) -> ModelSpec:
        """The spec of the exported artifact; ``rule``: the model's ``upsample_rule`` (None:
        the family has no bilinear head to stop before)."""
        low = rule is not None and not self.full_size_output and not self.argmax
        if low:
            spec = spec.replace(upsample=rule, output_stride=spec.output_stride * rule.factor)
        if rule is not None and rule.scores == "probabilities" and not self.argmax:
            spec = spec.replace(output_scores="probabilities")  # either form: the scores are probabilities
        return spec.replace(
            input_size=tuple(self.size),
            dynamic_axes=tuple(self.dynamic),
            input_layout="NHWC_UINT8" if self.fuse_preprocess else "NCHW",
            frame_color_order=self.frame_color_order,
            output_kind="labels" if self.argmax else "logits",
        )


@dataclass
class ExportResult:
    path: Path
    spec: ModelSpec
    notes: list[str] = field(default_factory=list)


def example_input(spec: ModelSpec, batch: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
    h, w = size or spec.input_size
    if spec.input_layout == "NHWC_UINT8":
        return torch.zeros((batch, h, w, 3), dtype=torch.uint8)
    return torch.zeros((batch, 3, h, w), dtype=torch.float32)


def _dynamic_axes(spec: ModelSpec) -> dict[str, dict[int, str]] | None:
    if not spec.dynamic_axes:
        return None
    nhwc = spec.input_layout == "NHWC_UINT8"
    in_axes = {"batch": 0, "height": 1 if nhwc else 2, "width": 2 if nhwc else 3}
    out_axes = {"batch": 0, "height": 1 if spec.output_kind == "labels" else 2}
    out_axes["width"] = out_axes["height"] + 1
    out_name = LABELS_NAME if spec.output_kind == "labels" else LOGITS_NAME
    # a low-resolution output's sides are not the input's: their own symbols
    out_dim = {a: (f"{a}_out" if spec.upsample is not None and a != "batch" else a) for a in spec.dynamic_axes}
    return {
        INPUT_NAME: {in_axes[a]: a for a in spec.dynamic_axes},
        out_name: {out_axes[a]: out_dim[a] for a in spec.dynamic_axes},
    }


def export_onnx(model: nn.Module, spec: ModelSpec, output: str | Path, options: ExportOptions) -> ExportResult:
    """Export ``model`` (eval mode) to ``output``; returns the artifact's spec.

    ``output`` is written directly; callers wanting atomicity pass a temporary path (see
    ``pipeline.export_checkpoint``).
    """
    import onnx

    if not 7 <= options.opset <= _MAX_OPSET:
        raise ExportError(f"opset {options.opset} is not supported; use 11..{_MAX_OPSET} (17 for TensorRT 8.6)")
    if options.fuse_preprocess and options.frame_color_order not in ("BGR", "RGB"):
        raise ExportError(f"frame color order must be BGR or RGB, got {options.frame_color_order!r}")
    if not options.fuse_preprocess and options.frame_color_order != "BGR":
        # the runtime's host preprocessing takes BGR frames: a spec saying otherwise would be ignored
        raise ExportError("frame_color_order applies to a graph with fused preprocessing (fuse_preprocess=True); "
                          "without it frames are BGR")
    art_spec = options.artifact_spec(spec, getattr(model, "upsample_rule", None))
    wrapper = DeployWrapper(model, art_spec).eval()
    dummy = example_input(art_spec, options.batch)
    out_name = LABELS_NAME if art_spec.output_kind == "labels" else LOGITS_NAME
    notes: list[str] = []
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (dummy,),
                buffer,
                dynamo=False,
                opset_version=options.opset,
                input_names=[INPUT_NAME],
                output_names=[out_name],
                dynamic_axes=_dynamic_axes(art_spec),
                do_constant_folding=True,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"ONNX export failed: {str(exc).strip().splitlines()[0]}") from exc
    proto = onnx.load_from_string(buffer.getvalue())

    if options.simplify:
        proto, note = _simplify(proto)
        notes.append(note)

    opset = opset_of(proto)
    if opset != options.opset:
        raise ExportError(f"exported graph has opset {opset}, expected {options.opset}")
    set_metadata(
        proto,
        {
            METADATA_KEY: art_spec.to_json(),
            PRECISION_KEY: "fp32",
            VERSIONS_KEY: json.dumps(tool_versions("torch", "torchvision", "onnx", "onnxslim"), sort_keys=True),
        },
    )
    proto.producer_name = "bisenet-deploy"
    # torch.onnx leaves its own version here; torch's version is in the VERSIONS_KEY metadata.
    proto.producer_version = __version__
    proto.doc_string = f"BiSeNet ({art_spec.arch}, {art_spec.backbone}, {art_spec.num_classes} classes)"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"exported ONNX fails onnx.checker: {str(exc).strip().splitlines()[0]}") from exc
    if proto.ByteSize() >= 2**31:
        raise ExportError("model is larger than 2 GB and cannot be stored in one ONNX file")
    onnx.save_model(proto, str(output))
    return ExportResult(path=Path(output), spec=art_spec, notes=notes)


def _simplify(proto: Any) -> tuple[Any, str]:
    """Constant-fold and simplify with onnxslim; keep the original if it is not installed."""
    try:
        import onnxslim
    except ImportError:
        return proto, "onnxslim not installed: graph not simplified (pip install onnxslim)"
    before = len(proto.graph.node)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        slim = onnxslim.slim(proto)
    after = len(slim.graph.node)
    return slim, f"onnxslim: {before} -> {after} nodes"
