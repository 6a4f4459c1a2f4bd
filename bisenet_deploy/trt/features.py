"""Version-dependent decisions as plain functions of a TensorRT module's API surface.

Each function reads only which names the module (or one of its objects) has, never a
version string, so the same code picks the right calls on TensorRT 8.6 (JetPack 6.0),
10.x (JetPack 6.1/6.2, desktops), 11.x (JetPack 7, desktops) and TensorRT-RTX. The
tests run them against namespaces that list exactly what ``python/src/infer/pyCore.cpp``
and ``pyGraph.cpp`` bind at v8.6.1, v10.3.0 and v11.1 (``tests/trt_api_surfaces.py``), and
against the real ``tensorrt_rtx``: the 8.6 path is exercised in CI, not only refused.

What the binding sources say (read at those tags):

| name                                  | 8.6.1 | 10.3.0 | 11.1 | TensorRT-RTX 1.2+ |
|---------------------------------------|-------|--------|------|-------------------|
| NetworkDefinitionCreationFlag.EXPLICIT_BATCH | yes | yes (deprecated, no-op) | no | no |
| NetworkDefinitionCreationFlag.STRONGLY_TYPED | no  | yes    | yes  | yes               |
| BuilderFlag.FP16 / INT8               | yes   | yes    | no   | no                |
| BuilderFlag.OBEY_PRECISION_CONSTRAINTS| yes   | yes    | no   | no                |
| ILayer.precision / set_output_type    | yes   | yes    | no   | no                |
| BuilderFlag.REQUIRE_USER_ALLOCATION   | no    | no     | no   | yes               |
| IExecutionContext.execute_async_v3    | yes   | yes    | yes  | yes               |
| IExecutionContext.execute_async_v2    | yes   | no     | no   | no                |
| IExecutionContext.is_stream_capturable| no    | no     | no   | yes               |
| IRuntime.DLA_core (property)          | yes   | yes    | yes  | yes               |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UserError

#: builder flags that a weakly typed (TensorRT 8.6) network needs for each ONNX precision
PRECISION_FLAGS = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",), "mixed": ("FP16", "INT8")}


@dataclass(frozen=True)
class TypingPlan:
    """How a network gets its types.

    Attributes:
        network_flags: ``NetworkDefinitionCreationFlag`` names for ``create_network``.
        strongly_typed: every type comes from the ONNX (casts, Q/DQ); no precision flags.
        builder_flags: ``BuilderFlag`` names to set (precision, precision constraints).
        pin_fp32_layers: set ``precision``/``set_output_type`` to FP32 on the layers the
            ONNX computes in FP32 (needs ``OBEY_PRECISION_CONSTRAINTS`` to take effect).
    """

    network_flags: tuple[str, ...]
    strongly_typed: bool
    builder_flags: tuple[str, ...] = ()
    pin_fp32_layers: bool = False


def typing_plan(trt: Any, precision: str) -> TypingPlan:
    """The network typing for this TensorRT and an ONNX of ``precision``.

    Strongly typed where ``STRONGLY_TYPED`` exists (10.x, 11.x, RTX; in 11 it is the only
    mode and the flag is kept for compatibility). Where weak typing is gone too (no
    ``BuilderFlag.FP16``) networks are strongly typed by default. Otherwise (8.6) the
    network is weakly typed: the FP16/INT8 flags the ONNX implies, and, when FP16 is
    enabled, ``OBEY_PRECISION_CONSTRAINTS`` with the ONNX's FP32 layers pinned to FP32, as
    Polygraphy's ``CreateConfig(precision_constraints="obey")`` does; without the flag
    TensorRT 8.6 treats layer precisions as hints and may run those layers in FP16.
    """
    if precision not in PRECISION_FLAGS:
        raise UserError(f"unknown precision {precision!r} in the ONNX metadata; expected {', '.join(PRECISION_FLAGS)}")
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "STRONGLY_TYPED"):
        return TypingPlan(("STRONGLY_TYPED",), True)
    builder_flag = trt.BuilderFlag
    if not hasattr(builder_flag, "FP16"):
        return TypingPlan((), True)
    network_flags = ("EXPLICIT_BATCH",) if hasattr(creation, "EXPLICIT_BATCH") else ()
    names = PRECISION_FLAGS[precision]
    missing = [n for n in names if not hasattr(builder_flag, n)]
    if missing:
        raise UserError(f"this TensorRT has no {'/'.join(missing)} builder flag for a weakly typed {precision} build")
    if "FP16" not in names:
        # Without FP16 enabled nothing runs in FP16: FP32 layers stay FP32 by themselves,
        # and INT8 is placed by the Q/DQ nodes (explicit quantization).
        return TypingPlan(network_flags, False, names)
    if hasattr(builder_flag, "OBEY_PRECISION_CONSTRAINTS") and layer_precision_api(trt):
        return TypingPlan(network_flags, False, (*names, "OBEY_PRECISION_CONSTRAINTS"), True)
    raise UserError(
        "this TensorRT cannot keep an FP16 ONNX's FP32 layers in FP32 (no OBEY_PRECISION_CONSTRAINTS); "
        "use TensorRT 8.6 or later"
    )


def clears_tf32(trt: Any, precision: str, allow_tf32: bool = False) -> bool:
    """Whether to clear ``BuilderFlag.TF32`` for this build (``precision`` is the engine's).

    TF32 is on by default in every TensorRT that has the flag (8.6, 10.x, 11.x, RTX): on
    Ampere and later, FP32 convolutions and matrix products then run with a 10-bit mantissa.
    The builder never adds precision on its own, so the flag is cleared for every precision
    unless the user opts in (``--tf32``): an ``fp32`` engine computes in FP32 as its name and
    the ONNX say, and the FP32 layers of an fp16/int8/mixed engine (the precision step's
    overflow protection, ``--fp16-keep``) stay FP32 as the ONNX records them. ``--tf32``
    applies to the FP32 math of any engine, so several precisions built at once take it alike.
    """
    del precision  # the same rule for every precision: FP32 layers exist in all of them
    return not allow_tf32 and hasattr(trt.BuilderFlag, "TF32")


def layer_precision_api(trt: Any) -> bool:
    """Whether layers take a compute precision and output types (8.6, 10.x; gone in 11)."""
    layer = getattr(trt, "ILayer", None)
    return layer is not None and all(hasattr(layer, n) for n in ("precision", "set_output_type"))


def flag_bits(enum: Any, names: tuple[str, ...]) -> int:
    """``create_network`` takes a bit mask of ``1 << flag``."""
    bits = 0
    for name in names:
        bits |= 1 << int(getattr(enum, name))
    return bits


def capture_builder_flags(trt: Any) -> tuple[str, ...]:
    """Builder flags an engine needs so that its enqueue can be captured in a CUDA graph.

    TensorRT-RTX 1.2 added ``REQUIRE_USER_ALLOCATION`` ("required when using CUDA stream
    capture", its release notes): without it the runtime may allocate during enqueue. Full
    TensorRT captures without a flag (trtexec ``--useCudaGraph``).
    """
    return ("REQUIRE_USER_ALLOCATION",) if hasattr(trt.BuilderFlag, "REQUIRE_USER_ALLOCATION") else ()


def execute_api(context: Any) -> str:
    """``execute_async_v3`` (tensor addresses, 8.5+) or ``execute_async_v2`` (bindings)."""
    if hasattr(context, "execute_async_v3"):
        return "execute_async_v3"
    if hasattr(context, "execute_async_v2"):
        return "execute_async_v2"
    raise UserError("this TensorRT has neither execute_async_v3 nor execute_async_v2")


def can_check_capture(context: Any) -> bool:
    """TensorRT-RTX says up front whether a context can be stream-captured."""
    return hasattr(context, "is_stream_capturable")


def runtime_dla_core(runtime: Any, core: int | None) -> str | None:
    """Why the runtime cannot run an engine built for DLA ``core`` here, or None.

    trtexec sets ``IRuntime::setDLACore`` before deserializing (samples/common/sampleEngines.cpp);
    the Python binding exposes it as the ``DLA_core`` property in every version read. The
    caller sets it when this returns None.
    """
    if core is None:
        return None
    if not hasattr(runtime, "DLA_core"):
        return "this TensorRT's runtime cannot select a DLA core"
    cores = int(getattr(runtime, "num_DLA_cores", 0) or 0)
    if not 0 <= core < cores:
        return f"the engine runs on DLA core {core}, this machine has {cores} DLA core(s)"
    return None


def dla_note(package: str, version: str) -> str | None:
    """A known DLA gap of this TensorRT release, for messages when no DLA core is found.

    NVIDIA's TensorRT 11 documentation: DLA on Orin is unavailable in 11.0 to 11.3; it
    returns in 11.4.1 with JetPack 7.2.2, so 11.4.0 lacks it too: the comparison is on
    (minor, patch), not on the minor version alone. TensorRT-RTX has no DLA at all.
    """
    if package == "tensorrt_rtx":
        return "TensorRT-RTX has no DLA support"
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:3]]
    parts += [0] * (3 - len(parts))
    if parts[0] == 11 and (parts[1], parts[2]) < (4, 1):
        return f"TensorRT {version} has no DLA on Orin (11.0 to 11.4.0); use TensorRT 11.4.1+ with JetPack 7.2.2, or 10.x"
    return None


def dla_layers(report: Any) -> list[str]:
    """Names of the layers of an engine inspector report (``layer_report``) that run on DLA.

    TensorRT places each DLA subgraph in one engine layer whose type names DLA (its build
    log calls it ``[DlaLayer] {ForeignNode[...]}``); GPU ``ForeignNode`` layers (Myelin) do
    not count. A DLA build with GPU fallback may end up with none: that is what a DLA check
    must catch. Reads ``LayerType`` of a DETAILED report, or the name of a names-only one.
    """
    layers = report.get("Layers", []) if isinstance(report, dict) else []
    names = []
    for layer in layers:
        if isinstance(layer, dict):
            kind, name = str(layer.get("LayerType", "")), str(layer.get("Name", ""))
        else:
            kind, name = "", str(layer)
        if "dla" in kind.lower() or "[dlalayer]" in name.lower():
            names.append(name)
    return names


def pins_for_layers(layers: list[LayerFacts], precision: str) -> list[str]:
    """Names of the layers to pin to FP32 on a weakly typed FP16 build.

    A layer is pinned when every output is FP32 in the parsed network (so FP32 in the
    ONNX: the FP16 precision step's protected layers, ``--fp16-keep``) and it is a compute
    layer. Left alone: shape/constant/cast layers (their types are set by the parser),
    layers with non-float outputs, and layers next to Q/DQ (explicit quantization decides
    their precision; pinning them would stop the INT8 fusion).
    """
    if "FP16" not in PRECISION_FLAGS.get(precision, ()):
        return []
    skip = {"SHAPE", "CONSTANT", "IDENTITY", "CAST", "QUANTIZE", "DEQUANTIZE", "ASSERTION", "CONDITION",
            "CONDITIONAL_INPUT", "CONDITIONAL_OUTPUT", "TRIP_LIMIT", "ITERATOR", "RECURRENCE", "LOOP_OUTPUT"}
    return [
        layer.name
        for layer in layers
        if layer.type not in skip
        and layer.outputs
        and all(dtype == "FLOAT" for dtype in layer.outputs)
        and not layer.next_to_qdq
    ]


@dataclass(frozen=True)
class LayerFacts:
    """What ``pins_for_layers`` needs to know about one network layer."""

    name: str
    type: str  # LayerType member name
    outputs: tuple[str, ...]  # DataType member names of its outputs
    next_to_qdq: bool = False  # reads a DequantizeLayer output or feeds a QuantizeLayer
