"""The executor of a local `llmcourse grade`: the students graded on this machine, `jobs` at a time, each in a
worker process of the pool (`llmcourse.grading.batch.workers`), the canary first and the students beside it (none
kept until it has passed). `llmcourse.grading.batch.cluster` is the other executor, on a Dask cluster's workers.

Explained in: README.md, section "Instructors: grading".
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from llmcourse.grading.batch import prepare
from llmcourse.grading.batch.attempts import grade_one
from llmcourse.grading.batch.cache import CANARIES
from llmcourse.grading.batch.canary import grade_canary
from llmcourse.grading.batch.rows import BATCH, Row
from llmcourse.grading.kernel.sandbox import scratch_folder
from llmcourse.grading.batch.workers import Worker
from llmcourse.grading.kernel.worker import mark


def grade_here(students: list[Path], batch: dict, hide: list[Path], jobs: int | None,
               progress: bool) -> list[tuple[Row, str | None]]:
    """Grade the students on this machine, `jobs` at a time, the canary first and the students beside it: none of
    them is kept until it has passed."""
    jobs = jobs or os.cpu_count() or 1
    work = scratch_folder("llmcourse-grade-")
    try:
        mark(BATCH, "start")
        Worker.start(min(jobs, len(students) + 1))  # they import while we prepare
        setting = prepare.batch_setting(work, batch, hide)
        mark(BATCH, "assignment prepared")
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            CANARIES[str(work)] = canary = pool.submit(grade_canary, batch["source"], len(students), setting)
            futures = [pool.submit(grade_one, folder, i, setting) for i, folder in enumerate(students)]
            try:
                batch["canary"], batch["canary_page"] = canary.result()  # for the caller (pipeline.Rows)
            except BaseException:
                for future in futures:  # those already running end, unkept
                    future.cancel()
                raise
            mark(BATCH, "canary graded")
            done = tqdm(as_completed(futures), total=len(futures), desc=f"grading {batch['assignment']}",
                        unit="student", disable=not progress)
            results = [f.result() for f in done]
        mark(BATCH, "students graded")
        return results
    finally:
        CANARIES.pop(str(work), None)
        Worker.close_all()
        shutil.rmtree(work, ignore_errors=True)
