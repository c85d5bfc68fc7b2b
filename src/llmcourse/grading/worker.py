"""The worker processes that `autograde` starts: nbgrader autograde with the sandbox kernel.

It is a module of its own so that a student's kernel, and nbgrader's global logging, stay out of the grader's
process. `python -m llmcourse.grading.worker --serve` grades students one after another, one request a line on
its stdin (the grader keeps one such worker per job, so that each student does not pay for a new Python process
and nbgrader's imports); `python -m llmcourse.grading.worker COURSE ASSIGNMENT STUDENT TIMEOUT` grades one
student and ends. Either way each student gets a fresh sandboxed kernel.

The kernel talks to nbclient over ZMQ's `ipc` transport, Unix sockets in the kernel's own folder (LLMCOURSE_KERNEL_IPC):
in its network namespace it has no network at all. The cases of a test cell (`cases/*.pt`, the hidden inputs) are
put in the kernel's folder just before that cell runs and removed when it ends (LLMCOURSE_CASES), so no other cell
can read them.

It runs nbgrader's Execute step as `TracedExecute`, which writes, before each cell, which cell starts (to the
file named by LLMCOURSE_PROGRESS), and which keeps the notebook when the kernel dies: the grader then knows
where a kernel died (and can tell a notebook that kills its kernel from a machine that failed to start one),
and nbgrader still writes the autograded notebook, so the student gets feedback.

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import time

_STARTED = time.time()  # noqa: E402  (before the imports, for LLMCOURSE_GRADING_TIMES)

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

# jsonschema imports rfc3987_syntax, when installed, to check IRI formats; nbformat's notebook schema has none, and
# building that package's grammar at import costs 1-3 s in every worker (one per student). Its absence is allowed
# for: jsonschema then leaves those formats unchecked.
sys.modules.setdefault("rfc3987_syntax", None)

from nbclient.exceptions import DeadKernelError  # noqa: E402
from nbgrader.preprocessors import Execute  # noqa: E402

from llmcourse.grading.course import nbgrader_api  # noqa: E402

KERNEL_NAME = "llmcourse-sandbox"
PROGRESS_ENV = "LLMCOURSE_PROGRESS"
KERNEL_DIED = "KernelDied"
_STUDENT = ""  # the student this worker grades, for `mark`
IPC_ENV = "LLMCOURSE_KERNEL_IPC"  # the path prefix of the kernel's ZMQ sockets (in its own folder)
CASES_ENV = "LLMCOURSE_CASES"  # a JSON file: {"from": folder, "to": kernel's cases folder, "cells": {grade_id: [file]}}
IOPUB_TIMEOUT = 60  # seconds a cell's outputs may lag behind its reply
TIMES_ENV = "LLMCOURSE_GRADING_TIMES"  # a file: where each student's grading spends its time (for benchmarks)


def mark(student: str, stage: str, t: float | None = None) -> None:
    """Append (student, stage, time) to the file named by LLMCOURSE_GRADING_TIMES, when it is set: the moment
    `stage` of a student's grading ended. For profiling the grader (benchmarks/grading.py); otherwise nothing."""
    path = os.environ.get(TIMES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"student": student, "stage": stage, "t": time.time() if t is None else t}) + "\n")


def cell_digest(source: str) -> str:
    """How the grader recognises a cell in the progress file (the source notebook's locked cells included)."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _progress(**event) -> None:
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


def stage_cases(grade_id: str | None) -> None:
    """Leave in the kernel's cases folder exactly the case files of test cell `grade_id` (none for another cell,
    or None): a cell sees the hidden inputs of no test but its own, and only while it runs."""
    if not os.environ.get(CASES_ENV):
        return
    plan = json.loads(Path(os.environ[CASES_ENV]).read_text())
    to = Path(plan["to"])
    wanted = plan["cells"].get(grade_id, []) if grade_id else []
    for old in os.scandir(to):
        if old.name not in wanted:
            os.unlink(old.path)
    for name in wanted:
        if not (to / name).exists():
            shutil.copyfile(Path(plan["from"]) / name, to / f".{name}")
            os.chmod(to / f".{name}", 0o644)
            os.replace(to / f".{name}", to / name)


class TracedExecute(Execute):
    """nbgrader's Execute, telling the grader which cell runs, keeping what ran when the kernel dies, and handing
    each test cell its cases while it runs."""

    def preprocess_cell(self, cell, resources, index):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type == "code" and cell.source.strip():
            if self._running is None:
                mark(_STUDENT, "kernel started")
            _progress(event="cell", index=index, digest=cell_digest(cell.source), grade_id=grade_id)
            self._running = cell
        stage_cases(grade_id if cell.cell_type == "code" else None)
        try:
            return super().preprocess_cell(cell, resources, index)
        finally:
            stage_cases(None)

    def preprocess(self, nb, resources=None, km=None):
        self._running = None
        mark(_STUDENT, "nbgrader ready to execute")
        try:
            nb, resources = super().preprocess(nb, resources, km)
        except DeadKernelError as err:
            if self._running is None:  # died before any cell: the kernel could not start
                _progress(event="start-failed", message=str(err)[:500])
                raise
            _progress(event="died", message=str(err)[:500])
            self._running.outputs.append({
                "output_type": "error", "ename": KERNEL_DIED,
                "evalue": "the kernel died while this cell ran; the cells after it did not run",
                "traceback": [f"{KERNEL_DIED}: the kernel died while this cell ran"]})
            return self.nb, self.resources
        _progress(event="finished")
        mark(_STUDENT, "cells ran")
        return nb, resources


def autograde_worker(course: str, assignment: str, student: str, cell_timeout: str) -> int:
    """Entry point of the worker process: nbgrader autograde with the sandbox kernel."""
    global _STUDENT
    _STUDENT = student
    api = nbgrader_api(Path(course), source="source", release="release", work=".", scratch=True, kernel=KERNEL_NAME,
                       cell_timeout=int(cell_timeout))
    from nbgrader.converters import Autograde

    if os.environ.get(IPC_ENV):  # no TCP: the kernel has no network
        api.config.KernelManager.transport = "ipc"
        api.config.KernelManager.ip = os.environ[IPC_ENV]
    # After a cell's reply, its last outputs may come seconds later on a loaded machine (the kernel's IOPub thread
    # waits for a core): nbclient's 4 s default then failed the instructor's set-up cell.
    api.config.Execute.iopub_timeout = IOPUB_TIMEOUT
    steps = Autograde.class_traits()["autograde_preprocessors"].default()
    api.config.Autograde.autograde_preprocessors = [TracedExecute if s is Execute else s for s in steps]
    result = api.autograde(assignment, student, force=True)
    if not result["success"]:
        print(result.get("log") or "", file=sys.stderr)
        print((result.get("error") or "autograde failed").strip().splitlines()[-1], file=sys.stderr)
        return 1
    mark(student, "nbgrader wrote the autograded notebook")
    return 0


def serve() -> int:
    """Entry point of a lasting worker: for each line of JSON on stdin, {"args": [COURSE, ASSIGNMENT, STUDENT,
    TIMEOUT], "env": {name: value}, "log": FILE}, grade that student with `autograde_worker`, the worker's stdout
    and stderr (and its kernel's, until the sandbox takes them) going to FILE, then answer {"rc": 0 or 1} on a
    line of the original stdout. Nothing of a student but the answer is kept; ends with its stdin."""
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")  # not inherited by the kernels it starts
    for line in sys.stdin:
        request = json.loads(line)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.update(request["env"])
        mark(request["args"][2], "worker took the student")
        try:
            rc = autograde_worker(*request["args"])
        except Exception:  # a fault of the machine or of nbgrader: the grader reads it in the log
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
        answers.write(json.dumps({"rc": rc}) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    mark(sys.argv[3], "worker python started", _STARTED)
    mark(sys.argv[3], "worker imports")
    sys.exit(autograde_worker(*sys.argv[1:5]))
