"""Serving with Triton Inference Server: a model repository from any artifact of this project,
a launcher for a real ``tritonserver``, and (in ``runtime.backends.triton``) a Segmenter that
talks to it. Built on the runtime: the served model runs the same Segmenter.

``config``: every ``config.pbtxt`` built as a ``ModelConfig`` protobuf (tritonclient's), so
each is schema-checked; ``repository``: ``bisenet-serve repo``; ``server``: ``bisenet-serve run``;
``triton_model.py``: the Python-backend model Triton loads (copied into the repository).
"""
