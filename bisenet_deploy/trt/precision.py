"""TensorRT 8.6 (weakly typed): keep the layers an FP16 ONNX computes in FP32 in FP32.

With only the FP16 builder flag, TensorRT 8.6 may run any layer in FP16, including the
overflow-protected FP32 layers of ``calibration/fp16.py`` and ``--fp16-keep``. Polygraphy
(``backend/trt/loader.py`` ``SetLayerPrecisions``, ``config.py`` ``precision_constraints``)
sets ``layer.precision`` and needs ``OBEY_PRECISION_CONSTRAINTS`` for it to take effect;
this does the same for the layers whose outputs the parsed network types as FP32. Which
layers is decided by ``features.pins_for_layers`` (a plain function, tested per version).
"""

from __future__ import annotations

from typing import Any

from .features import LayerFacts, pins_for_layers


def _name(enum_value: Any) -> str:
    return str(getattr(enum_value, "name", enum_value)).split(".")[-1]


def network_layers(network: Any) -> list[LayerFacts]:
    """LayerFacts of every layer, with which ones touch a Quantize/Dequantize layer."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer: dict[str, str] = {}
    for layer in layers:
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = _name(layer.type)
    feeds_quantize: set[str] = set()
    for layer in layers:
        if _name(layer.type) == "QUANTIZE":
            tensor = layer.get_input(0)
            if tensor is not None:
                feeds_quantize.add(tensor.name)
    facts = []
    for layer in layers:
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        next_to_qdq = any(t is not None and producer.get(t.name) == "DEQUANTIZE" for t in inputs) or any(
            t.name in feeds_quantize for t in outputs
        )
        facts.append(LayerFacts(layer.name, _name(layer.type), tuple(_name(t.dtype) for t in outputs), next_to_qdq))
    return facts


def pin_fp32_layers(trt: Any, network: Any, precision: str) -> list[str]:
    """Pin the ONNX's FP32 compute layers to FP32 (precision and output types); their names."""
    names = set(pins_for_layers(network_layers(network), precision))
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in names:
            layer.precision = trt.DataType.FLOAT
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.DataType.FLOAT)
    return sorted(names)
