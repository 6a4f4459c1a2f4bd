"""Interleaving for timing several backends fairly (the benchmark and ``backend="auto"``)."""

from __future__ import annotations


def balanced_orders(n: int) -> list[list[int]]:
    """Round orders in which every backend runs right after every other one equally often
    (a Williams design): what one backend leaves behind (spinning threads, a warm or
    flushed cache, a hot CPU) then favours or hurts each of the others alike."""
    if n < 1:
        return []
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(x + r) % n for x in first] for r in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows
