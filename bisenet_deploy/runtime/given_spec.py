"""A ModelSpec given by the user (``--spec``) for a model that carries none (a foreign ONNX).

Shared by every command that runs a model (``bisenet-infer`` locally and on Ray,
``bisenet-bench``): the fields come from the command line, and what the user left out that the
model itself fixes (its input size, its dynamic axes) comes from the opened model's input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from ..spec import ModelSpec, SpecError


def spec_for(fields: dict, backend) -> ModelSpec:  # noqa: ANN001 - an opened Backend
    """The ModelSpec of ``fields`` for an opened model that carries none: the input size and
    dynamic axes the user did not give come from the model's input (N, 3, H, W)."""
    fields = dict(fields)
    shape = list(backend.inputs[0].shape) if backend.inputs else []
    if len(shape) == 4:
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
        if "input_size" not in fields:
            fields["input_size"] = (fixed[2] or 512, fixed[3] or 1024)
        if "dynamic_axes" not in fields:
            fields["dynamic_axes"] = tuple(n for n, d in zip(("batch", None, "height", "width"), fixed)
                                           if n and d is None)
    try:
        return ModelSpec.from_dict(fields)
    except SpecError as exc:
        raise UserError(f"--spec does not make a valid ModelSpec for '{backend.path}': {exc}") from None


def _carries_spec(model: Path | str) -> bool | None:
    """Whether a local ONNX file carries a ModelSpec, from its metadata alone (no session,
    no probe), or None where that cannot be told so cheaply (engines, URLs, unreadable files:
    opening them gives their own error)."""
    from ..errors import ArtifactError
    from ..spec import METADATA_KEY
    from .onnx_metadata import read_onnx_metadata

    path = Path(str(model))
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return None
    try:
        return METADATA_KEY in read_onnx_metadata(path)
    except ArtifactError:
        return None


def _refusal(name: str, carries: bool, fields: dict | None) -> str | None:
    if fields is None and not carries:
        return (f"'{name}' carries no ModelSpec (not exported by bisenet-export?); give its classes "
                "and normalization with --spec '{\"num_classes\": N, \"mean\": [...], \"std\": [...]}'")
    if fields is not None and carries:
        return f"'{name}' carries its own ModelSpec; --spec is for models without one"
    return None


def open_segmenter(model: Path | str, fields: dict | None, backend: str | None = None,
                   options: dict[str, Any] | None = None, output_size: str = "frame",
                   scores: bool = False):  # noqa: ANN201
    """A Segmenter on ``model``; with ``fields`` (``--spec``) the model must carry no ModelSpec
    of its own, and gets the one the fields make. Without them a model that carries none is
    refused with one line that names ``--spec``. ``scores``: the backend must return class
    scores (confidence images): no compiled argmax (OpenVINO runs its host form)."""
    from .choice import open_model
    from .segmenter import Segmenter

    # decided from the file's metadata before any backend opens or `auto` probes, so the
    # refusal is the only line a user sees (and comes at once)
    carries = _carries_spec(model)
    if carries is not None and (why := _refusal(Path(str(model)).name, carries, fields)):
        raise UserError(why)
    options = dict(options or {})
    options.setdefault("device", "auto")
    if scores:  # class scores must leave the backend: the one rule for that lives in confidence.py
        from .confidence import open_scoring

        opened = open_scoring(model, backend, **options)
    else:  # a given spec brings its own normalization: nothing of the file's compiled into the graph
        opened = open_model(model, backend, graph_prepost=fields is None, **options)
    try:
        name = Path(str(opened.path)).name
        why = _refusal(name, opened.spec is not None, fields)
        if why:
            raise UserError(why)
        if fields is None:
            return Segmenter(opened, output_size=output_size)
        return Segmenter(opened, spec=spec_for(fields, opened), output_size=output_size)
    except BaseException:
        opened.close()
        raise
