"""The local executor: every item of a prepared Job through one Segmenter in this process.

Per input, never for the whole run: whatever one input raises while it is read or written
(an OSError of any kind, a decode error) is its failed row and one line; the job goes on.
Ctrl-C and SIGTERM stop the job after the summary of what was written (a camera's video is
kept, since that is how a recording ends; other partial videos and bags are dropped).
"""

from __future__ import annotations

import sys
import time

from ..errors import UserError
from .frames import decode, written
from .job import JobSpec, Result, prepare


def run(spec: JobSpec) -> Result:
    from tqdm import tqdm

    from ..runtime.given_spec import open_segmenter

    checked = spec.check()  # before the model is opened
    options = {"threads": spec.threads} if spec.threads else {}
    confidence = bool(spec.bag and spec.bag.confidence)  # class scores must leave the backend
    with open_segmenter(spec.model, spec.given_spec, backend=spec.backend, options={**options, "device": spec.device},
                        output_size="network" if spec.network_size else "frame", scores=confidence) as seg:
        if confidence and seg.spec.output_kind != "logits":
            raise UserError(f"--confidence needs class scores, but '{spec.model}' computes labels in its graph "
                            "(exported with --argmax): export it without --argmax")
        _say_faster_precision(seg, spec.threads)
        job = prepare(spec, checked, seg.spec, seg.backend.name)
        interrupted = True
        try:
            job.bar = tqdm(total=job.total(), initial=job.result.existing, unit="frame", disable=spec.quiet,
                           file=sys.stderr, dynamic_ncols=True)
            for item in job.items:
                for row in decode(item):
                    if row["status"] == "todo":
                        start = time.perf_counter()
                        scores = None
                        try:
                            if confidence and row["topic"]:  # one network run for both
                                (mask,), (scores,) = seg.predict_with_confidence([row["image"]])
                            else:
                                mask = seg(row["image"])
                        except UserError as exc:  # a frame the model cannot take: this input's failure
                            job.add({**row, "status": "failed", "error": str(exc)})
                            continue
                        row = written(job.out, job.renderer, job.summary, row, mask, (time.perf_counter() - start) * 1e3,
                                      job.worker, scores)
                    job.add(row)
            interrupted = False
        finally:
            if job.bar is not None:
                job.bar.close()
                job.bar = None
            result = job.finish(interrupted)
    return result


def _say_faster_precision(seg, threads: int) -> None:  # noqa: ANN001 - a Segmenter
    """One start line when a faster precision keeps the labels on this CPU (bf16: measured
    once per artifact and CPU, then cached; nothing on CPUs without it)."""
    import logging

    from ..runtime.precision_offer import offer_for

    note = offer_for(seg.backend, threads)
    if note:
        logging.getLogger("bisenet_deploy").info(note)
