"""Command-line entry points: argument parsing only; the work is in library functions."""
