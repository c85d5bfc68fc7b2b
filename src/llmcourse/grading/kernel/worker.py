"""The worker processes that `autograde` starts: nbgrader autograde with the sandbox kernel.

It is a module of its own so that a student's kernel, and nbgrader's global logging, stay out of the grader's
process. `python -m llmcourse.grading.kernel.worker --serve` grades students one after another, one request a line on
its stdin (the grader keeps one such worker per job, so that each student does not pay for a new Python process
and nbgrader's imports); `python -m llmcourse.grading.kernel.worker COURSE ASSIGNMENT STUDENT TIMEOUT` grades one
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
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

# jsonschema imports rfc3987_syntax, when installed, to check IRI formats; nbformat's notebook schema has none, and
# building that package's grammar at import costs 1-3 s in every worker (one per student). Its absence is allowed
# for: jsonschema then leaves those formats unchecked.
sys.modules.setdefault("rfc3987_syntax", None)

import nbformat  # noqa: E402
from nbclient.exceptions import DeadKernelError  # noqa: E402
from nbgrader.preprocessors import Execute  # noqa: E402

from llmcourse.grading.course import nbgrader_api  # noqa: E402

KERNEL_NAME = "llmcourse-sandbox"
PROGRESS_ENV = "LLMCOURSE_PROGRESS"
NOTEBOOK_CPU_ENV = "LLMCOURSE_NOTEBOOK_CPU"  # seconds of CPU time the whole notebook's kernel may use
FAULT_ENV = "LLMCOURSE_FAULT"  # tests only, set by the grader (never by a kernel): "setup" fails the set-up cell
WALL_FACTOR = 5  # a cell (and a notebook) is stopped after this many times its CPU limit in wall-clock time
CELL_OUTPUT_CHARS = 2_000_000  # what one cell's outputs may hold, as they arrive; the rest is cut
ONE_OUTPUT_CHARS = 200_000  # what one output (a print, a display, an error) may hold, as it arrives
NOTEBOOK_OUTPUT_CHARS = 16_000_000  # what all the outputs of a notebook may hold
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


def _stat(pid) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()


def _cpu_seconds(pid: int, descendants: bool = True) -> float:
    """CPU time (user + system) of a process and of the children it has waited for; with `descendants`, also of
    the processes below it that still run (a kernel the sandbox started as a child, a student's subprocesses)."""
    children, cpu = {}, {}
    for name in os.listdir("/proc") if descendants else [str(pid)]:
        if name.isdigit():
            try:
                fields = _stat(name)
                children.setdefault(int(fields[1]), []).append(int(name))
                cpu[int(name)] = sum(int(x) for x in fields[11:15])
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0)
        todo += children.get(p, []) if descendants else []
    return total / os.sysconf("SC_CLK_TCK")


def _cut_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [output cut (truncated): {len(text):,} characters in all]\n"


def _bounded(content: dict, msg_type: str) -> tuple[dict, int]:
    """An output message's content with each part cut to ONE_OUTPUT_CHARS, and its size after that."""
    if msg_type == "stream":
        content["text"] = _cut_text(str(content.get("text", "")), ONE_OUTPUT_CHARS)
        return content, len(content["text"])
    if msg_type == "error":
        content["ename"] = _cut_text(str(content.get("ename", "")), 1000)
        content["evalue"] = _cut_text(str(content.get("evalue", "")), ONE_OUTPUT_CHARS)
        lines = content.get("traceback") if isinstance(content.get("traceback"), list) else []
        kept, size = [], 0
        for line in lines[:200]:
            line = _cut_text(str(line), 20_000)
            size += len(line)
            if size > ONE_OUTPUT_CHARS:
                kept.append("... [traceback cut (truncated)]")
                break
            kept.append(line)
        content["traceback"] = kept
        return content, len(content["evalue"]) + size
    data = content.get("data") if isinstance(content.get("data"), dict) else {}
    size = 0
    for mime in list(data):
        value = data[mime] if isinstance(data[mime], str) else json.dumps(data[mime])
        if len(value) > ONE_OUTPUT_CHARS:
            del data[mime]
            data.setdefault("text/plain", f"[an output of type {mime[:60]} and {len(value):,} characters was cut "
                                          "(truncated)]")
        else:
            size += len(value)
    return content, size


class TracedExecute(Execute):
    """nbgrader's Execute, telling the grader which cell runs, keeping what ran when the kernel dies, and handing
    each test cell its cases while it runs.

    Its limits measure what the notebook's code costs, not how busy the machine is: a cell is interrupted
    when its kernel has used the cell's limit in CPU time (a watch thread reads /proc), and the notebook when
    its kernel has used NOTEBOOK_CPU_ENV seconds of CPU (the cells after that are not run); the wall-clock
    limit of a cell is WALL_FACTOR times its CPU limit (a cell that sleeps or waits). Outputs are cut as they
    arrive (ONE_OUTPUT_CHARS each, CELL_OUTPUT_CHARS a cell), so a notebook that prints gigabytes cannot
    fill this process's memory."""

    def _get_timeout(self, cell):
        return None if self.timeout is None else self.timeout * WALL_FACTOR

    def output(self, outs, msg, display_id, cell_index):
        used = self._output_chars.get(cell_index, 0)
        if used >= CELL_OUTPUT_CHARS or sum(self._output_chars.values()) >= NOTEBOOK_OUTPUT_CHARS:
            if cell_index not in self._output_cut:
                self._output_cut.add(cell_index)
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
                    "\n... [the cell's further output was cut (truncated): the cell's or the notebook's outputs "
                    f"reached {min(used, CELL_OUTPUT_CHARS):,} / {NOTEBOOK_OUTPUT_CHARS:,} characters]\n")))
            return None
        msg["content"], size = _bounded(dict(msg.get("content") or {}), msg.get("msg_type", ""))
        self._output_chars[cell_index] = used + size
        return super().output(outs, msg, display_id, cell_index)

    def _watch(self) -> None:
        """Interrupt the running cell when its kernel has used its CPU limit, or the notebook its own. The kernel's
        own process is read every second, the processes below it every 5 s (a scan of /proc)."""
        tick, below, again = 0, 0.0, False
        while not self._done.wait(0.1 if again else 1.0):
            process = getattr(getattr(self.km, "provisioner", None), "process", None)
            with self._lock:
                cell, start = self._running, self._cell_cpu_start
            again = cell is not None and self._interrupted is cell
            if process is None or cell is None or start is None:
                continue
            if again:  # interrupted, and may still run: interrupt it again (see _interrupt)
                self._interrupt(process, cell)
                continue
            own = _cpu_seconds(process.pid, descendants=False)
            if tick % 5 == 0:
                below = _cpu_seconds(process.pid) - own
            tick += 1
            used = own + below
            over_cell = self.timeout and used - start > self.timeout
            over_notebook = self._notebook_cpu and used > self._notebook_cpu
            if over_cell or over_notebook:
                self._interrupted, again = cell, True
                self._stopped_by = "notebook" if over_notebook else "cell"
                self._interrupt(process, cell)

    def _interrupt(self, process, cell) -> None:
        """SIGINT to the kernel while `cell` is the one running, sent every 0.1 s until the cell ends: Python runs
        a signal's handler at the next point it can, and where that is inside an at-fork hook (a cell that forks in
        a loop) the KeyboardInterrupt is printed as "ignored" and lost. Under the lock that `preprocess_cell` takes
        to start the next cell: a signal meant for this cell never reaches the next one."""
        with self._lock:
            if self._running is cell:
                try:
                    process.send_signal(signal.SIGINT)
                except OSError:
                    pass

    def preprocess_cell(self, cell, resources, index):
        if not (cell.cell_type == "code" and cell.source.strip()):
            return super().preprocess_cell(cell, resources, index)
        if self._running is None:
            mark(_STUDENT, "kernel started")
        _progress(event="cell", index=index, digest=cell_digest(cell.source),
                  grade_id=cell.metadata.get("nbgrader", {}).get("grade_id"))
        if self._out_of_time:
            cell.outputs = [nbformat.v4.new_output("error", ename="NotebookTimeLimit", evalue=self._out_of_time,
                                                   traceback=[f"NotebookTimeLimit: {self._out_of_time}"])]
            return cell, resources
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        start = _cpu_seconds(process.pid) if process is not None else None
        with self._lock:
            self._running, self._cell_cpu_start = cell, start
        source = cell.source
        meta = cell.metadata.get("nbgrader", {})
        if self._fault == "setup" and meta.get("locked") and not meta.get("grade"):
            self._fault = ""  # the first instructor cell fails, once: as a broken machine would make it
            cell.source = 'raise RuntimeError("a fault injected by the test suite into the set-up cell")'
        stage_cases(meta.get("grade_id"))
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        finally:
            cell.source = source
            stage_cases(None)
        if self._interrupted is cell:
            if self._stopped_by == "notebook":
                self._out_of_time = (f"the notebook used more than {self._notebook_cpu:g} s of CPU time (the "
                                     "notebook's time limit); this cell was stopped and the cells after it did "
                                     "not run")
                _progress(event="cpu-limit", index=index)
                message = self._out_of_time
            else:
                message = (f"the cell ran longer than {self.timeout} s of CPU time and was stopped (an endless "
                           "loop?)")
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "error"] + [
                nbformat.v4.new_output("error", ename="CellTimeoutError", evalue=message,
                                       traceback=[f"CellTimeoutError: {message}"])]
        return cell, resources

    def preprocess(self, nb, resources=None, km=None):
        self._running, self._cell_cpu_start, self._interrupted, self._stopped_by = None, None, None, ""
        self._output_chars, self._output_cut, self._out_of_time = {}, set(), ""
        self._notebook_cpu = float(os.environ.get(NOTEBOOK_CPU_ENV) or 0)
        self._fault = os.environ.get(FAULT_ENV, "")
        self._done, self._lock = threading.Event(), threading.Lock()
        watch = threading.Thread(target=self._watch, daemon=True, name="llmcourse-cpu-watch")
        watch.start()
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
        finally:
            self._done.set()
        _progress(event="finished")
        mark(_STUDENT, "cells ran")
        return nb, resources


def autograde_worker(course: str, assignment: str, student: str, cell_timeout: str, shown: str | None = None) -> int:
    """Entry point of the worker process: nbgrader autograde with the sandbox kernel (`shown`: the student's
    name in `mark`, when nbgrader's id differs)."""
    global _STUDENT
    _STUDENT = shown or student
    api = nbgrader_api(Path(course), source="source", release="release", work=".", scratch=True, kernel=KERNEL_NAME,
                       cell_timeout=int(cell_timeout))
    from nbgrader.converters import Autograde

    if os.environ.get(IPC_ENV):  # no TCP: the kernel has no network
        api.config.KernelManager.transport = "ipc"
        api.config.KernelManager.ip = os.environ[IPC_ENV]
    # After a cell's reply, its last outputs may come seconds later on a loaded machine (the kernel's IOPub thread
    # waits for a core): nbclient's 4 s default then failed the instructor's set-up cell.
    api.config.Execute.iopub_timeout = IOPUB_TIMEOUT
    wall = int(cell_timeout) * WALL_FACTOR
    waited = (f"the cell ran longer than {cell_timeout} s (its limit) and was stopped: {wall} s passed on the clock "
              f"before it had used {cell_timeout} s of CPU time (it waited, in sleep or for input, or the machine "
              "was overloaded)")
    api.config.Execute.error_on_timeout = {"ename": "CellTimeoutError", "evalue": waited,
                                           "traceback": [f"CellTimeoutError: {waited}"]}
    steps = Autograde.class_traits()["autograde_preprocessors"].default()
    api.config.Autograde.autograde_preprocessors = [TracedExecute if s is Execute else s for s in steps]
    result = api.autograde(assignment, student, force=True)
    if not result["success"]:
        print(result.get("log") or "", file=sys.stderr)
        print((result.get("error") or "autograde failed").strip().splitlines()[-1], file=sys.stderr)
        return 1
    mark(_STUDENT, "nbgrader wrote the autograded notebook")
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
        mark(request.get("mark", request["args"][2]), "worker took the student")
        try:
            rc = autograde_worker(*request["args"], shown=request.get("mark"))
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
