"""ModelSpec: everything a runtime needs to know about a model, carried by the artifact.

The spec travels from the checkpoint loader through ONNX ``metadata_props`` and the
TensorRT sidecar JSON, so ``Segmenter(path)`` needs no configuration. It is a small
frozen dataclass with a lossless JSON round-trip; this module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

#: Keys of the provenance stored in ONNX metadata_props (and mirrored in engine sidecars).
METADATA_KEY = "bisenet_deploy.spec"
PRECISION_KEY = "bisenet_deploy.precision"
VERSIONS_KEY = "bisenet_deploy.versions"
CALIBRATION_KEY = "bisenet_deploy.calibration"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DYNAMIC_AXES = ("batch", "height", "width")
_INPUT_LAYOUTS = ("NCHW", "NHWC_UINT8")
_OUTPUT_KINDS = ("logits", "labels")
_OUTPUT_SCORES = ("logits", "probabilities")
_COLOR_ORDERS = ("RGB", "BGR")
_FLOAT32_MAX = 3.4028234663852886e38


class SpecError(ValueError):
    """A ModelSpec that is inconsistent or cannot be parsed."""


def _integer(name: str, value: Any) -> int:
    """``value`` as an int, or a SpecError naming the field: JSON ``"4"``, ``4.5`` and
    ``true`` are not class counts (bool is an int subclass, so it is refused by name)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _finite(name: str, value: Any) -> float:
    """``value`` as a finite float, or a SpecError naming the field: NaN or infinite
    normalization turns every mask into garbage without any error downstream."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise SpecError(f"{name} must be a finite number, got {value!r}")
    return number


def _sequence(name: str, value: Any) -> tuple:
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
        raise SpecError(f"{name} must be a list, got {value!r}")
    return tuple(value)


_UPSAMPLE_TARGETS = ("input", "factor")
_UPSAMPLE_COORDINATES = ("sizes", "factor")
_UPSAMPLE_THEN = ("", "log_softmax")
_UPSAMPLE_SCORES = _OUTPUT_SCORES


@dataclass(frozen=True)
class Upsample:
    """How the network's head turns its low-resolution scores into full-size ones, recorded
    when the artifact ends before that step (``bisenet-export`` default), so any consumer
    reproduces the family's full-resolution result exactly.

    Attributes:
        mode: ``bilinear`` (every supported head).
        align_corners: PyTorch's ``align_corners`` of the head's ``F.interpolate``.
        target: ``input`` (resized to the network input's H x W) or ``factor`` (to the
            low-resolution size times ``factor``: TorchSeg's head).
        coordinates: the source-coordinate scale: ``sizes`` (in / out, as ``F.interpolate``
            with ``size=``) or ``factor`` (1 / factor, as with ``scale_factor=``).
        factor: the head's nominal upsampling factor (the output stride, e.g. 8).
        then: what the head applies after the upsample that changes the values (not the
            labels): ``log_softmax`` or nothing. A 1x1 convolution after the upsample is
            moved before it in the export (bilinear weights sum to 1, so they commute).
        scores: what the low-resolution output holds: ``logits`` or ``probabilities``
            (TorchSeg's speed heads interpolate ``exp(log_softmax)``).
    """

    mode: str = "bilinear"
    align_corners: bool = False
    target: str = "input"
    coordinates: str = "sizes"
    factor: int = 8
    then: str = ""
    scores: str = "logits"

    def __post_init__(self) -> None:
        object.__setattr__(self, "align_corners", bool(self.align_corners))
        object.__setattr__(self, "factor", int(self.factor))
        if self.mode != "bilinear":
            raise SpecError(f"upsample mode must be 'bilinear', got {self.mode!r}")
        for name, allowed in (("target", _UPSAMPLE_TARGETS), ("coordinates", _UPSAMPLE_COORDINATES),
                              ("then", _UPSAMPLE_THEN), ("scores", _UPSAMPLE_SCORES)):
            if getattr(self, name) not in allowed:
                raise SpecError(f"upsample {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.factor < 1:
            raise SpecError(f"upsample factor must be >= 1, got {self.factor}")

    def output_size(self, low_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[int, int]:
        """Full-resolution (H, W) of a ``low_hw`` score map computed from an ``input_hw`` input."""
        if self.target == "input":
            return int(input_hw[0]), int(input_hw[1])
        return int(low_hw[0]) * self.factor, int(low_hw[1]) * self.factor

    @classmethod
    def from_value(cls, value: Any) -> Upsample | None:
        if value is None or isinstance(value, Upsample):
            return value
        if not isinstance(value, dict):
            raise SpecError(f"upsample must be an object, got {type(value).__name__}")
        unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SpecError(f"unknown upsample fields {sorted(unknown)}")
        return cls(**value)


@dataclass(frozen=True)
class ModelSpec:
    """Description of a segmentation model's interface and provenance.

    Attributes:
        arch: model family key (see ``bisenet_deploy.model.families``), e.g. ``bisenet_v1``.
        backbone: context-path backbone, e.g. ``resnet18``.
        variant: architecture variant within the family that changes the forward pass
            (e.g. ``paper`` or ``seed`` feature-fusion module); recorded so an export
            reproduces exactly what the training code computed.
        num_classes: output channels; 1 means a binary mask (``logit > binary_threshold``).
        class_names: optional names, one per class.
        input_size: network input (H, W) the artifact was exported for.
        dynamic_axes: which of ``batch``, ``height``, ``width`` the artifact leaves dynamic.
        color_order: channel order the network expects (frames arrive BGR from OpenCV).
        mean, std: per-channel normalization applied after ``scale``, in network color order.
        scale: multiplier applied to uint8 pixels before normalization (usually 1/255).
        input_layout: ``NCHW`` (float32, normalized) or ``NHWC_UINT8`` (raw frames;
            color order, scale and normalization happen inside the graph).
        frame_color_order: channel order of the uint8 frames an ``NHWC_UINT8`` graph takes
            (BGR as OpenCV delivers them, unless exported otherwise).
        output_kind: ``logits`` (N, C, H, W) float or ``labels`` (N, H, W) int32 from an
            in-graph argmax / threshold.
        output_scores: what the class scores hold at full size: ``logits`` (any monotone
            scores: logits, log-probabilities) or ``probabilities`` (a head that resizes its
            softmax, TorchSeg's ``.speed``; kept as they are by ``probabilities()``).
        binary_threshold: logit threshold for ``num_classes == 1``.
        size_divisor: input sides must be multiples of this (1: any size works).
        output_stride: the output is this many times smaller than the input (1: the
            output has the input's H x W; 8: e.g. TorchSeg's ``.speed`` heads kept native,
            or a low-resolution export).
        upsample: how the family's head upsamples its low-resolution scores (``Upsample``),
            set when the artifact's output stops before that step; None: the output is
            final (full size, or native scores whose labels are upscaled by nearest
            neighbour). Specs written before this field load with None, as before.
        checkpoint_sha256: hash of the source checkpoint (empty when unknown).
        extra: free-form provenance (detection notes, training metadata); JSON values only.
    """

    arch: str = "bisenet_v1"
    backbone: str = "resnet18"
    variant: str = "paper"
    num_classes: int = 19
    class_names: tuple[str, ...] = ()
    input_size: tuple[int, int] = (512, 1024)
    dynamic_axes: tuple[str, ...] = ()
    color_order: str = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    input_layout: str = "NCHW"
    frame_color_order: str = "BGR"
    output_kind: str = "logits"
    output_scores: str = "logits"
    binary_threshold: float = 0.0
    size_divisor: int = 1
    output_stride: int = 1
    upsample: Upsample | None = None
    checkpoint_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Normalize sequences so specs built from JSON lists compare equal to literals; a value
        # of the wrong type (a user's --spec) is one SpecError naming its field, not a TypeError.
        names = _sequence("class_names", self.class_names)
        if not all(isinstance(n, str) for n in names):
            raise SpecError(f"class_names must be strings, got {list(names)!r}")
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "input_size",
                           tuple(_integer("input_size", v) for v in _sequence("input_size", self.input_size)))
        object.__setattr__(self, "dynamic_axes", _sequence("dynamic_axes", self.dynamic_axes))
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(_finite(name, v) for v in _sequence(name, getattr(self, name))))
        for name in ("scale", "binary_threshold"):
            object.__setattr__(self, name, _finite(name, getattr(self, name)))
        for name in ("num_classes", "size_divisor", "output_stride"):
            object.__setattr__(self, name, _integer(name, getattr(self, name)))
        object.__setattr__(self, "upsample", Upsample.from_value(self.upsample))
        self.validate()

    def validate(self) -> None:
        if self.num_classes < 1:
            raise SpecError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise SpecError(
                f"{len(self.class_names)} class names given for {self.num_classes} classes"
            )
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise SpecError(f"input_size must be (H, W) with positive sides, got {self.input_size}")
        unknown = set(self.dynamic_axes) - set(_DYNAMIC_AXES)
        if unknown:
            raise SpecError(f"unknown dynamic axes {sorted(unknown)}; choose from {_DYNAMIC_AXES}")
        for name in ("color_order", "frame_color_order"):
            if getattr(self, name) not in _COLOR_ORDERS:
                raise SpecError(f"{name} must be one of {_COLOR_ORDERS}, got {getattr(self, name)!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise SpecError("mean and std need three values each")
        if any(s == 0 for s in self.std):
            raise SpecError("std values must be non-zero")
        if self.scale <= 0:
            raise SpecError(f"scale must be > 0, got {self.scale}")
        # Preprocessing computes pixel * scale / std - mean / std in float32: a std so small
        # (1e-300) that this overflows float32 is as unusable as zero.
        for m, s in zip(self.mean, self.std):
            if max(abs(255 * self.scale / s), abs(m / s)) * 2 > _FLOAT32_MAX:
                raise SpecError(f"std {s!r} is too small: the normalized pixels overflow float32")
        if self.input_layout not in _INPUT_LAYOUTS:
            raise SpecError(f"input_layout must be one of {_INPUT_LAYOUTS}, got {self.input_layout!r}")
        if self.output_scores not in _OUTPUT_SCORES:
            raise SpecError(f"output_scores must be one of {_OUTPUT_SCORES}, got {self.output_scores!r}")
        if self.output_kind not in _OUTPUT_KINDS:
            raise SpecError(f"output_kind must be one of {_OUTPUT_KINDS}, got {self.output_kind!r}")
        if self.size_divisor < 1:
            raise SpecError(f"size_divisor must be >= 1, got {self.size_divisor}")
        if self.output_stride < 1:
            raise SpecError(f"output_stride must be >= 1, got {self.output_stride}")
        if self.upsample is not None and self.output_kind != "logits":
            raise SpecError("an upsample rule needs class scores out (output_kind 'logits'), not in-graph labels")

    @property
    def scores_are_probabilities(self) -> bool:
        """The class scores (upsampled by ``upsample`` where the artifact is low-resolution)
        are probabilities already: no softmax on top. Exports record it in ``output_scores``;
        low-resolution files written before that field carry it in ``upsample.scores`` only."""
        return self.output_scores == "probabilities" or (self.upsample is not None
                                                         and self.upsample.scores == "probabilities")

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 1

    @property
    def height(self) -> int:
        return self.input_size[0]

    @property
    def width(self) -> int:
        return self.input_size[1]

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # a nested Upsample becomes a plain dict
        for key in ("class_names", "input_size", "dynamic_axes", "mean", "std"):
            d[key] = list(d[key])
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            # A newer writer may add fields; keep them visible instead of dropping silently.
            data = {k: v for k, v in data.items() if k in names}
            extra = dict(data.get("extra") or {})
            extra["unknown_spec_fields"] = sorted(unknown)
            data["extra"] = extra
        try:
            return cls(**data)
        except TypeError as exc:
            raise SpecError(f"malformed ModelSpec: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"ModelSpec is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SpecError("ModelSpec JSON must be an object")
        return cls.from_dict(data)
