"""`llmcourse grade ... --scheduler ADDRESS`: the same grading, run by the workers of a Dask cluster.

The coordinator (the instructor's `llmcourse grade`) reads the submissions, answers what the cache already knows,
and sends each other student's notebook, as bytes, to the cluster with the batch's assignment, limits and the
course version it expects. A worker grades it with its own installation of the course, which must be the same:
it prepares the batch once per process (template, cases, stubbed package, as a local run does), grades the
instructor's solution first (the canary, on every worker, since the workers are the machines that grade), then runs
the same per-student function as a local run (`attempts.autograde_safely`: sandboxed kernel, limits, judging
outside the kernel) and sends back the row and the feedback page. The coordinator writes the CSV, the feedback and
the cache exactly as a local run does.

A worker that dies mid-notebook loses nobody: the scheduler gives its tasks to another worker; a notebook whose
workers died more often than the scheduler allows (`distributed.scheduler.allowed-failures`, 3 by default) gets a
row saying so, never a zero. A worker whose course differs, or whose canary fails, stops the batch with a message
that names it (nothing is graded with another course, nor by a broken machine).

Explained in: README.md, section "Grading on a Dask cluster".
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.metadata
import itertools
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import nbformat
from tqdm import tqdm

from llmcourse.grading.batch import judge
from llmcourse.grading.batch.attempts import autograde_safely
from llmcourse.grading.batch.cache import keep, look_up
from llmcourse.grading.batch.canary import GradingEnvironmentError, grade_canary
from llmcourse.grading.batch.prepare import UID_BLOCK, batch_setting
from llmcourse.grading.batch.rows import Row
from llmcourse.grading.course import REPO

RETRIES = 2  # runs of a task that raised (a worker's disk full, a lost file), besides the first, on any worker
AHEAD = 4  # notebooks sent ahead per worker thread (the rest wait here, not in the scheduler's memory)
WAIT_FOR_WORKERS = 600  # seconds the coordinator waits for a first worker (a cluster that is still scaling up)
STACK = ("nbgrader", "nbclient", "nbformat", "ipykernel", "torch", "numpy")  # what grading runs on, in the version


@functools.cache
def course_version(root: Path = REPO) -> str:
    """What a grade depends on, as 16 hex digits: the llmcourse package's code, the solutions (sources, hidden
    tests) and the versions of Python and of the packages that grading runs on. Equal on two machines when both
    installed the same commit of the course in the same pinned environment; computed once per process."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[2]
    files = [(f"llmcourse/{p.relative_to(package)}", p) for p in package.rglob("*.py")]
    files += [(f"solutions/{p.relative_to(root / 'solutions')}", p) for p in (root / "solutions").rglob("*")
              if p.is_file() and ".ipynb_checkpoints" not in p.parts]
    for name, path in sorted(files):
        h.update(f"{name}\0{len(path.read_bytes())}\0".encode() + path.read_bytes())
    h.update(f"python {sys.version_info[:2]}".encode())
    for name in STACK:
        h.update(f"{name} {importlib.metadata.version(name)}".encode())
    return h.hexdigest()[:16]


def course_label(root: Path = REPO) -> str:
    """The course version with the git commit it was installed from, when there is one (for messages)."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{course_version(root)} (git commit {commit})" if commit else course_version(root)


def mismatch(worker: str, theirs: str, ours: str) -> str:
    """What the instructor reads when a worker's course is not the coordinator's."""
    return (f"The Dask worker {worker} has another version of the course: {theirs}, where the machine running "
            f"`llmcourse grade` has {ours}. "
            "Its grades could differ, so nothing was graded by it and the batch stopped. Install the same commit of "
            "the course, in the same pinned environment (`make venv`), on every worker and on this machine, restart "
            "those workers (or remove that one from the cluster), then run the same command again: the students "
            "already graded are kept in the cache.")


# --- the coordinator --------------------------------------------------------------------------------------


def grade_on_cluster(scheduler, students: list[Path], batch: dict,
                     progress: bool = True) -> list[tuple[Row, str | None]]:
    """Grade the `students` folders on the cluster of `scheduler` (an address such as tcp://host:8786, or a
    `distributed.Client`); returns (row, feedback page or None) for each, as `local.grade_here` does."""
    distributed = _distributed()
    ours = course_version(batch["root"])
    batch = dict(batch, version=hashlib.sha256(f"cluster {ours} {batch['limits']!r}".encode()).hexdigest())
    results, todo = [], []
    for folder in students:
        row, data, known = look_up(folder, batch)
        if known:
            results.append(known)
        else:
            todo.append((row, data))
    if not todo:
        return results
    client = scheduler if isinstance(scheduler, distributed.Client) else _connect(distributed, scheduler)
    futures: dict = {}
    try:
        _check_workers(client, ours, course_label(batch["root"]))
        running, waiting, run = distributed.as_completed(loop=client.loop), iter(enumerate(todo)), uuid.uuid4().hex[:8]

        def submit_more() -> None:  # a few notebooks per worker thread in flight, not the whole class in memory
            room = AHEAD * max(sum(client.nthreads().values()), 1) - running.count()  # none: wait for one
            for i, (row, data) in itertools.islice(waiting, max(room, 0)):
                future = client.submit(grade_remote, row.student, data, batch["assignment"], batch["limits"], ours,
                                       key=f"llmcourse-grade-{batch['assignment']}-{run}-{i}", retries=RETRIES,
                                       pure=False)
                futures[future] = row, data
                running.add(future)

        submit_more()
        with tqdm(total=len(todo), desc=f"grading {batch['assignment']} on {client.scheduler.address}",
                  unit="student", disable=not progress) as bar:
            for future in running:
                row, data = futures.pop(future)
                results.append(keep(data, *_outcome(future, row, distributed), batch))
                bar.update()
                submit_more()
    finally:
        client.cancel(list(futures))
        if client is not scheduler:
            client.close()
    return results


def _distributed():
    try:
        import distributed
    except ImportError as err:
        raise SystemExit(f"--scheduler needs Dask's `distributed` ({err}): install the versions pinned in "
                         "requirements.txt (`.venv/bin/pip install dask==2026.8.0 distributed==2026.8.0`).")
    return distributed


def _connect(distributed, address: str):
    try:
        return distributed.Client(address, timeout=30)
    except (OSError, TimeoutError) as err:
        raise SystemExit(f"Could not reach the Dask scheduler at {address} ({type(err).__name__}: {err}). Is it "
                         "running (`dask scheduler`), and is its port open from this machine?")


def _check_workers(client, ours: str, label: str) -> None:
    """Refuse a cluster with a worker whose course is not ours, before any student is sent (a worker that joins
    later is checked by each of its tasks)."""
    try:
        client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS)
    except TimeoutError:
        raise SystemExit(f"The Dask scheduler {client.scheduler.address} has had no worker for {WAIT_FOR_WORKERS} s: "
                         "start some (`dask worker ADDRESS`, or scale the cluster) and run the command again.")
    versions = client.run(_worker_version, on_error="return")
    wrong = {w: v for w, v in versions.items() if v != ours}
    if wrong:
        worker, theirs = sorted(wrong.items())[0]
        if isinstance(theirs, BaseException):
            theirs = f"unknown (it could not tell: {type(theirs).__name__}: {theirs})"
        others = f" ({len(wrong) - 1} other worker(s) too)" if len(wrong) > 1 else ""
        raise GradingEnvironmentError(mismatch(worker + others, theirs, label))


def _outcome(future, row: Row, distributed) -> tuple[Row, str | None]:
    """A task's row and feedback; a row saying why, when the cluster could not grade the notebook; raise when a
    worker refused the batch (another course, a failed canary)."""
    if future.status == "error":
        err = future.exception()
        row.score = None
        if isinstance(err, distributed.KilledWorker):
            row.status = (f"not graded: the worker grading it died {err.allowed_failures + 1} times (on as many "
                          "workers, or restarts of one: the notebook may exhaust a machine's memory, or the workers "
                          "are unstable); run the command again to regrade it")
        else:
            row.status = (f"not graded: grading failed on the cluster {RETRIES + 1} times "
                          f"({type(err).__name__}: {err})")[:500]
        return row, None
    verdict, *result = future.result()
    if verdict == "refused":
        raise GradingEnvironmentError(result[0])
    return result[0], result[1]


# --- the worker ---------------------------------------------------------------------------------------------

_SETTINGS: dict[tuple, dict | str] = {}  # (assignment, limits) -> the prepared batch, or why this worker cannot grade
_PREPARING = threading.Lock()
_INDEX = itertools.count()  # this process's students: their folders and kernel users never meet another's


def _worker_version() -> str:
    return course_version(REPO)


def grade_remote(student: str, data: bytes, assignment: str, limits, expected: str) -> tuple:
    """The task on a worker: ('graded', row, feedback page or None), or ('refused', why) when this worker has
    another course than the coordinator's or fails its canary. Runs the same function as a local run."""
    from distributed import get_worker

    worker = get_worker()
    if course_version(REPO) != expected:
        return "refused", mismatch(worker.address, course_label(REPO), expected)
    setting = _worker_setting(assignment, limits, worker.address, worker.local_directory)
    if isinstance(setting, str):
        return "refused", setting
    row = Row(student, assignment, max_score=sum(c.points for c in setting["cells"]))
    row, html = autograde_safely(student, next(_INDEX) % UID_BLOCK, data, row, setting)
    return "graded", row, html


def _worker_setting(assignment: str, limits, here: str, scratch: str) -> dict | str:
    """The batch prepared from this worker's own installation, once per process, after its canary; or why this
    worker cannot grade (kept, so that every later task is refused at once). Prepared in the worker's own scratch
    folder, which Dask removes when the worker stops, or when the next worker starts after it was killed."""
    with _PREPARING:
        if (assignment, repr(limits)) in _SETTINGS:
            return _SETTINGS[assignment, repr(limits)]
        if not (REPO / "solutions" / assignment).is_dir():
            _SETTINGS[assignment, repr(limits)] = f"The Dask worker {here} has no assignment '{assignment}'."
            return _SETTINGS[assignment, repr(limits)]
        work = Path(tempfile.mkdtemp(prefix="llmcourse-worker-", dir=scratch))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        source = next((REPO / "solutions" / assignment).glob("*.ipynb"))
        source_nb = nbformat.read(source, as_version=4)
        batch = dict(assignment=assignment, source=source, source_nb=source_nb, cells=judge.test_cells(source_nb),
                     limits=limits, cache=work / "cache", force=True, root=REPO)
        setting = batch_setting(work, batch, [])
        try:
            grade_canary(source, next(_INDEX) % UID_BLOCK, setting)
        except GradingEnvironmentError as err:
            setting = f"On the Dask worker {here}: {err}"
        _SETTINGS[assignment, repr(limits)] = setting
        return setting

