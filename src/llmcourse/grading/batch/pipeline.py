"""`llmcourse grade`: the batch, in one direction: find the submissions, then grade each (the cache answers
for unchanged ones) with an executor, the worker pool of this machine (`llmcourse.grading.batch.local`) or a Dask
cluster's workers (`llmcourse.grading.batch.cluster`), then write the CSV and the feedback pages.

Neither executor imports this module: each grades students and returns (row, feedback page) pairs.

Explained in: README.md, section "Instructors: grading".
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from llmcourse.grading.batch import judge
from llmcourse.grading.batch.limits import Limits
from llmcourse.grading.batch.local import grade_here
from llmcourse.grading.batch.rows import BATCH, Row, feedback_name, write_csv
from llmcourse.grading.batch.submission import student_folders
from llmcourse.grading.course import REPO, assignments, cell_timeout_for
from llmcourse.grading.batch.feedback import copy_mathjax
from llmcourse.grading.kernel.worker import mark


class Rows(list):
    """A batch's rows, one per student folder, sorted by student; `canary` is the row of the instructor's own
    solution, graded first through the same path (full marks, or `grade` raised instead of returning), or None
    where a cluster's workers graded it; `canary_page` its feedback page (HTML, written nowhere: a full-marks page
    as students see it)."""
    canary: Row | None = None
    canary_page: str | None = None


def grade(submissions: Path, assignment: str, out: Path | None = None, feedback: Path | None = None,
          root: Path = REPO, jobs: int | None = None, force: bool = False, limits: Limits | None = None,
          cache: Path | None = None, progress: bool = True, scheduler=None) -> Rows:
    """Autograde `submissions/<student>/<any name>.ipynb` for `assignment`; write grades.csv and feedback.

    The instructor's own solution is graded first through the same path (the canary), the students beside it:
    unless it gets full marks, `GradingEnvironmentError` says what is wrong with the machine and nothing is
    written (no grade is cached). Every student folder gets a row. Each notebook runs in its own sandboxed
    kernel (`llmcourse.grading.kernel.sandbox`); points come from `llmcourse.grading.batch.judge`, outside the kernel.
    Unchanged submissions are taken from the cache unless `force`. The submissions folder is only read, and only
    its regular files.

    With `scheduler` (a Dask scheduler's address, or a `distributed.Client`), the students are graded by that
    cluster's workers, each from its own installation of the course (`llmcourse.grading.batch.cluster`); the rows, CSV,
    feedback and cache are the same.
    """
    limits = limits or Limits(cell_timeout=cell_timeout_for(assignment))
    submissions = Path(submissions).resolve()
    if not (root / "solutions" / assignment).is_dir():
        raise SystemExit(f"No assignment '{assignment}'; known: {', '.join(assignments(root))}")
    if not submissions.is_dir():
        raise SystemExit(f"{submissions} is not a folder of student folders.")
    source = next((root / "solutions" / assignment).glob("*.ipynb"))
    source_nb = nbformat.read(source, as_version=4)
    cells = judge.test_cells(source_nb)
    base = Path(out).resolve().parent if out else Path.cwd()
    cache = Path(cache).resolve() if cache else base / ".llmcourse-grade-cache" / assignment
    ours = {p for p in (cache, Path(feedback).resolve() if feedback else None, base) if p}
    cache.mkdir(parents=True, exist_ok=True)  # before any kernel starts: hidden from all of them
    students, refused = student_folders(submissions, assignment, ours)
    batch = dict(assignment=assignment, source=source, source_nb=source_nb, cells=cells, limits=limits, cache=cache,
                 force=force, root=root)
    if scheduler is not None:  # Dask is imported only here: a local run needs none of it
        from llmcourse.grading.batch.cluster import grade_on_cluster  # noqa: PLC0415

        results = grade_on_cluster(scheduler, students, batch, progress)
    else:
        results = grade_here(students, batch, [submissions, cache, *([Path(feedback)] if feedback else [])],
                             jobs, progress)
    for row in refused:
        row.max_score = sum(c.points for c in cells)
    results += [(row, None) for row in refused]
    results.sort(key=lambda r: r[0].student)
    rows = Rows(row for row, _ in results)
    rows.canary, rows.canary_page = batch.get("canary"), batch.get("canary_page")
    if out:
        write_csv(rows, Path(out))
    if feedback:
        feedback = Path(feedback)
        feedback.mkdir(parents=True, exist_ok=True)
        for row, html in results:
            if html:
                (feedback / feedback_name(row.student)).write_text(html, encoding="utf-8")
        copy_mathjax(feedback / "mathjax")
    mark(BATCH, "written")
    return rows
