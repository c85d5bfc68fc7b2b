"""`llmcourse grade --scheduler`: grading on a Dask cluster gives the CSV of a local run, byte for byte, even when a
worker dies mid-notebook; a worker with another version of the course is refused.

The cluster is real and local: `dask scheduler` and `dask worker` processes on the loopback interface, started
and stopped here (README, "Grading on a Dask cluster")."""
from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import psutil

from conftest import REPO, plant, planted_for
from llmcourse import cli, grading
from llmcourse.grading.batch import cluster
from llmcourse.grading.batch.rows import CANARY

ASSIGNMENT = "01_tokens"
DASK = Path(sys.executable).with_name("dask")
WORKER_MODULE = "llmcourse.grading.kernel.worker"  # the grading processes of a worker's pool (workers.Worker)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A scheduler and workers as separate processes, as an instructor starts them with dask's own CLI."""

    def __init__(self, logs: Path):
        self.logs, self.port = logs, free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.seen: set[psutil.Process] = set()  # every process the cluster started, to stop them all at the end
        logs.mkdir(parents=True, exist_ok=True)
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])

    def _start(self, name: str, args: list[str], pythonpath: Path = REPO / "src") -> None:
        env = {**os.environ, "PYTHONPATH": str(pythonpath), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "3"}
        log = open(self.logs / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen([str(DASK), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.logs, start_new_session=True)

    def add_worker(self, name: str, pythonpath: Path = REPO / "src") -> None:
        """A worker process without a nanny (a killed worker stays dead), one thread: one notebook at a time."""
        self._start(name, ["worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny",
                           "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(self.logs / name)],
                    pythonpath)

    def wait_for(self, workers: int) -> None:
        from distributed import Client

        # generous: on a busy machine (the book building beside the suite) a worker takes minutes to import
        with Client(self.address, timeout=600) as client:
            client.wait_for_workers(workers, timeout=900)

    def descendants(self, name: str) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.procs[name].pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen.update(found)
        return found

    def grading(self, name: str) -> str | None:
        """The student whose notebook the worker `name` is grading now (not its canary), if any: a grading
        process of its pool with a sandboxed kernel running, and the student's course folder it writes its log in."""
        for proc in self.descendants(name):
            course = _course_of(proc)
            try:
                busy = course and any("sandbox.py" in " ".join(c.cmdline()) for c in proc.children(recursive=True))
                student = busy and os.fsdecode((course / "grading-whom").read_bytes())
            except (psutil.Error, OSError):
                continue
            if student and student != CANARY:
                return student
        return None

    def kill(self, name: str) -> None:
        """SIGKILL a worker and everything it started, as when its machine is lost; then remove the folders it
        graded in and its kernel's folder in /tmp (a lost machine takes them along)."""
        below = self.descendants(name)
        self.procs[name].kill()
        self.procs[name].wait()
        folders = set()
        for proc in below:
            course = _course_of(proc)  # WORK/students/sN
            if course:
                folders.add(course.parents[1])
            try:  # a sandboxed kernel: python -I KERNEL_DIR/sandbox.py KERNEL_DIR/settings.json ...
                folders |= {Path(arg).parent for arg in proc.cmdline() if arg.endswith("/sandbox.py")}
            except psutil.Error:
                pass
            _kill(proc)
        for folder in folders:
            if folder.name.startswith(("llmcourse-worker-", "llmcourse-kernel-")):
                shutil.rmtree(folder, ignore_errors=True)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "scheduler"] + ["scheduler"]:
            self.descendants(name)
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for proc in self.seen:
            _kill(proc)

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs.glob("*.log"))


def _course_of(proc: psutil.Process) -> Path | None:
    """The course folder of the student a grading process (`python -m llmcourse.grading.kernel.worker --serve`) serves
    or served last: the one holding the log it writes to (workers.run_worker)."""
    try:
        if WORKER_MODULE not in proc.cmdline():
            return None
        return next((Path(f.path).parent for f in proc.open_files() if f.path.endswith("worker-log.txt")), None)
    except psutil.Error:
        return None


def _kill(proc: psutil.Process) -> None:
    try:
        proc.kill()
        proc.wait(timeout=10)
    except psutil.Error:
        pass


@contextmanager
def local_cluster(logs: Path):
    started = LocalCluster(logs)
    try:
        yield started
    finally:
        started.stop()


def submissions(folder: Path) -> Path:
    """Five notebooks of 01_tokens for the workers (full marks, untouched, three planted mistakes) and one that
    cannot be read (its row is written by the coordinator)."""
    solution = nbformat.read(next((REPO / "solutions" / ASSIGNMENT).glob("*.ipynb")), as_version=4)
    planted = planted_for(ASSIGNMENT)
    notebooks = {"ada": solution, "bo": nbformat.read(next((REPO / "exercises" / ASSIGNMENT).glob("*.ipynb")), 4)}
    for student, mistake in [("cy", "cosine_unnormalised"), ("di", "positions_sin_cos_swapped"),
                             ("eve", "encode_bytes_only")]:
        notebooks[student] = plant(solution, planted[mistake]["cell"], planted[mistake]["source"])
    for student, nb in notebooks.items():
        (folder / student).mkdir(parents=True)
        nbformat.write(nb, folder / student / "work.ipynb")
    (folder / "fay").mkdir()
    (folder / "fay" / "work.ipynb").write_text("{ not a notebook")
    return folder


def test_a_cluster_that_loses_a_worker_grades_as_this_machine_does(tmp_path):
    subs = submissions(tmp_path / "submissions")
    local = grading.grade(subs, ASSIGNMENT, out=tmp_path / "local" / "grades.csv", feedback=tmp_path / "local" / "fb",
                          progress=False)
    killed: dict[str, str] = {}
    with local_cluster(tmp_path / "cluster") as dask:
        dask.add_worker("w1")
        dask.add_worker("w2")
        dask.wait_for(2)

        def kill_the_first_worker_that_grades_a_student():
            deadline = time.monotonic() + 300
            while not killed and time.monotonic() < deadline:
                for name in ("w1", "w2"):
                    student = dask.grading(name)
                    if student:
                        dask.kill(name)
                        killed.update(worker=name, student=student)
                        break
                time.sleep(0.1)

        killer = threading.Thread(target=kill_the_first_worker_that_grades_a_student)
        killer.start()
        try:
            rows = grading.grade(subs, ASSIGNMENT, out=tmp_path / "cluster" / "grades.csv",
                                 feedback=tmp_path / "cluster" / "fb", scheduler=dask.address, progress=False)
        finally:
            killer.join()
        log = dask.log()
    assert killed, "no worker was seen grading a student:\n" + log
    assert dask.procs[killed["worker"]].returncode == -signal.SIGKILL
    assert (tmp_path / "cluster" / "grades.csv").read_bytes() == (tmp_path / "local" / "grades.csv").read_bytes(), log
    by_student = {r.student: r for r in rows}
    assert by_student[killed["student"]].clean, by_student[killed["student"]]  # graded again, by the other worker
    assert by_student["ada"].score == by_student["ada"].max_score and by_student["bo"].score == 0
    assert by_student["fay"].status.startswith("not graded: unreadable notebook")
    assert sorted(p.name for p in (tmp_path / "cluster" / "fb").glob("*.html")) == \
        sorted(p.name for p in (tmp_path / "local" / "fb").glob("*.html")) == [f"{s}.html" for s in local_graded(local)]


def local_graded(rows) -> list[str]:
    return sorted(r.student for r in rows if r.status.startswith("graded"))


def test_a_worker_with_another_course_is_refused(tmp_path, capsys):
    """`llmcourse grade --scheduler` stops with status 3 and a message naming the worker and both versions."""
    other = tmp_path / "other"
    shutil.copytree(REPO / "src", other / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "solutions", other / "solutions")
    with open(other / "src" / "llmcourse" / "checks" / "__init__.py", "a") as f:
        f.write("# a later edit of the checks, not installed on the instructor's machine\n")
    subs = submissions(tmp_path / "submissions")
    with local_cluster(tmp_path / "cluster") as dask:
        dask.add_worker("old", pythonpath=other / "src")
        dask.wait_for(1)
        status = cli.main(["grade", str(subs), "--assignment", ASSIGNMENT, "--out", str(tmp_path / "grades.csv"),
                           "--scheduler", dask.address])
    message = capsys.readouterr().err
    assert status == 3, message
    ours = cluster.course_version(REPO)
    assert "has another version of the course" in message and ours in message, message
    theirs = set(re.findall(r"\b[0-9a-f]{16}\b", message)) - {ours}
    assert theirs, f"the worker's own version is not named: {message}"
    assert "127.0.0.1" in message and "same commit" in message
    assert not (tmp_path / "grades.csv").exists()


def test_a_notebook_whose_workers_keep_dying_gets_a_row_saying_so():
    from distributed import KilledWorker

    class Failed:
        status = "error"

        def exception(self):
            return KilledWorker("llmcourse-grade-01_tokens-x-0", None, 3)

    row, html = cluster._outcome(Failed(), grading.Row("ada", ASSIGNMENT, max_score=10), __import__("distributed"))
    assert row.score is None and html is None and not row.clean
    assert row.status.startswith("not graded: the worker grading it died 4 times"), row.status


def test_a_local_run_does_not_import_dask():
    code = ("import sys, llmcourse.cli, llmcourse.grading.batch.pipeline, llmcourse.grading.batch.local; "
            "assert not {'dask', 'distributed'} & set(sys.modules), 'dask imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


DASK_ATTACK = '''
import pathlib
try:
    from distributed import Client
    from llmcourse.grading.batch import judge
    def full_marks():  # runs in the worker's process, as root, if the kernel reaches the scheduler
        from llmcourse.grading.batch import judge
        pathlib.Path({marker!r}).write_text("ran in the worker")
        judge.judge = lambda cells, records, cases=None: [
            judge.Verdict(c.grade_id, c.points, c.points, c.hidden, "") for c in cells]
    with Client({address!r}, timeout=5) as client:  # time enough for a scheduler it can reach
        client.run(full_marks)
    print("ATTACK reached the cluster")
except Exception as err:
    print("ATTACK failed:", type(err).__name__)
def cosine_similarity(a, b):
    raise NotImplementedError
'''


def test_a_kernel_on_a_worker_cannot_reach_the_cluster(tmp_path):
    """Issue 27, item 2: a stub whose kernel connects to the scheduler (`distributed.Client`) and runs a function
    in the worker (`Client.run`: as root, beside the judge) scores 0; the function never runs."""
    marker = tmp_path / "ran-in-worker.txt"
    with local_cluster(tmp_path / "cluster") as dask:
        stub = nbformat.read(next((REPO / "exercises" / ASSIGNMENT).glob("*.ipynb")), as_version=4)
        cell = next(c for c in stub.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "cosine_similarity")
        cell.source = DASK_ATTACK.format(marker=str(marker), address=dask.address)
        (tmp_path / "submissions" / "mallory").mkdir(parents=True)
        nbformat.write(stub, tmp_path / "submissions" / "mallory" / "work.ipynb")
        dask.add_worker("w1")
        dask.wait_for(1)
        rows = grading.grade(tmp_path / "submissions", ASSIGNMENT, out=tmp_path / "grades.csv",
                             feedback=tmp_path / "fb", scheduler=dask.address, progress=False)
        log = dask.log()
    assert not marker.exists(), "a kernel ran a function in the Dask worker's process"
    row = rows[0]
    assert row.clean and row.score == 0, (row.status, row.cells, log)
    page = html.unescape(re.sub(r"<[^>]+>", "", (tmp_path / "fb" / "mallory.html").read_text()))
    said = [line.strip() for line in page.splitlines() if line.strip().startswith("ATTACK")]  # its output
    assert said and said[0].startswith("ATTACK failed"), said
