"""Runtime: Segmenter and backends; never imports torch at import time."""
