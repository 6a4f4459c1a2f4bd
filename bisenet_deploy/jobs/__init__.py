"""Segmentation jobs over files: one job model (``job``: JobSpec, prepare, Job, Result), the
sources and their output names (``plan``), the shared decode and write steps (``frames``), the
summary rows (``summary``) and the in-process executor (``local``). The Ray executor
(``bisenet_deploy.distributed``) runs the same items, so both write the same files. Above
``runtime`` and ``rosbag``; no torch.
"""
