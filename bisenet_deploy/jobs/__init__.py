"""Segmentation jobs over files: what is read, what is written where, and the summary.

``plan`` turns command-line inputs into sources with unique output names and guards the
output folder; ``outputs`` says where each frame's result goes and writes it; ``summary``
keeps one row per frame; ``local`` runs a job in this process. The Ray path
(``bisenet_deploy.distributed``) uses the same plan, outputs and summary, so a local and a
Ray run of the same command write the same files. Above ``runtime``; no torch.
"""
