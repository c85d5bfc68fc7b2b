"""The worker process that `autograde` starts for one student: nbgrader autograde with the sandbox kernel.

It is a module of its own (run as `python -m llmcourse.grading.worker COURSE ASSIGNMENT STUDENT TIMEOUT`) so
that a student's kernel, and nbgrader's global logging, stay out of the grader's process.

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import sys
from pathlib import Path

from llmcourse.grading.course import nbgrader_api

KERNEL_NAME = "llmcourse-sandbox"


def autograde_worker(course: str, assignment: str, student: str, cell_timeout: str) -> int:
    """Entry point of the worker process: nbgrader autograde with the sandbox kernel."""
    api = nbgrader_api(Path(course), source="source", release="release", work=".", kernel=KERNEL_NAME,
               cell_timeout=int(cell_timeout))
    result = api.autograde(assignment, student, force=True)
    if not result["success"]:
        print(result.get("log") or "", file=sys.stderr)
        print((result.get("error") or "autograde failed").strip().splitlines()[-1], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(autograde_worker(*sys.argv[1:5]))
