"""Full-resolution labels and scores from a low-resolution export (``spec.upsample``).

Every supported head computes class scores at 1/8 of the input and upsamples them
bilinearly before the argmax. Bilinear interpolation gives every output pixel, for every
class, the same convex combination of the same four low-resolution neighbours, so where
those four share one argmax class ``c`` (``l_c - l_k >= 0`` at each of them), the
combination keeps ``c`` ahead: the label is a fill. Only pixels whose neighbours disagree
need their C scores interpolated, with PyTorch's own float32 formula
(``upsample_bilinear2d``: source index, clamped neighbours, ``h0 * (w0 * v00 + w1 * v01) +
h1 * (w0 * v10 + w1 * v11)``), and an argmax. Labels equal upsample-then-argmax except
where two classes tie within float rounding.

Binary heads threshold the upsampled logit (the sigmoid is monotone): the same argument
with "above the threshold" in place of "argmax".

NumPy only; no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..spec import Upsample


def source_index(in_n: int, out_n: int, rule: Upsample) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w0, w1) per output index: PyTorch's ``area_pixel_compute_source_index`` in
    float32 (its opmath for float tensors), neighbours clamped at the far edge."""
    dst = np.arange(out_n, dtype=np.float32)
    if rule.align_corners:
        scale = np.float32((in_n - 1) / (out_n - 1)) if out_n > 1 else np.float32(0)
        src = scale * dst
    else:
        # size=: in/out; scale_factor=: 1/factor (PyTorch uses the given factor as is)
        scale = np.float32(in_n / out_n) if rule.coordinates == "sizes" else np.float32(1.0 / rule.factor)
        src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(src.astype(np.int64), in_n - 1)
    i1 = i0 + (i0 < in_n - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    w0 = (np.float32(1) - w1).astype(np.float32)
    return i0, i1, w0, w1


def upsampled_labels(scores: np.ndarray, low: np.ndarray, out_hw: Sequence[int], rule: Upsample,
                     threshold: float | None = None) -> np.ndarray:
    """(C, h, w) low-resolution scores and their (h, w) labels (argmax, or the threshold)
    -> (H, W) labels of the scores' bilinear upsample.

    ``threshold``: binary heads (C == 1), label 1 where the upsampled logit exceeds it.
    """
    c, h, w = scores.shape
    y0, _, hy0, hy1 = source_index(h, int(out_hw[0]), rule)
    x0, _, wx0, wx1 = source_index(w, int(out_hw[1]), rule)
    labels = np.take(np.take(low, x0, axis=1), y0, axis=0)  # the fill: each pixel takes its top-left neighbour's label
    # A cell (i, j) spans neighbours i..i+1, j..j+1 (clamped at the far edges, as PyTorch's i1).
    down, across = np.minimum(np.arange(h) + 1, h - 1), np.minimum(np.arange(w) + 1, w - 1)
    mixed = (low != low[:, across]) | (low != low[down]) | (low != low[down][:, across])
    if not mixed.any():
        return labels
    ci, cj = np.nonzero(mixed)
    flat = scores.reshape(c, h * w)  # corners gathered as (C, cells): no transpose of the map
    corners = [np.take(flat, i, axis=1) for i in (ci * w + cj, ci * w + across[cj],
                                                   down[ci] * w + cj, down[ci] * w + across[cj])]
    geometry = (_runs(y0, h), _runs(x0, w), hy0, hy1, wx0, wx1)
    if threshold is not None or c <= 2:
        _fill_cells(labels, corners, ci, cj, geometry, threshold, None)
        return labels
    # A class can win somewhere in a cell only if its largest corner value reaches the
    # largest smallest-corner value of any class (each interpolated value lies between its
    # corners, up to rounding): mostly two candidates, and only those are interpolated.
    high = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    floor = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3])).max(axis=0)
    candidate = high >= floor
    count = candidate.sum(axis=0)
    pair = count <= 2
    if pair.any():
        # first and last candidate: ascending class order, so ties still go to the lower index
        cand = candidate[:, pair]
        classes = np.stack([np.argmax(cand, axis=0), c - 1 - np.argmax(cand[::-1], axis=0)])
        two = [np.take_along_axis(k[:, pair], classes, axis=0) for k in corners]
        _fill_cells(labels, two, ci[pair], cj[pair], geometry, None, classes)
    if not pair.all():
        # the other cells' candidates, as many as the most any of them has, in ascending class
        # order (a stable sort of "not a candidate": ties still go to the lower class)
        rest = ~pair
        k = int(count[rest].max())
        classes = np.argsort(~candidate[:, rest], axis=0, kind="stable")[:k]
        some = [np.take_along_axis(corner[:, rest], classes, axis=0) for corner in corners]
        _fill_cells(labels, some, ci[rest], cj[rest], geometry, None, classes)
    return labels


def _runs(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, count) of the output positions whose first source index is each of 0..n-1
    (contiguous: the source index never decreases along the output)."""
    counts = np.bincount(index, minlength=n)
    return np.concatenate(([0], np.cumsum(counts)[:-1])), counts


def _fill_cells(labels: np.ndarray, corners: list[np.ndarray], ci: np.ndarray, cj: np.ndarray,
                geometry: tuple, threshold: float | None, classes: np.ndarray | None) -> None:
    """Interpolate the cells' (K, cells) corner scores over their output pixels (PyTorch's
    order: the horizontal pass per output column, then the vertical per output row) and
    write the labels; ``classes``: (2, cells) class ids of two score rows (None: all)."""
    (row_start, row_count), (col_start, col_count), hy0, hy1, wx0, wx1 = geometry
    width = labels.shape[1]
    # cells -> units (cell, output column): the horizontal pass, once per unit
    per_cell = col_count[cj]
    unit_cell = np.repeat(np.arange(len(cj)), per_cell)
    cols = np.repeat(col_start[cj] - (np.cumsum(per_cell) - per_cell), per_cell) + np.arange(len(unit_cell))
    wa, wb = wx0[cols], wx1[cols]
    top = wa * np.take(corners[0], unit_cell, axis=1) + wb * np.take(corners[1], unit_cell, axis=1)
    bottom = wa * np.take(corners[2], unit_cell, axis=1) + wb * np.take(corners[3], unit_cell, axis=1)
    # units -> pixels (unit, output row): the vertical pass, once per pixel
    per_unit = row_count[ci][unit_cell]
    pixel_unit = np.repeat(np.arange(len(unit_cell)), per_unit)
    ys = np.repeat(row_start[ci][unit_cell] - (np.cumsum(per_unit) - per_unit), per_unit) + np.arange(len(pixel_unit))
    values = hy0[ys] * np.take(top, pixel_unit, axis=1) + hy1[ys] * np.take(bottom, pixel_unit, axis=1)
    if threshold is not None:
        chosen = values[0] > threshold
    elif classes is not None and len(classes) == 2:
        pick = np.take(classes, unit_cell[pixel_unit], axis=1)
        chosen = np.where(values[1] > values[0], pick[1], pick[0])
    elif classes is not None:  # first maximum among ascending candidates: the lowest class on ties
        best = np.argmax(values, axis=0)
        chosen = classes[best, unit_cell[pixel_unit]]
    else:
        chosen = np.argmax(values, axis=0)  # first maximum: the lowest class on ties
    labels.reshape(-1)[ys * width + cols[pixel_unit]] = chosen


def upsampled_scores(scores: np.ndarray, out_hw: Sequence[int], rule: Upsample) -> np.ndarray:
    """(N, C, h, w) low-resolution scores -> (N, C, H, W) float32: the head's bilinear
    upsample (PyTorch's float32 formula), then what the head applies after it."""
    _, _, h, w = scores.shape
    y0, y1, hy0, hy1 = source_index(h, int(out_hw[0]), rule)
    x0, x1, wx0, wx1 = source_index(w, int(out_hw[1]), rule)
    s = scores.astype(np.float32, copy=False)
    across = s[..., x0] * wx0 + s[..., x1] * wx1  # (N, C, h, W)
    full = hy0[:, None] * across[:, :, y0] + hy1[:, None] * across[:, :, y1]
    if rule.then == "log_softmax":
        full = full - full.max(axis=1, keepdims=True)
        full -= np.log(np.exp(full).sum(axis=1, keepdims=True))
    return full.astype(np.float32, copy=False)
