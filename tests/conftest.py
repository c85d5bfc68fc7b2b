"""Shared fixtures: the repository root, and a session-wide grading run of every planted notebook."""
from __future__ import annotations

import sys
import copy
import importlib
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from llmcourse import grading

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("PYTHONHASHSEED", "0")


# The book's cold build is the longest single step of the suite (every chapter executes, demo models train), and
# most of it runs on one core: it starts in the background as soon as the tests are collected, the tests that
# need it run last, and the others run meanwhile on the other core.
BOOK_MODULES = {"test_book", "test_browser", "test_kit"}
BOOK_COMMAND = [str(Path(sys.executable).parent / "jupyter-book"), "build", ".", "--builder", "html", "-W", "-n",
                "--keep-going"]
_background: dict = {}


def pytest_collection_modifyitems(session, config, items):
    """Tests of BOOK_MODULES go last, and the book starts building now (unless only collecting)."""
    needs = [item for item in items if getattr(item.module, "__name__", "") in BOOK_MODULES]
    if not needs or config.option.collectonly:
        return
    items[:] = [item for item in items if getattr(item.module, "__name__", "") not in BOOK_MODULES] + needs
    (REPO / "_build").mkdir(exist_ok=True)
    _background["log"] = log = open(REPO / "_build" / "book-build.log", "w")
    _background["proc"] = subprocess.Popen(BOOK_COMMAND, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def pytest_unconfigure(config):
    proc = _background.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait()


def build_book() -> Path:
    """Build the book as `make book` does (execution is cached); fails the test with the build's log if it fails.
    The first call waits for the build started in the background at collection."""
    proc = _background.pop("proc", None)
    if proc is not None:
        code = proc.wait()
        _background["log"].close()
        output = (REPO / "_build" / "book-build.log").read_text(errors="replace")
    else:
        result = subprocess.run(BOOK_COMMAND, cwd=REPO, capture_output=True, text=True)
        code, output = result.returncode, result.stdout + result.stderr
    assert code == 0, "the book does not build:\n" + output[-6000:]
    return REPO / "_build" / "html"


def built_book_html() -> Path:
    """The book's HTML; built here if `make book` or test_book has not built it."""
    book = REPO / "_build" / "html"
    if "proc" in _background:  # being built in the background: wait for it (it rewrites the pages meanwhile)
        return build_book()
    return book if (book / "index.html").exists() else build_book()


def planted_for(assignment: str) -> dict:
    """The planted mistakes of an assignment: tests/planted/p<assignment>.py."""
    return importlib.import_module(f"planted.p{assignment}").PLANTED


def plant(solution: nbformat.NotebookNode, cell_id: str, source: str) -> nbformat.NotebookNode:
    """A copy of the solution notebook with one solution cell's code replaced."""
    nb = copy.deepcopy(solution)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == cell_id]
    assert len(cells) == 1 and cells[0].metadata["nbgrader"].get("solution"), f"no solution cell '{cell_id}'"
    cells[0].source = source.strip("\n")
    return nb


def notebook_namespace(assignment: str, replace: dict[str, str] | None = None) -> dict:
    """Run the solution notebook's set-up and solution cells in one namespace, as its kernel would, with some
    solution cells (by grade_id) replaced, e.g. by a planted mistake; return the namespace."""
    nb = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    ns: dict = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("grade"):
            continue
        code = compile((replace or {}).get(meta.get("grade_id"), cell.source), meta.get("grade_id", "?"), "exec")
        if meta.get("solution") or meta.get("grade_id") == "setup":
            exec(code, ns)
            continue
        try:  # an ungraded exploration cell may fail on a planted mistake, as in the student's kernel (no points)
            exec(code, ns)
        except Exception:
            pass
    return ns


@pytest.fixture(scope="session")
def graded(tmp_path_factory) -> dict[str, dict]:
    """For every assignment: grade the solution, the untouched student notebook and each planted mistake
    in one `llmcourse grade` run. Returns {assignment: {"rows": {student: Row}, "feedback": dir, "inputs": dir}}."""
    results = {}
    for assignment in grading.assignments(REPO):
        base = tmp_path_factory.mktemp(f"grade-{assignment}")
        subs = base / "submissions"
        solution_path = next((REPO / "solutions" / assignment).glob("*.ipynb"))
        solution = nbformat.read(solution_path, as_version=4)
        (subs / "solution").mkdir(parents=True)
        nbformat.write(solution, subs / "solution" / "submission.ipynb")
        (subs / "stub").mkdir()
        release = next((REPO / "exercises" / assignment).glob("*.ipynb"))
        (subs / "stub" / release.name).write_bytes(release.read_bytes())
        for name, spec in planted_for(assignment).items():
            (subs / name).mkdir()
            nbformat.write(plant(solution, spec["cell"], spec["source"]), subs / name / "work.ipynb")
        rows = grading.grade(subs, assignment, out=base / "grades.csv", feedback=base / "feedback", progress=False)
        results[assignment] = {"rows": {r.student: r for r in rows}, "feedback": base / "feedback",
                               "inputs": subs, "csv": base / "grades.csv"}
    return results
