"""The one comparator: run labels on frames, compare them with a reference under a tolerance.

Export verification, calibration fidelity, the INT8 fallback, the bench's fidelity rows, the
automatic backend choice and the GPU check all ask the same question ("does this runner give
the reference's labels on these frames?"). They answer it here, after Polygraphy's split of
``Comparator.run`` (outputs of each runner on the same inputs) from ``compare_accuracy`` (a
tolerance applied to a pair): so "agreement" and "max |diff|" are computed one way, and each
result says whether it passed and why.

Ground floor: numpy only (OpenCV and the sample photos lazily, for frames); no torch, no
runtime import. A runner is anything with ``network_outputs(frames) -> (labels, logits or
None)`` (``runtime.Segmenter`` has it) or a callable with that signature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from .metrics import ComparisonAccumulator

#: (labels N x h x w, logits N x C x h x w or None) at the network resolution
Outputs = tuple[np.ndarray, Union[np.ndarray, None]]
Runner = Any  # an object with network_outputs(frames), or a callable frames -> Outputs


# --- frames ---------------------------------------------------------------------------------

def random_frames(count: int, size_hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Seeded image-like frames: smooth colour fields with edges and noise (BGR uint8); the
    three channels are drawn independently, so a channel swap changes them."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size_hw
    frames = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        frame = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        noise = rng.normal(0, 12, size=frame.shape)
        frames.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
    return frames


def frame_source(size_hw: tuple[int, int], random: int = 2, samples: int = 2, images: str | Path | None = None,
                 seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Named frames to compare on: ``random`` seeded synthetic ones at ``size_hw``, up to
    ``samples`` of the installed sample photos (never downloaded), and the user's images
    (a folder or one file; unreadable files are skipped)."""
    frames = [(f"random-{i}", f) for i, f in enumerate(random_frames(random, size_hw, seed))]
    if samples:
        from .samples import sample_photos

        frames += sample_photos(samples)
    if images is not None:
        from .runtime.sources import list_images, read_image  # lazily: no runtime at import

        for path in list_images(images):
            image = read_image(path)
            if image is not None:
                frames.append((path.name, image))
    return frames


# --- running --------------------------------------------------------------------------------

def run_outputs(runner: Runner, frames: Sequence[np.ndarray]) -> Outputs:
    """The runner's network-resolution labels (and logits where it has them) for ``frames``."""
    run: Callable[[Sequence[np.ndarray]], Outputs] = getattr(runner, "network_outputs", runner)
    return run(list(frames))


def run_labels(runner: Runner, frames: Sequence[np.ndarray]) -> np.ndarray:
    """The runner's network-resolution labels (N x h x w) for ``frames``."""
    return run_outputs(runner, frames)[0]


# --- comparing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerance:
    """Pass criteria. ``min_agreement``: % of pixels with the reference's label;
    ``max_abs``: allowed max |logit diff| (``None``: not checked), plus ``rel`` times the
    reference's max |logit|; ``mean_abs``: allowed mean |logit diff| (``None``: not checked);
    ``tie``: pixels whose reference top-two logits are closer than this are not counted
    (two exact float implementations may order a near-tie either way)."""

    min_agreement: float = 100.0
    max_abs: float | None = None
    rel: float = 0.0
    mean_abs: float | None = None
    tie: float = 0.0


#: the usual tolerances: FP32 on another runtime is exact up to near-ties; reduced precisions
#: keep this share of the FP32 labels (what ``auto`` and the conformance matrix require)
EXACT = Tolerance(min_agreement=100.0, tie=1e-3)
PRECISION_AGREEMENT = {"fp32": 100.0, "fp16": 99.0, "bf16": 99.0, "int8": 99.5, "mixed": 99.5}


@dataclass
class Comparison:
    """One candidate against the reference: the figures, and whether they pass and why not."""

    name: str
    passed: bool
    agreement: float
    pixels: int
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    why: str = ""
    miou: float | None = None  # mean IoU of the candidate's labels against the reference's
    max_abs_reference: float | None = None
    allowed_abs_diff: float | None = None
    tolerance: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        diff = "" if self.max_abs_diff is None else f", max |diff| {self.max_abs_diff:.3g}"
        return f"{self.name}: {'PASS' if self.passed else 'FAIL'}, label agreement {self.agreement:.3f}%{diff}" + \
            (f" ({self.why})" if self.why else "")


def tie_mask(logits: np.ndarray | None, tie: float) -> np.ndarray | None:
    """Pixels (N x h x w) whose top-two logits are within ``tie``; None without logits or a tie
    tolerance (binary models have no second logit: their near-ties are at the threshold)."""
    if logits is None or tie <= 0:
        return None
    if logits.shape[1] == 1:
        return np.abs(logits[:, 0]) <= tie
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= tie


class Comparator:
    """``compare`` over many frames without keeping them: feed ``add`` frame by frame (or
    batch by batch), read ``result()``. What the bench's fidelity rows stream photo by photo."""

    def __init__(self, num_classes: int, tolerance: Tolerance = EXACT, name: str = "candidate") -> None:
        self.tolerance, self.name, self.num_classes = tolerance, name, max(2, num_classes)
        self._acc = ComparisonAccumulator(self.num_classes)
        self._same = self._pixels = 0
        self._problem = ""

    def add(self, reference: Outputs, candidate: Outputs) -> None:
        ref_labels, ref_logits = reference
        labels, logits = candidate
        if ref_labels.shape != labels.shape:
            self._problem = f"labels of shape {labels.shape}, the reference's are {ref_labels.shape}"
            return
        self._acc.add(ref_labels, labels, ref_logits, logits)
        same = ref_labels == labels
        ties = tie_mask(ref_logits, self.tolerance.tie)
        if ties is not None:
            same = same | ties.reshape(same.shape)
        self._same += int(np.count_nonzero(same))
        self._pixels += int(same.size)

    def figures(self):  # noqa: ANN201 - metrics.OutputComparison
        """The plain figures (agreement counts every pixel; no tolerance applied)."""
        return self._acc.result()

    def result(self) -> Comparison:
        tol = self.tolerance
        if self._problem or not self._pixels:
            return Comparison(self.name, False, 0.0, self._pixels, why=self._problem or "nothing compared",
                              tolerance=asdict(tol))
        figures = self._acc.result()
        agreement = 100.0 * self._same / self._pixels
        why = []
        if agreement < tol.min_agreement:
            why.append(f"label agreement {agreement:.3f}% < {tol.min_agreement}%")
        max_diff, mean_diff = figures.max_abs_diff, figures.mean_abs_diff
        allowed = None
        if tol.max_abs is not None and max_diff is not None:
            allowed = tol.max_abs + tol.rel * float(figures.max_abs_reference or 0.0)
            if max_diff > allowed:
                why.append(f"max |logit diff| {max_diff:.3g} > {allowed:.3g}")
        if tol.mean_abs is not None and mean_diff is not None and mean_diff > tol.mean_abs:
            why.append(f"mean |logit diff| {mean_diff:.3g} > {tol.mean_abs:.3g}")
        return Comparison(self.name, not why, agreement, self._pixels, max_diff, mean_diff, "; ".join(why),
                          miou=figures.miou_vs_reference, max_abs_reference=figures.max_abs_reference,
                          allowed_abs_diff=allowed, tolerance=asdict(tol))


def compare(reference: Outputs, candidate: Outputs, tolerance: Tolerance = EXACT, name: str = "candidate",
            num_classes: int | None = None) -> Comparison:
    """``candidate`` against ``reference`` (both ``Outputs`` on the same frames)."""
    ref_labels, labels = reference[0], candidate[0]
    classes = max(num_classes or 0, int(max(ref_labels.max(initial=0), labels.max(initial=0))) + 1)
    comparator = Comparator(classes, tolerance, name)
    comparator.add(reference, candidate)
    return comparator.result()


def compare_runners(reference: Runner, candidates: dict[str, Runner], frames: Sequence[np.ndarray],
                    tolerance: Tolerance | dict[str, Tolerance] = EXACT) -> dict[str, Comparison]:
    """Run the reference and each candidate on the same frames and compare (``tolerance``:
    one for all, or one per candidate name)."""
    ref = run_outputs(reference, frames)
    out = {}
    for name, runner in candidates.items():
        tol = tolerance.get(name, EXACT) if isinstance(tolerance, dict) else tolerance
        try:
            outputs = run_outputs(runner, frames)
        except Exception as exc:  # noqa: BLE001 - a runner that cannot run is a failed comparison
            out[name] = Comparison(name, False, 0.0, int(ref[0].size), why=f"did not run: {exc}",
                                   tolerance=asdict(tol))
            continue
        out[name] = compare(ref, outputs, tol, name)
    return out
