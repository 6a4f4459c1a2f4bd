"""Reduced precision in the ONNX itself: calibration data, FP16 conversion, INT8 Q/DQ,
calibration cache and the fidelity report (onnx, onnxruntime and NumPy; no torch).

Entry point: ``calibration.precision.make_precisions``.
"""
