"""One run of a notebook in a fresh sandboxed kernel (`run_once`), by a worker process of this machine's pool
(`Worker`, `python -m llmcourse.grading.kernel.worker --serve`): the kernel's private folder and kernelspec, the
request to the worker with the notebook's time limits, then whatever the kernel left running killed and its
folder removed.

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from llmcourse.checks.core import case_key
from llmcourse.data import DATA_DIR
from llmcourse.grading.batch import judge, prepare
from llmcourse.grading.batch.limits import Limits
from llmcourse.grading.kernel import sandbox
from llmcourse.grading.kernel.sandbox import scratch_folder
from llmcourse.grading.kernel.worker import (CASES_ENV, FAULT_ENV, IPC_ENV, KERNEL_NAME, NOTEBOOK_CPU_ENV,
                                             PROGRESS_ENV, TIMES_ENV, WALL_FACTOR, mark)

NB_STUDENT = "student"  # the student's id in nbgrader's layout of each private course folder (whatever the folder)
# Tests only: {student folder name: how many of its first runs get a failing set-up cell}. A fault injected by the
# grader into the worker's request (never reachable from a kernel), to prove that the instructor's cells are retried.
INJECT_SETUP_FAULTS: dict[str, int] = {}
_FAULTS_LOCK = threading.Lock()


def take_fault(student: str) -> str:
    with _FAULTS_LOCK:
        if INJECT_SETUP_FAULTS.get(student, 0) > 0:
            INJECT_SETUP_FAULTS[student] -= 1
            return "setup"
    return ""


@dataclass
class Attempt:
    """One run of a notebook in a fresh kernel."""
    stopped: str            # '' or what went wrong with the worker
    records: dict
    notes: str              # the sandbox's own notes
    output: str             # the tail of the kernel's stdout/stderr and the worker's stderr
    events: list[dict]      # TracedExecute's progress: cells started, then finished / died / start-failed
    student_ran: bool       # some cell that is not the instructor's had started
    instructor_error: str = ""  # an instructor's cell that uses no student code stopped with an error (`attempts`)

    @property
    def kind(self) -> str:
        """ok, timeout, died (after student code ran), instructor (an instructor's cell that runs no student code
        failed: the machine's fault, as the canary passed) or machine (could not start, or died in set-up code)."""
        if self.stopped.startswith("stopped after"):
            return "timeout"
        if self.instructor_error:
            return "instructor"
        last = self.events[-1]["event"] if self.events else ""
        if last == "finished" and not self.stopped:
            return "ok"
        return "died" if self.student_ran else "machine"

    @property
    def where(self) -> tuple[int, str] | None:
        cells = [e for e in self.events if e["event"] == "cell"]
        return (cells[-1]["index"], cells[-1]["digest"]) if cells else None


def run_once(course: Path, student: str, uid: int | None, s: dict) -> Attempt:
    """Autograde the notebook once in a fresh sandboxed kernel, then clear away everything the kernel left."""
    progress = course / "progress.jsonl"
    progress.unlink(missing_ok=True)
    kernel_dir = scratch_folder("llmcourse-kernel-")
    try:
        prepare_kernel(kernel_dir, course, s, uid)
        mark(student, "kernel folder prepared")
        stopped, worker_err = run_worker(course, s["assignment"], student, kernel_dir, s["limits"], progress,
                                         take_fault(student))
        mark(student, "worker ended")
        kill_leftovers(uid, kernel_dir)
        records = judge.read_records(kernel_dir / "records.jsonl")
        notes = tail(kernel_dir / "sandbox-notes.txt", 1000)
        output = "\n".join(filter(None, [kernel_output(kernel_dir / "kernel-output.txt"), worker_err[-1500:]]))
    finally:
        kill_leftovers(uid, kernel_dir)
        shutil.rmtree(kernel_dir, ignore_errors=True)
    mark(student, "kernel cleared away")
    events = []
    if progress.exists():
        for line in progress.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    ran = any(e["event"] == "cell" and e.get("digest") not in s["locked"] for e in events)
    if not stopped and any(e["event"] == "cpu-limit" for e in events):
        stopped = f"stopped after {s['limits'].student_timeout} s of CPU time (the notebook's time limit)"
    return Attempt(stopped, records, notes, output, events, ran)


def kernel_output(path: Path) -> str:
    """What the kernel printed outside any cell: the sandbox's own findings first, then the last lines."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536).decode("utf-8", errors="replace")
    except OSError:
        return ""
    findings = [line for line in head.splitlines() if line.startswith("llmcourse sandbox:")]
    return "\n".join(findings + [tail(path, 3000)])


def tail(path: Path, chars: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - chars))
            return f.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return ""


def prepare_kernel(kernel_dir: Path, course: Path, s: dict, uid: int | None) -> None:
    """The student's kernel folder and the kernelspec that starts it. As root, the folder and what the grader
    put there (the stubbed llmcourse, and each test cell's cases while it runs) belong to root and are read-only
    for the kernel's user, which may write only its records file, its ZMQ sockets (`ipc/`) and, in its
    namespace, its own size-limited scratch folder (`home`)."""
    (kernel_dir / "cases").mkdir()  # each test cell's cases arrive while it runs (worker.stage_cases)
    plan = {"from": str(s["work"] / "cases"), "to": str(kernel_dir / "cases"),
            "cells": {c.grade_id: [f"{case_key(n, p)}.pt" for n, p in c.calls] for c in s["cells"]}}
    (course / "cases.json").write_text(json.dumps(plan))
    shutil.copytree(s["work"] / "site", kernel_dir / "site")
    shutil.copyfile(sandbox.__file__, kernel_dir / "sandbox.py")
    (kernel_dir / "records.jsonl").touch()
    limits: Limits = s["limits"]
    env = {"PATH": f"{Path(prepare.KERNEL_PYTHON).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "LLMCOURSE_GRADING": str(kernel_dir), "LLMCOURSE_DATA": str(DATA_DIR),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    settings = {"kernel_dir": str(kernel_dir), "uid": uid, "hide": s["hide"], "reach": s["reach"], "env": env,
                "pythonpath": str(kernel_dir / "site"), "memory_bytes": limits.memory_bytes,
                "max_processes": limits.max_processes, "max_file_bytes": limits.max_file_bytes,
                "scratch_bytes": limits.scratch_bytes}
    (kernel_dir / "settings.json").write_text(json.dumps(settings))
    for path in kernel_dir.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    (kernel_dir / "ipc").mkdir(mode=0o700)  # the kernel's ZMQ sockets (it has no network)
    if uid is not None:
        os.chown(kernel_dir / "records.jsonl", uid, uid)
        os.chmod(kernel_dir / "records.jsonl", 0o600)
        os.chown(kernel_dir / "ipc", uid, uid)
    os.chmod(kernel_dir, 0o711 if uid is not None else 0o700)
    spec = course / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [prepare.KERNEL_PYTHON, "-I", str(kernel_dir / "sandbox.py"), str(kernel_dir / "settings.json"),
            "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "llmcourse grading",
                                                  "language": "python"}))


def run_worker(course: Path, assignment: str, student: str, kernel_dir: Path, limits: Limits,
               progress: Path, fault: str = "") -> tuple[str, str]:
    """nbgrader autograde of one student, by a worker process of the pool (`Worker`), with a CPU-time limit for
    the notebook (kept by the worker) and a wall-clock limit WALL_FACTOR times as long. `fault`: tests only.
    Returns ('' or what went wrong, the tail of the worker's stderr)."""
    log = course / "worker-log.txt"  # a file, not a pipe: nothing the worker prints can fill our memory
    log.touch(mode=0o600)
    # nbgrader knows every student as NB_STUDENT: who this course folder grades, for whoever watches the machine
    (course / "grading-whom").write_bytes(os.fsencode(student))
    request = {"args": [str(course), assignment, NB_STUDENT, str(limits.cell_timeout)], "log": str(log),
               "mark": student,
               "env": {"JUPYTER_PATH": str(course / "jupyter"), "JUPYTER_RUNTIME_DIR": str(course / "runtime"),
                       PROGRESS_ENV: str(progress), TIMES_ENV: os.environ.get(TIMES_ENV, ""),
                       IPC_ENV: str(kernel_dir / "ipc" / "k"), CASES_ENV: str(course / "cases.json"),
                       NOTEBOOK_CPU_ENV: str(limits.student_timeout), FAULT_ENV: fault}}
    worker = Worker.take()
    stopped = ""
    try:
        rc = worker.ask(request, limits.student_timeout * WALL_FACTOR)
    except TimeoutError:
        rc = None
        stopped = (f"stopped after {limits.student_timeout * WALL_FACTOR} s of wall-clock time (the notebook's time "
                   f"limit: {limits.student_timeout} s of CPU time, and {WALL_FACTOR} times that in all)")
    err = tail(log, 20_000)
    finished = '"finished"' in tail(progress, 200)
    if rc == 0 and finished:
        worker.give_back()  # a worker that answered after a clean run serves the next student
    else:
        worker.kill()  # any doubt about its state: the next student gets a new one
        err = "\n".join(filter(None, [worker.start_output(), err]))
    if os.environ.get("LLMCOURSE_GRADING_LOG"):  # for debugging the grader itself
        with open(os.environ["LLMCOURSE_GRADING_LOG"], "a", encoding="utf-8") as f:
            f.write(err)
    if not stopped and rc != 0:
        last = err.strip().splitlines()[-1:] or [""]
        code = "no answer" if rc is None else f"code {rc}"
        ended = "" if worker.proc.returncode is None else f", the process ended with code {worker.proc.returncode}"
        stopped = f"the grading process failed ({code}{ended}; {last[0][:200]})"
    return stopped, err.strip()[-2000:]


class Worker:
    """A worker process (`python -m llmcourse.grading.kernel.worker --serve`) that grades students one after another,
    each in a fresh sandboxed kernel: one Python start and one import of nbgrader per job rather than per
    student. Idle workers wait in a pool of this process; `grade` starts them early and closes them at its end."""
    MAX_STUDENTS = 50  # then a worker is retired (whatever nbgrader leaks per run does not pile up)
    _idle: list["Worker"] = []
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.started = tempfile.TemporaryFile()  # what it prints before its first request (an import error)
        self.proc = subprocess.Popen([sys.executable, "-m", "llmcourse.grading.kernel.worker", "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.started,
                                     start_new_session=True)
        self.served = 0

    @classmethod
    def take(cls) -> "Worker":
        """An idle worker that is still alive, else a new one."""
        with cls._lock:
            while cls._idle:
                worker = cls._idle.pop()
                if worker.proc.poll() is None:
                    return worker
                worker.close()
        return cls()

    @classmethod
    def start(cls, n: int) -> None:
        """Start workers until n are idle (they import while the grader prepares the assignment)."""
        with cls._lock:
            cls._idle += [cls() for _ in range(n - len(cls._idle))]

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            idle, cls._idle = cls._idle, []
        for worker in idle:
            worker.close()

    def ask(self, request: dict, timeout: float) -> int | None:
        """Send one student; the worker's answer (0: nbgrader wrote the autograded notebook), or None when the
        worker ended without answering. TimeoutError after `timeout` seconds (the worker is then killed)."""
        self.served += 1
        deadline = time.monotonic() + timeout
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # it has ended
            return None
        answer = b""
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise TimeoutError
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    self.kill()
                    return None
                answer += chunk
        try:
            return int(json.loads(answer)["rc"])
        except (ValueError, KeyError, TypeError):
            self.kill()
            return None

    def give_back(self) -> None:
        if self.served >= self.MAX_STUDENTS:
            self.close()
            return
        with self._lock:
            self._idle.append(self)

    def start_output(self) -> str:
        self.started.seek(max(0, self.started.seek(0, 2) - 3000))
        return self.started.read().decode(errors="replace").strip()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()

    def close(self) -> None:
        """End of stdin: the worker ends; killed if it does not within 10 s."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self.proc.stdout.close()
        self.started.close()


def kill_leftovers(uid: int | None, kernel_dir: Path) -> None:
    """Kill whatever the student's kernel left running (a fork bomb's children, a daemon)."""
    if uid is not None:
        pid = os.fork()  # one child as that user (forking the grader is slow): kill(-1) spares only the caller
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                for _ in range(3):  # processes forking while we kill: repeat
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except OSError:  # none left
                        pass
                    time.sleep(0.01)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        return
    marker = f"LLMCOURSE_GRADING={kernel_dir}".encode()
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
