"""Optimization-profile shapes (min / opt / max) for engines with dynamic batch, height, width.

Defaults come from the ModelSpec: the export size is the optimum, half of it the minimum,
twice it the maximum; a dynamic batch runs from 1 (optimum) to 4. TensorRT reserves memory
for the maximum, so on a Jetson give tighter ``--max-shape`` values if memory is short.
"""

from __future__ import annotations

from ..errors import UserError
from ..spec import ModelSpec

Shape = tuple[int, ...]
DEFAULT_MAX_BATCH = 4
_STEP = 32  # BiSeNet's coarsest feature map is 1/32 of the input


def _axes(dims: tuple[int, ...], spec: ModelSpec | None) -> dict[str, int]:
    """Positions of batch, height and width in the input tensor."""
    nhwc = spec.input_layout == "NHWC_UINT8" if spec is not None else (len(dims) == 4 and dims[-1] == 3)
    return {"batch": 0, "height": 1, "width": 2} if nhwc else {"batch": 0, "height": 2, "width": 3}


def layout(dims: tuple[int, ...], spec: ModelSpec | None) -> str:
    """The input's layout as the shape options are written: ``NxCxHxW`` (float frames), or
    ``NxHxWxC`` (uint8 frames of a ``--fuse-preprocess`` export)."""
    if len(dims) != 4:
        return "x".join(f"d{i}" for i in range(len(dims)))
    return "NxHxWxC" if _axes(dims, spec)["height"] == 1 else "NxCxHxW"


def default_profile(dims: tuple[int, ...], spec: ModelSpec | None) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) for an input whose dynamic dimensions are -1."""
    if len(dims) != 4:
        raise UserError(f"cannot derive profile shapes for a rank-{len(dims)} input; give --min/--opt/--max-shape")
    axes = _axes(dims, spec)
    size = {"height": spec.height if spec else 512, "width": spec.width if spec else 1024}
    step = max(_STEP, spec.size_divisor if spec else 1)
    lo, opt, hi = list(dims), list(dims), list(dims)
    for axis, pos in axes.items():
        if dims[pos] != -1:
            continue
        if axis == "batch":
            lo[pos], opt[pos], hi[pos] = 1, 1, DEFAULT_MAX_BATCH
        else:
            opt[pos] = size[axis]
            lo[pos] = max(step, (size[axis] // 2) // step * step)
            hi[pos] = size[axis] * 2
    for pos, d in enumerate(dims):
        if d == -1 and pos not in axes.values():
            raise UserError(
                f"input dimension {pos} is dynamic but is not batch/height/width; give --min/--opt/--max-shape"
            )
    return tuple(lo), tuple(opt), tuple(hi)


def check_profile(dims: tuple[int, ...], shapes: tuple[Shape, Shape, Shape],
                  spec: ModelSpec | None = None) -> tuple[Shape, Shape, Shape]:
    """Validate user-given (min, opt, max) against the input's dimensions; errors name the
    input's layout (NxCxHxW, or NxHxWxC for a --fuse-preprocess model)."""
    names = ("--min-shape", "--opt-shape", "--max-shape")
    order = layout(dims, spec)
    axis_names = order.split("x")
    for name, shape in zip(names, shapes):
        if len(shape) != len(dims):
            raise UserError(
                f"{name} {fmt(shape)} has {len(shape)} dimensions; the model input has {len(dims)}: "
                f"{order} = {fmt(dims)}"
            )
        for pos, (d, s) in enumerate(zip(dims, shape)):
            if d != -1 and d != s:
                raise UserError(f"{name} {fmt(shape)}: dimension {pos} ({axis_names[pos]}) is fixed at {d} in the "
                                f"model, whose input is {order} = {fmt(dims)}")
            if s < 1:
                raise UserError(f"{name} {fmt(shape)}: dimensions must be >= 1")
    lo, opt, hi = shapes
    if any(not a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise UserError(
            f"profile shapes must satisfy min <= opt <= max per dimension: {fmt(lo)}, {fmt(opt)}, {fmt(hi)}"
        )
    return lo, opt, hi


def profile_for(
    dims: tuple[int, ...], spec: ModelSpec | None, given: tuple[Shape | None, Shape | None, Shape | None]
) -> tuple[Shape, Shape, Shape] | None:
    """The profile to build with: None for a static input, else user-given or default shapes."""
    dynamic = any(d == -1 for d in dims)
    if all(s is None for s in given):
        return default_profile(dims, spec) if dynamic else None
    if any(s is None for s in given):
        raise UserError("give --min-shape, --opt-shape and --max-shape together")
    if not dynamic:
        raise UserError(
            f"the model input is static ({fmt(dims)}); profile shapes need an ONNX exported with --dynamic"
        )
    return check_profile(dims, given, spec)  # type: ignore[arg-type]


def fmt(shape: tuple[int, ...]) -> str:
    return "x".join("?" if d == -1 else str(d) for d in shape)
