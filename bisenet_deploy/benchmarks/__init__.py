"""Benchmark harness, fidelity metrics and reports."""
