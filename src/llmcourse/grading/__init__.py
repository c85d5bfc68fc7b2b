"""The instructor's half of llmcourse: release exercises, grade submissions, and what grading needs.

One module per step, the flow going one way (no two modules import each other, tests/test_package_layout.py):
`course` (where things are, nbgrader settings) and `release`; `llmcourse grade` is `pipeline` (find the
submissions, grade each with an executor, write), whose executors are `local` (this machine's worker pool) and
`cluster` (a Dask cluster's workers, `--scheduler`). Both grade a student with the same stages: `submission`
(what was handed in), `prepare` (the batch's setting and version key), `cache`, `canary` (the instructor's
solution first), `attempts` (runs until they decide the grade) over `workers` (one run in a fresh kernel by a
pool worker, `worker` its process, `sandbox` the kernel), `judge` (the trusted comparison outside the kernel),
`feedback`, `rows` (the CSV) and `limits`; `report` the class report. The student's side: `stubs` (llmcourse
with the graded functions stubbed), `kit` (`llmcourse kit`), `check` (`llmcourse check`), `replay` and `chain`.
The checks that test cells call live beside it in `llmcourse.checks`.

Explained in: README.md, sections "Authors", "Instructors: grading" and "How grading works".
"""
from __future__ import annotations

import importlib

# Imported on first use: the grading worker (`python -m llmcourse.grading.kernel.worker`, one process per job)
# must not pay for torch and the judge, which only the grader's own process needs.
from llmcourse.grading.course import CSV_COLUMNS, REPO, assignments, configure  # noqa: E402,F401 (light)
from llmcourse.grading.student.release import release  # noqa: E402,F401 (a function named as its module: bound here)

_EXPORTS = {
    "batch.canary": ["GradingEnvironmentError"], "batch.limits": ["Limits"], "batch.pipeline": ["grade"],
    "batch.prepare": ["UID_BASE"], "batch.rows": ["Row", "summary", "write_csv"],
    "batch.submission": ["restore_locked_cells"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["CSV_COLUMNS", "REPO", "assignments", "configure", "release", *sorted(_WHERE)]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"llmcourse.grading.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'llmcourse.grading' has no attribute {name!r}")
