"""Synthetic data sets that need no download (NumPy + OpenCV only, no torch)."""
