"""Grading on this machine: one sandboxed kernel per student, several at once (the executor of a local
`llmcourse grade`; `llmcourse.grading.pipeline` runs the batch, `llmcourse.grading.cluster` the same per-student
steps on a Dask cluster).

Each student runs in a worker process of its own (nbgrader autograde with the sandbox kernel of
`llmcourse.grading.sandbox`); the points come from `llmcourse.grading.judge`, computed here, outside any
kernel; `llmcourse.grading.feedback` writes the pages.

Explained in: README.md, section "Instructors: grading".
"""
from __future__ import annotations

import compileall
import copy
import csv
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from tqdm import tqdm

from llmcourse.checks.core import case_key
from llmcourse.data import DATA_DIR
from llmcourse.grading import judge
from llmcourse.grading.course import CELL_TIMEOUT, CSV_COLUMNS, nbgrader_api
from llmcourse.grading.feedback import fallback_feedback, feedback_page
from llmcourse.grading.sandbox import scratch_folder, sweep_stale
from llmcourse.grading.stubs import build_stubbed_package
from llmcourse.grading.worker import (CASES_ENV, FAULT_ENV, IPC_ENV, KERNEL_NAME, NOTEBOOK_CPU_ENV, PROGRESS_ENV,
                                      TIMES_ENV, WALL_FACTOR, cell_digest, mark)


@dataclass
class Row:
    """One student's result: a row of grades.csv, plus the score of every graded cell.

    `score` is None (an empty cell in the CSV, never 0) when the notebook was not graded: a fault of the
    grading machine, or a submission the instructor must look at (status says which)."""
    student: str
    assignment: str
    score: float | None = 0.0
    max_score: float = 0.0
    status: str = "graded"
    message: str = ""
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    diagnostics: str = ""  # for the instructor and the canary: kernel output, worker errors (not in the CSV)
    # For the class report (`llmcourse.grading.report`); defaults keep older cache entries loadable.
    messages: dict[str, str] = field(default_factory=dict)  # grade_id -> '' (passed), the message, or HIDDEN_FAILED
    hidden: list[str] = field(default_factory=list)  # grade_ids of the test cells with hidden tests
    seconds: float | None = None  # wall-clock seconds of the notebook's run that decided the grade

    def csv_row(self) -> dict:
        row = {k: v for k, v in asdict(self).items() if k in CSV_COLUMNS}
        row["score"] = "" if self.score is None else self.score
        row["student"] = os.fsencode(self.student).decode("utf-8", errors="replace")
        return row

    @classmethod
    def from_dict(cls, saved: dict) -> "Row":
        """A row saved as JSON (the grade cache): fields added since it was saved take their defaults."""
        return cls(**{**saved, "cells": {k: tuple(v) for k, v in saved.get("cells", {}).items()}})

    @property
    def clean(self) -> bool:
        """Graded from start to end, nothing for the instructor to look at."""
        return self.status == "graded" and self.score is not None


@dataclass
class Limits:
    """What one student's notebook may use while it is graded."""
    cell_timeout: int = CELL_TIMEOUT        # seconds of CPU time per cell, then the cell is interrupted
    student_timeout: int = 600              # seconds of CPU time for the whole notebook, then its grading stops
    # (and WALL_FACTOR times each in wall-clock time: a cell that sleeps or waits is stopped too)
    memory_bytes: int = 4 * 2**30           # address space of the kernel (and of each process it starts)
    max_processes: int = 64                 # processes the kernel may run at once
    max_file_bytes: int = 256 * 2**20       # largest file the kernel may write
    scratch_bytes: int = 512 * 2**20        # room in each of its working folder, /tmp, /var/tmp and /dev/shm (root)

    def described(self) -> str:
        return (f"memory {self.memory_bytes / 2**30:g} GiB, files {self.max_file_bytes // 2**20} MiB, "
                f"{self.max_processes} processes, {self.cell_timeout} s of CPU time a cell")


class GradingEnvironmentError(RuntimeError):
    """The grading machine, not a student, failed (the canary did not get full marks): nothing is written."""


UID_BASE = 200_000  # when grading as root, kernels run as users UID_BASE and above (no such accounts needed)
UID_BLOCK = 100_000  # each grading run draws its own block of user ids, so runs at the same time never share one
NB_STUDENT = "student"  # the student's id in nbgrader's layout of each private course folder (whatever the folder)
BATCH = ".batch"  # the name under which `mark` records the batch's own stages (a name no student folder has)
CANARY = ".canary"  # the instructor's solution, graded first through the same path (a name no student folder has)
ATTEMPTS = 3  # runs of one notebook at most, when its kernel dies or cannot start
MAX_NOTEBOOK_BYTES = 64 * 2**20  # a larger "notebook" is not read
HIDDEN_FAILED = "hidden tests failed"  # all a hidden test cell ever says, in the CSV, the row and the report
KERNEL_PYTHON = sys.executable  # the interpreter of the grading kernels (tests point it elsewhere)
# Tests only: {student folder name: how many of its first runs get a failing set-up cell}. A fault injected by the
# grader into the worker's request (never reachable from a kernel), to prove that the instructor's cells are retried.
INJECT_SETUP_FAULTS: dict[str, int] = {}
_FAULTS_LOCK = threading.Lock()


def _take_fault(student: str) -> str:
    with _FAULTS_LOCK:
        if INJECT_SETUP_FAULTS.get(student, 0) > 0:
            INJECT_SETUP_FAULTS[student] -= 1
            return "setup"
    return ""


def shown_name(student: str) -> str:
    """A student folder's name as text (the CSV, the report, the terminal): bytes that are not UTF-8 (kept by
    Python as surrogates) become U+FFFD."""
    return os.fsencode(student).decode("utf-8", errors="replace")


def feedback_name(student: str) -> str:
    """The file name of a student's feedback page: `<folder name>.html`, or, for a name that is not UTF-8 or
    too long for a file name with `.html`, its first characters and a hash of the whole name."""
    raw = os.fsencode(student)
    if shown_name(student) == student and len(raw) <= 240:
        return f"{student}.html"
    short = shown_name(student).encode("utf-8")[:120].decode("utf-8", errors="ignore").replace("\ufffd", "_")
    return f"{short}-{hashlib.sha256(raw).hexdigest()[:12]}.html"


def _grade_here(students: list[Path], batch: dict, hide: list[Path], jobs: int | None,
                progress: bool) -> list[tuple[Row, str | None]]:
    """Grade the students on this machine, `jobs` at a time, the canary first and the students beside it: none of
    them is kept until it has passed."""
    jobs = jobs or os.cpu_count() or 1
    work = scratch_folder("llmcourse-grade-")
    try:
        mark(BATCH, "start")
        Worker.start(min(jobs, len(students) + 1))  # they import while we prepare
        setting = batch_setting(work, batch, hide)
        mark(BATCH, "assignment prepared")
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            _CANARIES[str(work)] = canary = pool.submit(_canary, batch["source"], len(students), setting)
            futures = [pool.submit(_grade_one, folder, i, setting) for i, folder in enumerate(students)]
            try:
                batch["canary"], batch["canary_page"] = canary.result()  # for the caller (pipeline.Rows)
            except BaseException:
                for future in futures:  # those already running end, unkept
                    future.cancel()
                raise
            mark(BATCH, "canary graded")
            done = tqdm(as_completed(futures), total=len(futures), desc=f"grading {batch['assignment']}",
                        unit="student", disable=not progress)
            results = [f.result() for f in done]
        mark(BATCH, "students graded")
        return results
    finally:
        _CANARIES.pop(str(work), None)
        Worker.close_all()
        shutil.rmtree(work, ignore_errors=True)


def batch_setting(work: Path, batch: dict, hide: list[Path]) -> dict:
    """What every student of a batch is graded with: the batch (assignment, source, cells, limits, ...), the course
    prepared in `work` (template, cases, stubbed package), the kernels' user ids, what they must reach and what is
    hidden from them (the course's private folders, `work` and the paths in `hide`)."""
    root = batch["root"]
    sweep_stale()  # what killed runs left in the temp folder
    template, cases = _prepare(work, root, batch["assignment"], batch["source_nb"], batch["cells"])
    return dict(batch, uid_base=UID_BASE + UID_BLOCK * secrets.randbelow(20_000), work=work, template=template,
                cases=cases, version=_version(batch["source"], batch["limits"], root),
                locked=_locked_digests(batch["source_nb"]), reach=_reach(),
                hide=[str(p) for p in (root / "src", root / "solutions", root / ".git", root / ".nbgrader",
                                       root / "tests", work, *hide) if p and p.exists()])


def _student_folders(submissions: Path, assignment: str, ours: set[Path]) -> tuple[list[Path], list[Row]]:
    """The student folders to grade, and a row for each entry that must not be read: a symbolic link (to a
    file or a folder, inside or outside the submissions) is never followed. Hidden entries, plain files and the
    grader's own folders (feedback, cache) placed inside the submissions are not students."""
    folders, refused = [], []
    for entry in sorted(os.scandir(submissions), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            refused.append(Row(entry.name, assignment, score=None, status=(
                f"not graded: the student's entry is a symbolic link (to {os.readlink(entry.path)}), not a folder; "
                "grading reads only regular files inside the submissions folder")))
        elif entry.is_dir(follow_symlinks=False) and Path(entry.path).resolve() not in ours:
            folders.append(Path(entry.path))
    return folders, refused


def _version(source: Path, limits: Limits, root: Path) -> str:
    """Changes when the assignment, the grading code, the limits or the grading environment change (the
    interpreter, the user we run as, who may enter the folders the kernel needs): cached grades are redone."""
    h = hashlib.sha256(source.read_bytes())
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):
        h.update(path.read_bytes())
    h.update(repr(limits).encode())
    facts = [KERNEL_PYTHON, sys.version, os.geteuid(), str(root)]
    for path in [*_reach(), str(root)]:
        facts += [(str(p), oct(p.stat().st_mode)) for p in [Path(path), *Path(path).parents] if p.exists()]
    for top in [*site.getsitepackages(), str(DATA_DIR)]:  # installs, removals, folders closed by chmod
        for folder, dirs, _ in os.walk(top):
            facts.append((folder, os.stat(folder).st_mode, os.stat(folder).st_mtime_ns))
    h.update(repr(facts).encode())
    return h.hexdigest()


def _reach() -> list[str]:
    """What the grading kernel must be able to read: the Python installation, its environment, the data."""
    paths = {sys.base_prefix, sys.prefix, str(Path(KERNEL_PYTHON).resolve().parents[1]), str(DATA_DIR)}
    paths |= {p for p in site.getsitepackages() if os.path.isdir(p)}
    return sorted(str(Path(p).resolve()) for p in paths if os.path.isdir(p))


def _locked_digests(source_nb) -> set[str]:
    """The instructor's cells (set-up and tests): a kernel that dies in one of them before any student code
    ran is the machine's fault, not the student's."""
    return {cell_digest(c.source) for c in source_nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("locked")}


def _prepare(work: Path, root: Path, assignment: str, source_nb, cells) -> Path:
    """The course folder every student's grading starts from (source + gradebook), the cases, the kernel package.
    Returns the template folder and the cases (key -> argument tuples)."""
    template = work / "template"
    shutil.copytree(root / "solutions" / assignment, template / "source" / assignment)
    api = nbgrader_api(template, source="source", release="release", work=".", scratch=True)
    result = api.generate_assignment(assignment, force=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader could not prepare {assignment}:\n{result.get('error') or result.get('log')}")
    cases = judge.write_cases(cells, work / "cases")
    build_stubbed_package(work / "site", source_nb, cells)
    # Compiled once here: each kernel would compile the modules it imports (its user cannot keep the result).
    compileall.compile_dir(work / "site", quiet=2)
    return template, cases


_CANARIES: dict = {}  # a batch's work folder -> the future of its canary, while the batch runs


def _canary_passed(s: dict) -> bool:
    """Whether the batch's canary passed (waiting for it if it still runs); True where no canary runs beside."""
    canary = _CANARIES.get(str(s.get("work")))
    return canary is None or canary.exception() is None


def _canary(source: Path, index: int, s: dict) -> tuple[Row, str | None]:
    """Grade the instructor's own solution first, through the same sandbox, limits and judging. Unless it
    gets full marks, the machine cannot grade: raise with what went wrong and how to fix it. Students graded
    meanwhile wait for its verdict before anything of theirs is kept (`_canary_passed`). Returns its row and
    its feedback page."""
    folder = s["work"] / "canary" / CANARY
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / source.name)
    row, page = _grade_one(folder, index, s)
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
        hints.append(f"The grading kernel could not be started (its interpreter is {KERNEL_PYTHON}): rebuild the "
                     "environment with `make venv`, and grade with that environment's `llmcourse`.")
    if "MemoryError" in evidence or "MemoryError" in row.message:
        hints.append(f"A memory limit was reached ({limits.described()}): raise --memory-gb.")
    if "stopped after" in row.status or "longer than" in row.message:
        hints.append("A time limit was reached on the instructor's own solution: the machine is slow or busy; "
                     "raise --cell-timeout / --student-timeout or grade with fewer --jobs.")
    if not hints:
        hints.append("Run `make test` to see which part of the grading machine fails, and set "
                     "LLMCOURSE_GRADING_LOG=/tmp/grading.log to keep the worker's log.")
    return "\n".join(lines + ["How to fix it:", *("  - " + h for h in hints)])


def _find_notebook(folder: Path) -> tuple[bytes | None, str, str]:
    """The bytes of the one notebook in a student's folder, its name, or (None, '', a status the instructor
    can act on). Symbolic links are never followed and only regular files are read."""
    notebooks, links = [], []
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(top, name)
            if path.is_symlink():
                links.append(path)
        dirs[:] = [d for d in dirs if d != ".ipynb_checkpoints" and not Path(top, d).is_symlink()]
        notebooks += [Path(top, f) for f in files if f.endswith(".ipynb") and not Path(top, f).is_symlink()]
    linked = [p for p in links if p.name.endswith(".ipynb") or p.is_dir()]
    if linked:
        names = ", ".join(f"{p.relative_to(folder)} -> {os.readlink(p)}" for p in linked)
        return None, "", (f"not graded: the submission holds a symbolic link ({names}); grading reads only "
                          "regular files, so ask the student for the notebook itself")[:400]
    if not notebooks:
        return None, "", "no notebook: the folder holds no .ipynb file"
    if len(notebooks) > 1:
        return None, "", ("several notebooks, keep one: " + ", ".join(str(p.relative_to(folder)) for p in sorted(notebooks)))[:300]
    path = notebooks[0]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        return None, "", f"not graded: {path.name} cannot be opened ({err.strerror})"
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None, "", f"not graded: {path.name} is not a regular file"
        if info.st_size > MAX_NOTEBOOK_BYTES:
            return None, "", f"not graded: {path.name} is {info.st_size / 2**20:.0f} MiB, more than a notebook can be"
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    try:
        nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as err:  # empty, not JSON, not a notebook
        return None, "", f"unreadable notebook ({type(err).__name__}): ask the student for the .ipynb file again"
    return data, path.name, ""


def _grade_one(folder: Path, index: int, s: dict) -> tuple[Row, str | None]:
    """Grade one student: sandboxed autograde, then trusted verdicts and feedback. Never raises."""
    row, data, known = look_up(folder, s)
    if known:
        return known
    return keep(data, *autograde_safely(folder.name, index, data, row, s), s)


def look_up(folder: Path, s: dict) -> tuple[Row, bytes | None, tuple[Row, str | None] | None]:
    """The student's row to fill and notebook, or a result already known: a row saying why the folder cannot be
    graded, or the cached grade and feedback of this very notebook (unless `force`)."""
    row = Row(folder.name, s["assignment"], max_score=sum(c.points for c in s["cells"]))
    data, _, problem = _find_notebook(folder)
    if data is None:  # not graded: the score is empty, never 0
        row.status, row.score = problem if problem.startswith("not graded") else f"not graded: {problem}", None
        return row, None, (row, None)
    key, cached = _cache_entry(row.student, data, s)
    if not s["force"] and cached.exists():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return row, data, (Row.from_dict(saved["row"]), saved["html"])
    return row, data, None


def _cache_entry(student: str, data: bytes, s: dict) -> tuple[str, Path]:
    """The key of a notebook's grade (the notebook and the batch's version) and the file that keeps it."""
    key = hashlib.sha256(s["version"].encode() + data).hexdigest()
    return key, s["cache"] / f"{hashlib.sha256(os.fsencode(student)).hexdigest()[:16]}.json"


def autograde_safely(student: str, index: int, data: bytes, row: Row, s: dict) -> tuple[Row, str | None]:
    """`_autograde`, where a bug of ours must not stop the batch, nor give a zero: the row says what happened."""
    try:
        return _autograde(student, index, data, row, s)
    except Exception as err:
        row.score, row.status = None, f"not graded: grading error ({type(err).__name__}: {err})"[:500]
        return row, None


def keep(data: bytes, row: Row, html: str | None, s: dict) -> tuple[Row, str | None]:
    """Cache a clean grade; a kernel that died, a time limit, a machine fault: never kept, graded afresh next time;
    nor anything graded on a machine whose canary failed."""
    if row.clean and (row.student == CANARY or _canary_passed(s)):
        key, cached = _cache_entry(row.student, data, s)
        s["cache"].mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "row": asdict(row), "html": html}))
        tmp.replace(cached)
    return row, html


@dataclass
class Attempt:
    """One run of a notebook in a fresh kernel."""
    stopped: str            # '' or what went wrong with the worker
    records: dict
    notes: str              # the sandbox's own notes
    output: str             # the tail of the kernel's stdout/stderr and the worker's stderr
    events: list[dict]      # TracedExecute's progress: cells started, then finished / died / start-failed
    student_ran: bool       # some cell that is not the instructor's had started
    instructor_error: str = ""  # an instructor's cell that uses no student code stopped with an error: what it said

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


def _settled(attempts: list[Attempt]) -> bool:
    """Whether the runs so far decide the grade: the notebook ran (or used up its time), or the same cell killed
    its kernel twice (the notebook's own doing). Anything else may be the machine's fault: run it again."""
    if not attempts:
        return False
    last = attempts[-1]
    return last.kind in ("ok", "timeout") or (last.kind == "died" and any(
        a.kind == "died" and a.where == last.where for a in attempts[:-1]))


def _autograde(student: str, index: int, data: bytes, row: Row, s: dict) -> tuple[Row, str | None]:
    assignment, limits, source = s["assignment"], s["limits"], s["source"]
    mark(student, "start")
    submitted = nbformat.reads(data.decode("utf-8", errors="replace"), as_version=4)
    problem = malformed(submitted)
    if problem:
        row.score, row.status = None, f"not graded: the notebook is malformed: {problem}"[:700]
        return row, None
    repair_metadata(submitted, s)
    ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in submitted.cells}
    expected = {c.metadata["nbgrader"]["grade_id"] for c in s["source_nb"].cells
                if c.metadata.get("nbgrader", {}).get("solution")}
    if not ids & expected:
        row.score = None
        row.status = f"not graded: not a {assignment} notebook: none of its answer cells is there (another assignment?)"
        return row, None
    restored = restore_locked_cells(submitted, s["source_nb"])
    course = s["work"] / "students" / f"s{index}"
    shutil.copytree(s["template"], course, ignore=shutil.ignore_patterns("release"))
    target = course / "submitted" / NB_STUDENT / assignment / source.name
    target.parent.mkdir(parents=True)
    target.write_bytes(nbformat.writes(restored).encode())
    mark(student, "course folder copied")
    uid = s["uid_base"] + index if os.geteuid() == 0 else None
    attempts: list[Attempt] = []
    while len(attempts) < ATTEMPTS and not _settled(attempts):
        started = time.monotonic()
        attempts.append(_run_once(course, student, uid, s))
        row.seconds = round(time.monotonic() - started, 1)
    final = attempts[-1]
    row.diagnostics = "\n".join(filter(None, [final.notes, _setup_errors(course, student, s),
                                               _without_noise(final.output)]))[-4000:]
    if not _settled(attempts):
        row.score = None
        if final.kind == "instructor":
            row.status = (f"not graded: an instructor's cell that runs no student code failed on each of "
                          f"{len(attempts)} runs, the machine's fault (the canary passed); regrade with --force. "
                          f"Its error: {final.instructor_error}")[:700]
        elif final.kind == "machine":
            lines = _without_noise(final.output).splitlines()
            said = next((x for x in lines if x.startswith("llmcourse sandbox:")), None) or next(
                (x for x in reversed(lines) if "Error" in x and "NbGraderException" not in x), None) or (
                lines or ["no output"])[-1]
            said = said.strip()[:300]
            row.status = (f"not graded: the grading environment failed (the kernel could not start or died in the "
                          f"instructor's set-up code on {len(attempts)} runs; it said: {said})")
        else:
            points = ", ".join(f"cell {a.where[0] + 1}" if a.where else "start-up" for a in attempts)
            row.status = (f"not graded: the kernel died at a different point on each of {len(attempts)} runs "
                          f"({points}); the machine may be short of memory or unstable: regrade with --force")
        return row, None
    verdicts = judge.judge(s["cells"], final.records, s["cases"])
    mark(student, "judged")
    autograded = course / "autograded" / NB_STUDENT / assignment / source.name
    if autograded.exists():
        _explain_unchecked(verdicts, nbformat.read(autograded, as_version=4))
    row.cells = {v.grade_id: (v.score, v.points) for v in verdicts}
    row.score = sum(v.score for v in verdicts)
    row.messages = {v.grade_id: (HIDDEN_FAILED if v.message else "") if v.hidden else v.message[:2000]
                    for v in verdicts}
    row.hidden = [v.grade_id for v in verdicts if v.hidden]
    row.message = " | ".join(f"{v.grade_id}: {row.messages[v.grade_id]}" for v in verdicts if v.message)[:4000]
    if final.kind == "timeout":
        row.status = f"graded, but {final.stopped}"
    elif final.kind == "died":
        at, grade_id = final.where[0] + 1, _grade_id_at(restored, final.where[0])
        row.status = (f"graded, but its kernel died in cell {at}{f' ({grade_id})' if grade_id else ''} on "
                      f"{len(attempts)} runs: the notebook's own code exited or killed it, or it passed a limit "
                      f"({limits.described()}); the tests after that point score 0")
    elif not autograded.exists():
        row.status = "graded, but nbgrader wrote no notebook"
    if final.notes:
        row.status += f" ({final.notes})"
    mark(student, "waited for the feedback lock")  # there is none any more: each page is made on its own
    html = (feedback_page(nbformat.read(autograded, as_version=4), verdicts, source.name) if autograded.exists()
            else fallback_feedback(restored, s["source_nb"], verdicts))
    mark(student, "feedback written")
    return row, html


_SURROGATE = re.compile("[\ud800-\udfff]")


def malformed(nb) -> str:
    """What makes a notebook impossible to grade safely, said so that the student can fix it; '' if nothing.
    Outputs are cleared here (grading runs the notebook afresh)."""
    owners: dict[str, int] = {}
    if not isinstance(nb.get("cells"), list):
        return "it has no list of cells"
    for i, cell in enumerate(nb.cells, 1):
        if not isinstance(cell, dict):
            return f"cell {i} is not a cell (a {type(cell).__name__})"
        kind = cell.get("cell_type")
        if kind not in ("code", "markdown", "raw"):
            return (f"cell {i} has the cell type {str(kind)[:40]!r}; a cell is code, markdown or raw "
                    "(copy your work into a new cell, or a new notebook)")
        if not isinstance(cell.get("source"), str) or not isinstance(cell.get("metadata"), dict):
            return f"cell {i} has no text (source) or no metadata that Jupyter can read"
        bad = _SURROGATE.search(cell.source)
        if bad:
            line = cell.source.count("\n", 0, bad.start()) + 1
            return (f"cell {i}, line {line} holds a lone surrogate (U+{ord(bad.group()):04X}), a broken character "
                    "that is not text: retype that line")
        if kind == "code":
            cell["outputs"], cell["execution_count"] = [], None
        meta = cell.metadata.get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if isinstance(grade_id, str) and (meta.get("solution") or meta.get("grade") or meta.get("locked")):
            if grade_id in owners:
                return (f"cells {owners[grade_id]} and {i} both have grade_id {grade_id[:80]!r}: a copied cell keeps "
                        "the grading metadata of its original; delete the copy (or paste its code into a new cell)")
            owners[grade_id] = i
    try:
        nbformat.writes(nb).encode("utf-8")
    except UnicodeEncodeError:
        return "its metadata holds a lone surrogate, a broken character that is not text"
    except Exception as err:  # noqa: BLE001  (anything nbformat cannot write)
        return f"nbformat cannot write it back ({type(err).__name__}: {str(err)[:200]})"
    return ""


_RELEASED: dict[str, dict] = {}


def repair_metadata(nb, s: dict) -> None:
    """Grading metadata the student's editor broke, mended where that is safe (the points come only from the
    instructor's source, never from this metadata): a cell whose nbgrader metadata is not a mapping, has no
    grade_id, or one the assignment does not have, becomes an ordinary cell; a known cell whose flags or points
    are of the wrong type gets the released notebook's metadata back."""
    path = s["template"] / "release" / s["assignment"] / s["source"].name
    if str(path) not in _RELEASED:
        released = nbformat.read(path, as_version=4) if path.exists() else s["source_nb"]
        _RELEASED[str(path)] = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"] for c in released.cells
                                if isinstance(c.metadata.get("nbgrader"), dict) and "grade_id" in c.metadata.nbgrader}
    known = _RELEASED[str(path)]
    for cell in nb.cells:
        if "nbgrader" not in cell.metadata:
            continue
        meta = cell.metadata["nbgrader"]
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if not isinstance(grade_id, str) or grade_id not in known:
            del cell.metadata["nbgrader"]
            continue
        flags_ok = all(isinstance(meta.get(k, False), bool) for k in ("grade", "solution", "locked", "task"))
        points = meta.get("points", 0)
        if not flags_ok or isinstance(points, bool) or not isinstance(points, (int, float)):
            cell.metadata["nbgrader"] = copy.deepcopy(known[grade_id])


def _setup_errors(course: Path, student: str, s: dict) -> str:
    """Errors in the instructor's own cells that are not tests (the set-up): a machine fault when the
    instructor's solution is graded (a package that cannot be imported, data that cannot be read)."""
    autograded = course / "autograded" / NB_STUDENT / s["assignment"] / s["source"].name
    if not autograded.exists():
        return ""
    lines = []
    for i, cell in enumerate(nbformat.read(autograded, as_version=4).cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("locked") and not meta.get("grade"):
            for out in cell.get("outputs", []):
                if out.output_type == "error":
                    lines.append(f"cell {i + 1} ({meta.get('grade_id')}, the instructor's set-up) stopped with "
                                 f"{out.ename}: {out.evalue}"[:600])
    return "\n".join(lines)


NOISE = re.compile(r"Kernel is running over TCP|ipython kernel. entry point|explicitly quit this process|"
                   r"Ctrl-\\|ipython/issues/2049|To connect another client|--existing |SAWarning|"
                   r"for notebook in submission|return \[x for x in self|^\s*$|^To exit, you will have|"
                   r"\"quit\" from a client|^To read more about this")


def _without_noise(text: str) -> str:
    """The kernel's and worker's output without the lines they print on every run."""
    return "\n".join(line for line in text.splitlines() if not NOISE.search(line))


def _grade_id_at(nb, index: int) -> str | None:
    return nb.cells[index].metadata.get("nbgrader", {}).get("grade_id") if 0 <= index < len(nb.cells) else None


def _run_once(course: Path, student: str, uid: int | None, s: dict) -> Attempt:
    """Autograde the notebook once in a fresh sandboxed kernel, then clear away everything the kernel left."""
    progress = course / "progress.jsonl"
    progress.unlink(missing_ok=True)
    kernel_dir = scratch_folder("llmcourse-kernel-")
    try:
        _prepare_kernel(kernel_dir, course, s, uid)
        mark(student, "kernel folder prepared")
        stopped, worker_err = _run_worker(course, s["assignment"], student, kernel_dir, s["limits"], progress,
                                          _take_fault(student))
        mark(student, "worker ended")
        _kill_leftovers(uid, kernel_dir)
        records = judge.read_records(kernel_dir / "records.jsonl")
        notes = _tail(kernel_dir / "sandbox-notes.txt", 1000)
        output = "\n".join(filter(None, [_kernel_output(kernel_dir / "kernel-output.txt"), worker_err[-1500:]]))
    finally:
        _kill_leftovers(uid, kernel_dir)
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
    return Attempt(stopped, records, notes, output, events, ran, _instructor_error(course, s))


def _instructor_error(course: Path, s: dict) -> str:
    """The first error (a failure, a time limit, an interrupt) in an instructor's locked cell that runs no code
    of the student's (`instructor_only`), in this run's autograded notebook: '' if none."""
    autograded = course / "autograded" / NB_STUDENT / s["assignment"] / s["source"].name
    ours = instructor_only(s["source_nb"])
    try:
        nb = nbformat.read(autograded, as_version=4)
    except Exception:  # no notebook: the worker's own failure says why
        return ""
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader")
        if cell.cell_type != "code" or not isinstance(meta, dict) or meta.get("grade_id") not in ours:
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and out.get("ename") != "KernelDied":
                return f"cell {i + 1} ({meta['grade_id']}) stopped with {out.get('ename')}: {out.get('evalue')}"[:500]
    return ""


_INSTRUCTOR_ONLY: dict[int, set[str]] = {}


def instructor_only(source_nb) -> set[str]:
    """The grade_ids of the locked cells that are not tests and use no name that a student's answer cell defines
    (the set-up, a demo of the data): when one of them fails, the machine failed, not the student."""
    key = id(source_nb)
    if key not in _INSTRUCTOR_ONLY:
        import ast

        answers, found = set(), set()
        for cell in source_nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("solution"):
                try:
                    answers |= {n.id for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Name)
                                and isinstance(n.ctx, ast.Store)}
                    answers |= {n.name for n in ast.walk(ast.parse(cell.source))
                                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
                except SyntaxError:
                    pass
        for cell in source_nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("locked") or meta.get("grade"):
                continue
            try:
                used = {n.id for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Name)}
            except SyntaxError:
                continue
            if not used & answers:
                found.add(meta["grade_id"])
        _INSTRUCTOR_ONLY[key] = found
    return _INSTRUCTOR_ONLY[key]


def _kernel_output(path: Path) -> str:
    """What the kernel printed outside any cell: the sandbox's own findings first, then the last lines."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536).decode("utf-8", errors="replace")
    except OSError:
        return ""
    findings = [line for line in head.splitlines() if line.startswith("llmcourse sandbox:")]
    return "\n".join(findings + [_tail(path, 3000)])


def _tail(path: Path, chars: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - chars))
            return f.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return ""


def restore_locked_cells(submitted, source_nb):
    """Put back every locked cell (tests, set-up) the student deleted, after the cell that preceded it in the
    source; nbgrader then restores the contents of all locked cells from the source."""
    nb = copy.deepcopy(submitted)
    present = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells}
    previous = None
    for cell in source_nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("locked") and meta.get("grade_id") not in present:
            at = next((i + 1 for i, c in enumerate(nb.cells)
                       if previous and c.metadata.get("nbgrader", {}).get("grade_id") == previous), len(nb.cells))
            nb.cells.insert(at, copy.deepcopy(cell))
        previous = meta.get("grade_id", previous)
    return nb


def _prepare_kernel(kernel_dir: Path, course: Path, s: dict, uid: int | None) -> None:
    """The student's kernel folder and the kernelspec that starts it. As root, the folder and what the grader
    put there (the stubbed llmcourse, and each test cell's cases while it runs) belong to root and are read-only
    for the kernel's user, which may write only its records file, its ZMQ sockets (`ipc/`) and, in its
    namespace, its own size-limited scratch folder (`home`)."""
    (kernel_dir / "cases").mkdir()  # each test cell's cases arrive while it runs (worker.stage_cases)
    plan = {"from": str(s["work"] / "cases"), "to": str(kernel_dir / "cases"),
            "cells": {c.grade_id: [f"{case_key(n, p)}.pt" for n, p in c.calls] for c in s["cells"]}}
    (course / "cases.json").write_text(json.dumps(plan))
    shutil.copytree(s["work"] / "site", kernel_dir / "site")
    shutil.copyfile(Path(__file__).with_name("sandbox.py"), kernel_dir / "sandbox.py")
    (kernel_dir / "records.jsonl").touch()
    limits: Limits = s["limits"]
    env = {"PATH": f"{Path(KERNEL_PYTHON).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
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
    argv = [KERNEL_PYTHON, "-I", str(kernel_dir / "sandbox.py"), str(kernel_dir / "settings.json"), "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "llmcourse grading", "language": "python"}))


def _run_worker(course: Path, assignment: str, student: str, kernel_dir: Path, limits: Limits,
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
    err = _tail(log, 20_000)
    finished = '"finished"' in _tail(progress, 200)
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
    """A worker process (`python -m llmcourse.grading.worker --serve`) that grades students one after another,
    each in a fresh sandboxed kernel: one Python start and one import of nbgrader per job rather than per
    student. Idle workers wait in a pool of this process; `grade` starts them early and closes them at its end."""
    MAX_STUDENTS = 50  # then a worker is retired (whatever nbgrader leaks per run does not pile up)
    _idle: list["Worker"] = []
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.started = tempfile.TemporaryFile()  # what it prints before its first request (an import error)
        self.proc = subprocess.Popen([sys.executable, "-m", "llmcourse.grading.worker", "--serve"],
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


def _kill_leftovers(uid: int | None, kernel_dir: Path) -> None:
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


def _explain_unchecked(verdicts, autograded) -> None:
    """A check that recorded nothing: add the error the test cell stopped with (NameError, timeout, ...)."""
    errors = {}
    for cell in autograded.cells:
        outs = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if outs:
            errors[cell.metadata.get("nbgrader", {}).get("grade_id")] = f"{outs[-1].ename}: {outs[-1].evalue}"[:300]
    for v in verdicts:
        if "was not checked" in v.message and v.grade_id in errors:
            v.message = v.message.replace("did not run to the end (see your notebook).",
                                          f"stopped with {errors[v.grade_id]}")


def write_csv(rows: list[Row], path: Path) -> None:
    """grades.csv, one row per student, written atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.csv_row() for r in rows)
    tmp.replace(path)


def summary(rows: list[Row]) -> str:
    """A plain-text table of the grades, for the terminal, with a closing line of totals. A row that is not
    cleanly graded (not graded at all, a kernel that died, a time limit) needs the instructor."""
    width = max([len(shown_name(r.student)) for r in rows] + [7])
    lines = [f"{'student':<{width}}  {'score':>11}  status"]
    for r in rows:
        score = "—" if r.score is None else f"{r.score:g}"
        lines.append(f"{shown_name(r.student):<{width}}  {score:>5} / {r.max_score:<3g}  {r.status}")
    graded = [r for r in rows if r.score is not None and r.status.startswith("graded")]
    clean = [r for r in rows if r.clean]
    mean = sum(r.score for r in graded) / len(graded) if graded else 0.0
    lines.append(f"{len(rows)} students: {len(graded)} graded (mean {mean:.1f} / {rows[0].max_score:g}), "
                 f"{len(rows) - len(clean)} need the instructor (see status)" if rows else "no student folders")
    return "\n".join(lines)
