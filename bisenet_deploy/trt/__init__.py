"""Everything TensorRT, in one package (the shape of Polygraphy's ``backend/trt``).

    loading.py        import ``tensorrt`` or ``tensorrt_rtx``; one capturing logger each
    features.py       version-dependent decisions as plain functions of the module's API
    compat.py         the builder calls that differ between 8.6, 10, 11 and TensorRT-RTX
    precision.py      TensorRT 8.6: keep the ONNX's FP32 layers FP32 (precision constraints)
    onnx_facts.py     what the builder reads from an ONNX file (spec, precision, inputs)
    profiles.py       optimization-profile shapes
    builder.py        ONNX -> engine + sidecar (+ layer report)
    sidecar.py        the engine's JSON sidecar and the "does it fit this machine" check
    cuda_buffers.py   cuda-python: device/pinned memory, streams, events, graphs, GPU facts
    device_arrays.py  arrays already on the GPU (DLPack / CUDA array interface), alignment
    runner.py         the runtime backend (``Segmenter("model.engine")``)

Nothing is imported here: ``import bisenet_deploy.trt`` costs nothing, the runtime half
(runner, sidecar, loading, buffers) imports neither torch nor onnx, and TensorRT itself
is imported only when an engine is built or loaded.
"""
