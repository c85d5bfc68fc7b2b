"""The instructor's half of llmcourse: release exercises, grade submissions, and what grading needs.

One module per verb: `course` (where things are, nbgrader settings), `release`, `pipeline` (`llmcourse grade`:
find the submissions, grade each with an executor, write), `autograde` (the executor of this machine: a sandboxed
kernel per student, several at once), `cluster` (the executor of a Dask cluster's workers: `--scheduler`),
`judge` (the trusted comparison outside the kernel), `sandbox` (the student's kernel), `stubs` (llmcourse with
the graded functions stubbed), `feedback`. The checks that test cells call live beside it in `llmcourse.checks`.

Explained in: README.md, sections "Authors", "Instructors: grading" and "How grading works".
"""
from __future__ import annotations

import importlib

# Imported on first use: the grading worker (`python -m llmcourse.grading.worker`, one process per student) must
# not pay for torch and the judge, which only the grader's own process needs.
from llmcourse.grading.course import CSV_COLUMNS, REPO, assignments, configure  # noqa: E402,F401 (light)
from llmcourse.grading.release import release  # noqa: E402,F401 (a function named as its module: bound here)

_EXPORTS = {
    "autograde": ["UID_BASE", "GradingEnvironmentError", "Limits", "Row", "restore_locked_cells", "summary",
                  "write_csv"],
    "pipeline": ["grade"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["CSV_COLUMNS", "REPO", "assignments", "configure", "release", *sorted(_WHERE)]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"llmcourse.grading.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'llmcourse.grading' has no attribute {name!r}")
