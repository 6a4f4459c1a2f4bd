"""Triton ``config.pbtxt`` files, built as ``ModelConfig`` protobuf messages (the
``model_config`` protobuf that ships with tritonclient) and written in protobuf text format,
so every field name and type is checked by the schema, and parsed back the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..spec import ModelSpec

SPEC_PARAMETER = "bisenet_deploy.spec"


def _pb():  # noqa: ANN202 - the module
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError("writing a Triton repository needs tritonclient: pip install 'bisenet-deploy[triton-client]'"
                        ) from None
    return model_config_pb2


_TYPES = {np.dtype(np.uint8): "TYPE_UINT8", np.dtype(np.int8): "TYPE_INT8", np.dtype(np.int32): "TYPE_INT32",
          np.dtype(np.int64): "TYPE_INT64", np.dtype(np.float16): "TYPE_FP16", np.dtype(np.float32): "TYPE_FP32"}


def to_text(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse(text: str) -> Any:
    """A ``ModelConfig`` from ``config.pbtxt`` text (raises on anything the schema rejects)."""
    from google.protobuf import text_format

    return text_format.Parse(text, _pb().ModelConfig())


def read(path: str | Path) -> Any:
    return parse(Path(path).read_text())


def _tensor(container: Any, name: str, dtype: np.dtype, dims: list[int]) -> None:
    mc = _pb()
    t = container.add()
    t.name = name
    t.data_type = getattr(mc, _TYPES[np.dtype(dtype)])
    t.dims.extend(dims)


def _parameters(config: Any, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def _instances(config: Any, count: int, gpu: bool) -> None:
    mc = _pb()
    group = config.instance_group.add()
    group.count = count
    group.kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU


def python_model(name: str, spec: ModelSpec, artifact: str, max_batch: int, instances: int, gpu: bool,
                 output_size: str, backend: str, backend_options: str, queue_delay_us: int = 2000) -> Any:
    """The Python-backend model: uint8 BGR frames of any size in, uint8 labels out (at the
    frame size, or the network size), dynamic batching, the ModelSpec in ``parameters``."""
    mc = _pb()
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch)
    _tensor(config.input, "frames", np.uint8, [-1, -1, 3])
    _tensor(config.output, "labels", np.uint8, [-1, -1])
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    _instances(config, instances, gpu)
    _parameters(config, {SPEC_PARAMETER: spec.to_json(), "artifact": artifact, "output_size": output_size,
                         "backend": backend, "backend_options": backend_options, "stage": "segment"})
    return config


def stage_model(name: str, spec: ModelSpec, stage: str, network_inputs: list, network_outputs: list,
                max_batch: int, instances: int) -> Any:
    """Python-backend pre/postprocessing around a native model (for an ensemble):
    ``pre``: frames -> the network's input (+ the frame sizes); ``post``: the network's output
    + frame sizes -> labels at the frame size."""
    mc = _pb()
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch)
    if stage == "pre":
        _tensor(config.input, "frames", np.uint8, [-1, -1, 3])
        for tname, dtype, dims in network_inputs:
            _tensor(config.output, tname, dtype, dims)
        _tensor(config.output, "frame_size", np.int32, [2])
    else:
        for tname, dtype, dims in network_outputs:
            _tensor(config.input, tname, dtype, dims)
        _tensor(config.input, "frame_size", np.int32, [2])
        _tensor(config.output, "labels", np.uint8, [-1, -1])
    _instances(config, instances, False)
    _parameters(config, {SPEC_PARAMETER: spec.to_json(), "stage": stage})
    return config


def native_model(name: str, platform: str, spec: ModelSpec, inputs: list, outputs: list, max_batch: int,
                 instances: int, gpu: bool, facts: dict[str, str] | None = None) -> Any:
    """``onnxruntime_onnx`` or ``tensorrt_plan``: the artifact itself, its own tensors."""
    mc = _pb()
    config = mc.ModelConfig(name=name, platform=platform, max_batch_size=max_batch)
    for tname, dtype, dims in inputs:
        _tensor(config.input, tname, dtype, dims)
    for tname, dtype, dims in outputs:
        _tensor(config.output, tname, dtype, dims)
    if max_batch:
        config.dynamic_batching.max_queue_delay_microseconds = 2000
    _instances(config, instances, gpu)
    _parameters(config, {SPEC_PARAMETER: spec.to_json(), **(facts or {})})
    return config


def ensemble(name: str, spec: ModelSpec, pre: str, native: str, post: str, network_inputs: list,
             network_outputs: list, max_batch: int) -> Any:
    """frames -> ``pre`` -> ``native`` -> ``post`` -> labels, as one model."""
    mc = _pb()
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch)
    _tensor(config.input, "frames", np.uint8, [-1, -1, 3])
    _tensor(config.output, "labels", np.uint8, [-1, -1])
    steps = config.ensemble_scheduling.step
    step = steps.add()
    step.model_name, step.model_version = pre, -1
    step.input_map["frames"] = "frames"
    for tname, _, _ in network_inputs:
        step.output_map[tname] = f"pre_{tname}"
    step.output_map["frame_size"] = "frame_size"
    step = steps.add()
    step.model_name, step.model_version = native, -1
    for tname, _, _ in network_inputs:
        step.input_map[tname] = f"pre_{tname}"
    for tname, _, _ in network_outputs:
        step.output_map[tname] = f"net_{tname}"
    step = steps.add()
    step.model_name, step.model_version = post, -1
    for tname, _, _ in network_outputs:
        step.input_map[tname] = f"net_{tname}"
    step.input_map["frame_size"] = "frame_size"
    step.output_map["labels"] = "labels"
    _parameters(config, {SPEC_PARAMETER: spec.to_json()})
    return config
