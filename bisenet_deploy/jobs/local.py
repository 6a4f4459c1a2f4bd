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
    with open_segmenter(spec.model, spec.given_spec, backend=spec.backend, options={**options, "device": spec.device},
                        output_size="network" if spec.network_size else "frame") as seg:
        job = prepare(spec, checked, seg.spec, seg.backend.name)
        interrupted = True
        try:
            job.bar = tqdm(total=job.total(), initial=job.result.existing, unit="frame", disable=spec.quiet,
                           file=sys.stderr, dynamic_ncols=True)
            for item in job.items:
                for row in decode(item):
                    if row["status"] == "todo":
                        start = time.perf_counter()
                        try:
                            mask = seg(row["image"])
                        except UserError as exc:  # a frame the model cannot take: this input's failure
                            job.add({**row, "status": "failed", "error": str(exc)})
                            continue
                        row = written(job.out, job.renderer, job.summary, row, mask, (time.perf_counter() - start) * 1e3,
                                      job.worker)
                    job.add(row)
            interrupted = False
        finally:
            if job.bar is not None:
                job.bar.close()
                job.bar = None
            result = job.finish(interrupted)
    return result

