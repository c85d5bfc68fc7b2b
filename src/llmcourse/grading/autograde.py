"""`llmcourse grade`: autograde a folder of submissions, one sandboxed kernel per student, several at once.

Each student runs in a worker process of its own (nbgrader autograde with the sandbox kernel of
`llmcourse.grading.sandbox`); the points come from `llmcourse.grading.judge`, computed here, outside any
kernel; `llmcourse.grading.feedback` writes the pages.

Explained in: README.md, section "Instructors: grading".
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from tqdm import tqdm

from llmcourse.data import DATA_DIR
from llmcourse.grading import judge
from llmcourse.grading.course import CELL_TIMEOUT, CSV_COLUMNS, REPO, assignments, nbgrader_api
from llmcourse.grading.feedback import MATHJAX_CDN, MATHJAX_LOCAL, copy_mathjax, write_feedback
from llmcourse.grading.stubs import build_stubbed_package
from llmcourse.grading.worker import KERNEL_NAME


@dataclass
class Row:
    """One student's result: a row of grades.csv, plus the score of every graded cell."""
    student: str
    assignment: str
    score: float = 0.0
    max_score: float = 0.0
    status: str = "graded"
    message: str = ""
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)

    def csv_row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in CSV_COLUMNS}


@dataclass
class Limits:
    """What one student's notebook may use while it is graded."""
    cell_timeout: int = CELL_TIMEOUT        # seconds per cell, then the cell is interrupted
    student_timeout: int = 600              # seconds for the whole notebook, then the student's grading stops
    memory_bytes: int = 4 * 2**30           # address space of the kernel (and of each process it starts)
    max_processes: int = 64                 # processes the kernel may run at once
    max_file_bytes: int = 256 * 2**20       # largest file the kernel may write


UID_BASE = 200_000  # when grading as root, kernels run as users UID_BASE and above (no such accounts needed)
UID_BLOCK = 100_000  # each grading run draws its own block of user ids, so runs at the same time never share one
_NBGRADER_LOCK = threading.Lock()  # nbgrader's apps capture logging globally: one feedback run at a time


def grade(submissions: Path, assignment: str, out: Path | None = None, feedback: Path | None = None,
          root: Path = REPO, jobs: int | None = None, force: bool = False, limits: Limits | None = None,
          cache: Path | None = None, progress: bool = True) -> list[Row]:
    """Autograde `submissions/<student>/<any name>.ipynb` for `assignment`; write grades.csv and feedback.

    Every student gets a row. Each notebook runs in its own sandboxed kernel (see `llmcourse.sandbox`);
    points come from `llmcourse.judge`, outside the kernel. Unchanged submissions are taken from the cache
    unless `force`. The submissions folder is only read.
    """
    limits = limits or Limits()
    submissions = Path(submissions).resolve()
    if not (root / "solutions" / assignment).is_dir():
        raise SystemExit(f"No assignment '{assignment}'; known: {', '.join(assignments(root))}")
    if not submissions.is_dir():
        raise SystemExit(f"{submissions} is not a folder of student folders.")
    source = next((root / "solutions" / assignment).glob("*.ipynb"))
    source_nb = nbformat.read(source, as_version=4)
    cells = judge.test_cells(source_nb)
    cache = Path(cache) if cache else (Path(out).resolve().parent if out else Path.cwd()) / ".llmcourse-grade-cache" / assignment
    version = _version(source, limits)
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    work = Path(tempfile.mkdtemp(prefix="llmcourse-grade-"))
    try:
        template = _prepare(work, root, assignment, source_nb, cells)
        setting = dict(uid_base=UID_BASE + UID_BLOCK * secrets.randbelow(20_000),
                       work=work, template=template, assignment=assignment, source=source, source_nb=source_nb,
                       cells=cells, limits=limits, cache=cache, version=version, force=force, root=root,
                       hide=[str(p) for p in (root / "src", root / "solutions", root / ".git", root / ".nbgrader",
                                              root / "tests", work, submissions, cache) if p.exists()])
        with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            futures = [pool.submit(_grade_one, folder, i, setting) for i, folder in enumerate(students)]
            done = tqdm(as_completed(futures), total=len(futures), desc=f"grading {assignment}", unit="student",
                        disable=not progress)
            results = [f.result() for f in done]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results.sort(key=lambda r: r[0].student)
    rows = [row for row, _ in results]
    if out:
        write_csv(rows, Path(out))
    if feedback:
        feedback = Path(feedback)
        feedback.mkdir(parents=True, exist_ok=True)
        for row, html in results:
            if html:
                page = MATHJAX_CDN.sub(lambda _: MATHJAX_LOCAL, html)
                (feedback / f"{row.student}.html").write_text(page, encoding="utf-8")
        copy_mathjax(feedback / "mathjax")
    return rows


def _version(source: Path, limits: Limits) -> str:
    """Changes when the assignment, the grading code or the limits change: cached grades are then redone."""
    h = hashlib.sha256(source.read_bytes())
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):
        h.update(path.read_bytes())
    h.update(repr(limits).encode())
    return h.hexdigest()


def _prepare(work: Path, root: Path, assignment: str, source_nb, cells) -> Path:
    """The course folder every student's grading starts from (source + gradebook), the cases, the kernel package."""
    template = work / "template"
    shutil.copytree(root / "solutions" / assignment, template / "source" / assignment)
    api = nbgrader_api(template, source="source", release="release", work=".")
    result = api.generate_assignment(assignment, force=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader could not prepare {assignment}:\n{result.get('error') or result.get('log')}")
    judge.write_cases(cells, work / "cases")
    build_stubbed_package(work / "site", source_nb, cells)
    return template


def _find_notebook(folder: Path) -> tuple[Path | None, str]:
    """The one notebook in a student's folder, or (None, a status the instructor can act on)."""
    notebooks = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        return None, "no notebook: the folder holds no .ipynb file"
    if len(notebooks) > 1:
        return None, ("several notebooks, keep one: " + ", ".join(str(p.relative_to(folder)) for p in notebooks))[:300]
    try:
        nbformat.read(notebooks[0], as_version=4)
    except Exception as err:  # empty, not JSON, not a notebook
        return None, f"unreadable notebook ({type(err).__name__}): ask the student for the .ipynb file again"
    return notebooks[0], ""


def _grade_one(folder: Path, index: int, s: dict) -> tuple[Row, str | None]:
    """Grade one student: sandboxed autograde, then trusted verdicts and feedback. Never raises."""
    assignment, limits = s["assignment"], s["limits"]
    row = Row(folder.name, assignment, max_score=sum(c.points for c in s["cells"]))
    notebook, problem = _find_notebook(folder)
    if notebook is None:
        row.status = problem
        return row, None
    data = notebook.read_bytes()
    key = hashlib.sha256(s["version"].encode() + data).hexdigest()
    cached = s["cache"] / f"{hashlib.sha256(folder.name.encode()).hexdigest()[:16]}.json"
    if not s["force"] and cached.exists():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return Row(**{**saved["row"], "cells": {k: tuple(v) for k, v in saved["row"]["cells"].items()}}), saved["html"]
    try:
        row, html = _autograde(folder.name, index, data, row, s)
    except Exception as err:  # a bug of ours must not stop the batch: the row says what happened
        row.status, row.message = "grading error", f"{type(err).__name__}: {err}"[:500]
        return row, None
    s["cache"].mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "row": asdict(row), "html": html}))
    tmp.replace(cached)
    return row, html


def _autograde(student: str, index: int, data: bytes, row: Row, s: dict) -> tuple[Row, str | None]:
    assignment, limits, source = s["assignment"], s["limits"], s["source"]
    submitted = nbformat.reads(data.decode("utf-8", errors="replace"), as_version=4)
    ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in submitted.cells}
    expected = {c.metadata["nbgrader"]["grade_id"] for c in s["source_nb"].cells
                if c.metadata.get("nbgrader", {}).get("solution")}
    if not ids & expected:
        row.status = f"not a {assignment} notebook: none of its answer cells is there (another assignment?)"
        return row, None
    data = nbformat.writes(restore_locked_cells(submitted, s["source_nb"])).encode()
    course = s["work"] / "students" / f"s{index}"
    shutil.copytree(s["template"], course, ignore=shutil.ignore_patterns("release"))
    target = course / "submitted" / student / assignment / source.name
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    uid = s["uid_base"] + index if os.geteuid() == 0 else None
    for attempt in (1, 2):  # a kernel that dies before recording anything (a rare start-up failure) gets one more go
        kernel_dir = Path(tempfile.mkdtemp(prefix="llmcourse-kernel-"))
        try:
            _prepare_kernel(kernel_dir, course, s, uid)
            stopped = _run_worker(course, assignment, student, kernel_dir, limits)
            _kill_leftovers(uid, kernel_dir)
            records = judge.read_records(kernel_dir / "records.jsonl")
            notes = (kernel_dir / "sandbox-notes.txt").read_text() if (kernel_dir / "sandbox-notes.txt").exists() else ""
        finally:
            _kill_leftovers(uid, kernel_dir)
            shutil.rmtree(kernel_dir, ignore_errors=True)
        if records or not stopped.startswith("its kernel died"):
            break
    verdicts = judge.judge(s["cells"], records)
    autograded = course / "autograded" / student / assignment / source.name
    if autograded.exists():
        _explain_unchecked(verdicts, nbformat.read(autograded, as_version=4))
    row.cells = {v.grade_id: (v.score, v.points) for v in verdicts}
    row.score = sum(v.score for v in verdicts)
    row.message = " | ".join(f"{v.grade_id}: {'hidden tests failed' if v.hidden else v.message}"
                             for v in verdicts if v.message)[:4000]
    row.status = "graded" if not stopped and autograded.exists() else f"graded, but {stopped or 'nbgrader wrote no notebook'}"
    if notes:
        row.status += f" ({notes})"
    html = None
    if autograded.exists():
        with _NBGRADER_LOCK:
            html = write_feedback(course, student, assignment, source.name, autograded, verdicts)
    return row, html


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
    """The student's kernel folder (cases, llmcourse copy, working directory) and the kernelspec that starts it."""
    for sub in ("cwd", "ipython", "matplotlib", "cache"):
        (kernel_dir / sub).mkdir()
    shutil.copytree(s["work"] / "cases", kernel_dir / "cases")
    shutil.copytree(s["work"] / "site", kernel_dir / "site")
    shutil.copyfile(Path(__file__).with_name("sandbox.py"), kernel_dir / "sandbox.py")
    limits: Limits = s["limits"]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "LLMCOURSE_GRADING": str(kernel_dir), "LLMCOURSE_DATA": str(DATA_DIR),
           "LLMCOURSE_CACHE": str(kernel_dir / "cache"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    settings = {"kernel_dir": str(kernel_dir), "uid": uid, "hide": s["hide"], "env": env,
                "pythonpath": str(kernel_dir / "site"), "memory_bytes": limits.memory_bytes,
                "max_processes": limits.max_processes, "max_file_bytes": limits.max_file_bytes}
    (kernel_dir / "settings.json").write_text(json.dumps(settings))
    if uid is not None:
        for path in [kernel_dir, *kernel_dir.rglob("*")]:
            os.chown(path, uid, uid)
    os.chmod(kernel_dir, 0o700)
    spec = course / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-I", str(kernel_dir / "sandbox.py"), str(kernel_dir / "settings.json"), "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "llmcourse grading", "language": "python"}))


def _run_worker(course: Path, assignment: str, student: str, kernel_dir: Path, limits: Limits) -> str:
    """nbgrader autograde of one student, in a process of its own with a wall-clock limit. '' or what went wrong."""
    env = {**os.environ, "JUPYTER_PATH": str(course / "jupyter"), "JUPYTER_RUNTIME_DIR": str(course / "runtime")}
    cmd = [sys.executable, "-m", "llmcourse.grading.worker", str(course), assignment, student,
           str(limits.cell_timeout)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=limits.student_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"stopped after {limits.student_timeout} s (the notebook's time limit)"
    if os.environ.get("LLMCOURSE_GRADING_LOG"):  # for debugging the grader itself
        with open(os.environ["LLMCOURSE_GRADING_LOG"], "ab") as log:
            log.write(err)
    if proc.returncode != 0:
        text = err.decode(errors="replace")
        if "DeadKernelError" in text or "Kernel died" in text:
            return "its kernel died (the notebook exited or killed it): the tests after that point score 0"
        last = text.strip().splitlines()[-1:] or [""]
        return f"the grading process ended with code {proc.returncode} ({last[0][:200]})"
    return ""


def _kill_leftovers(uid: int | None, kernel_dir: Path) -> None:
    """Kill whatever the student's kernel left running (a fork bomb's children, a daemon)."""
    if uid is not None:
        for _ in range(3):  # processes forking while we kill: repeat
            pid = os.fork()
            if pid == 0:
                try:
                    os.setgid(uid)
                    os.setuid(uid)
                    os.kill(-1, signal.SIGKILL)
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
    """A plain-text table of the grades, for the terminal, with a closing line of totals."""
    width = max([len(r.student) for r in rows] + [7])
    lines = [f"{'student':<{width}}  {'score':>11}  status"]
    for r in rows:
        lines.append(f"{r.student:<{width}}  {r.score:>5g} / {r.max_score:<3g}  {r.status}")
    graded = [r for r in rows if r.status.startswith("graded")]
    mean = sum(r.score for r in graded) / len(graded) if graded else 0.0
    lines.append(f"{len(rows)} students: {len(graded)} graded (mean {mean:.1f} / {rows[0].max_score:g}), "
                 f"{len(rows) - len(graded)} need the instructor (see status)" if rows else "no student folders")
    return "\n".join(lines)
