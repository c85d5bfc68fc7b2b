"""The canary: the instructor's own solution, graded first through the same sandbox, limits and judging. Unless
it gets full marks the machine cannot grade, and `GradingEnvironmentError` says what went wrong and how to fix it.

Explained in: README.md, section "Instructors: grading".
"""
from __future__ import annotations

import shutil
from pathlib import Path

from llmcourse.grading.batch import prepare
from llmcourse.grading.batch.attempts import grade_one
from llmcourse.grading.batch.limits import Limits
from llmcourse.grading.batch.rows import CANARY, Row


class GradingEnvironmentError(RuntimeError):
    """The grading machine, not a student, failed (the canary did not get full marks): nothing is written."""


def grade_canary(source: Path, index: int, s: dict) -> tuple[Row, str | None]:
    """Grade the instructor's own solution first, through the same sandbox, limits and judging. Unless it
    gets full marks, the machine cannot grade: raise with what went wrong and how to fix it. Students graded
    meanwhile wait for its verdict before anything of theirs is kept (`canary_passed`). Returns its row and
    its feedback page."""
    folder = s["work"] / "canary" / CANARY
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / source.name)
    row, page = grade_one(folder, index, s)
    if row.clean and row.score == row.max_score:
        return row, page
    raise GradingEnvironmentError(explain_canary(row, s["assignment"], s["limits"]))


def explain_canary(row: Row, assignment: str, limits: Limits) -> str:
    """What the instructor reads when the canary fails: what happened, the evidence, what to do."""
    got = "no score" if row.score is None else f"{row.score:g} / {row.max_score:g}"
    lines = [f"The grading machine failed its own check: the instructor's solution of {assignment}, graded "
             f"through the same sandbox, got {got} (status: {row.status}).",
             "No grades or feedback were written: every student would have been graded by a broken machine.", ""]
    if row.message:
        lines += ["What its tests said:", "  " + row.message[:1500], ""]
    evidence = row.diagnostics.strip()
    if evidence:
        lines += ["What the grading kernel and worker said:", *("  " + x for x in evidence[-3000:].splitlines()), ""]
    hints = []
    if "cannot read" in evidence or "Permission denied" in evidence:
        hints.append("A folder the grading kernel needs is closed to other users (see above). Give other users "
                     "the right to enter it (chmod o+x on that folder), or install the course in a folder they "
                     "can enter; then run the same command again.")
    if "No module named" in evidence or "ModuleNotFoundError" in evidence:
        hints.append("The grading kernel could not import a package: check that `make venv` finished and that "
                     "the environment's files are readable by other users (chmod -R o+rX .venv).")
    if "No such file or directory" in evidence and "could not start" in row.status:
        hints.append(f"The grading kernel could not be started (its interpreter is {prepare.KERNEL_PYTHON}): "
                     "rebuild the environment with `make venv`, and grade with that environment's `llmcourse`.")
    if "MemoryError" in evidence or "MemoryError" in row.message:
        hints.append(f"A memory limit was reached ({limits.described()}): raise --memory-gb.")
    if "stopped after" in row.status or "longer than" in row.message:
        hints.append("A time limit was reached on the instructor's own solution: the machine is slow or busy; "
                     "raise --cell-timeout / --student-timeout or grade with fewer --jobs.")
    if not hints:
        hints.append("Run `make test` to see which part of the grading machine fails, and set "
                     "LLMCOURSE_GRADING_LOG=/tmp/grading.log to keep the worker's log.")
    return "\n".join(lines + ["How to fix it:", *("  - " + h for h in hints)])
