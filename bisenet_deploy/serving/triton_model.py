"""The Python-backend model Triton runs (copied as ``<model>/1/model.py`` into a repository).

``stage`` (a config parameter) says what it is:

* ``segment``: the project's Segmenter on the artifact next to this file: input ``frames``
  (uint8 BGR, any size; the requests of one dynamic batch are segmented in one
  ``predict_batch`` call), output ``labels`` (uint8, at the frame size or the network size);
* ``pre`` / ``post``: the preprocessing and postprocessing around a native
  (``onnxruntime_onnx`` / ``tensorrt_plan``) model in an ensemble, with ``runtime.processing``
  (the one implementation every path uses).

It needs ``bisenet_deploy`` (and the artifact's backend) importable by Triton's Python stub:
``bisenet-serve run`` puts the serving environment first on PATH.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):  # noqa: ANN001, ANN201 - Triton's interface
        from bisenet_deploy.spec import ModelSpec

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self.stage = params.get("stage", "segment")
        self.spec = ModelSpec.from_json(params["bisenet_deploy.spec"])
        if self.stage != "segment":
            return
        from bisenet_deploy.runtime import Segmenter

        folder = Path(args["model_repository"]) / args["model_version"]
        options = json.loads(params.get("backend_options") or "{}")
        if args.get("model_instance_kind") == "GPU":
            options.setdefault("device", f"cuda:{args.get('model_instance_device_id', 0)}")
        self.seg = Segmenter(folder / params["artifact"], backend=params.get("backend") or None,
                             backend_options=options, output_size=params.get("output_size") or "frame")

    def execute(self, requests):  # noqa: ANN001, ANN201
        if self.stage == "pre":
            return [self._pre(r) for r in requests]
        if self.stage == "post":
            return [self._post(r) for r in requests]
        frames, counts = [], []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, "frames").as_numpy()
            counts.append(len(batch))
            frames.extend(batch)
        try:
            masks = self.seg.predict_batch(frames)
        except Exception as exc:  # noqa: BLE001 - one bad batch is an error response, not a dead model
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))) for _ in requests]
        responses, start = [], 0
        for n in counts:
            labels = np.stack(masks[start : start + n]).astype(np.uint8, copy=False)
            start += n
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("labels", labels)]))
        return responses

    def _pre(self, request):  # noqa: ANN001, ANN202
        from bisenet_deploy.runtime import processing

        frames = pb_utils.get_input_tensor_by_name(request, "frames").as_numpy()
        batch = processing.preprocess(list(frames), self.spec)
        sizes = np.array([f.shape[:2] for f in frames], dtype=np.int32)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("input", batch),
                                                          pb_utils.Tensor("frame_size", sizes)])

    def _post(self, request):  # noqa: ANN001, ANN202
        from bisenet_deploy.runtime import processing

        name = "labels" if self.spec.output_kind == "labels" else "logits"
        output = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
        sizes = pb_utils.get_input_tensor_by_name(request, "frame_size").as_numpy()
        labels = processing.labels_from_output(output, self.spec)
        out = np.stack([processing.resize_labels(lab, tuple(int(v) for v in size)) for lab, size in zip(labels, sizes)])
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("labels", out.astype(np.uint8))])

    def finalize(self):  # noqa: ANN201
        seg = getattr(self, "seg", None)
        if seg is not None:
            seg.close()
