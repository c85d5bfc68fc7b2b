"""Shared fixtures: the repository root, and a session-wide grading run of every planted notebook."""
from __future__ import annotations

import sys
import copy
import fcntl
import importlib
import os
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from llmcourse import grading

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("PYTHONHASHSEED", "0")


# The book's cold build is the longest single step of the suite (every chapter executes, demo models train): it
# starts in the background as soon as the tests are collected (book/build.py, as `make book`: the chapters execute
# in parallel, then jupyter-book renders), the tests that need it run last, and the others run meanwhile.
#
# `make test` runs the suite on every core (pytest-xdist, `-n auto`). Tests are handed out by file, except two
# groups that each stay on one worker: the tests that read the built book (one build, read by one process), and
# the tests that read the session-wide grading of every planted mistake (`graded`: one run, in one process). The
# other grading tests run beside them: each judges only what its own batch created (its users, its folders), so
# they pass while another batch grades on the machine (issue 28).
BOOK_MODULES = {"test_book", "test_browser", "test_kit"}
GRADED_MODULES = {"test_exercises", "test_report"}
GRADING_MODULES = {"test_cluster", "test_benchmarks", "test_checks_no_answer"}  # and test_grading_*: they go first
BOOK_COMMAND = [sys.executable, str(REPO / "book" / "build.py")]
_background: dict = {}


def group_of(module: str) -> str | None:
    """The group whose tests run one after another on one worker ("book", "graded"), or None."""
    if module in BOOK_MODULES:
        return "book"
    if module in GRADED_MODULES:
        return "graded"
    return None


def rank_of(module: str) -> int:
    """The order in which files are handed out: the longest first (the graded batches, then the other tests that
    grade), the book's tests last (they wait for the book, which builds in the background meanwhile)."""
    if module in GRADED_MODULES:
        return 0
    if module in GRADING_MODULES or module.startswith("test_grading"):
        return 1
    return 3 if module in BOOK_MODULES else 2


class GroupsOnOneWorker:
    """Under pytest-xdist: a file per worker at a time, each group of `group_of` as one unit (in the
    controller; xdist's own `--dist loadgroup` does not group under pytest 9.2)."""

    @staticmethod
    def scheduling():
        from xdist.scheduler import LoadScopeScheduling

        class GroupScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                path = nodeid.split("::", 1)[0]
                return group_of(Path(path).stem) or path

        return GroupScheduling

    def pytest_xdist_make_scheduler(self, config, log):
        config.option.loadscopereorder = False  # the order of pytest_collection_modifyitems: grading first
        return self.scheduling()(config, log)


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):  # registered only then: pytest refuses a hook it does not know
        config.pluginmanager.register(GroupsOnOneWorker(), "llmcourse-groups")


def _start_book_build() -> None:
    """Start book/build.py in the background, from one process of the session (the first worker to get the
    lock, under xdist); the others build (a warm build: they wait for this one) when they need the book."""
    (REPO / "_build").mkdir(exist_ok=True)
    starter = open(REPO / "_build" / "book-build-starter.lock", "w")
    try:
        fcntl.flock(starter, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another worker of this run (or another run) started it
        starter.close()
        return
    _background["starter"] = starter  # held until this process ends
    _background["log"] = log = open(REPO / "_build" / "book-build.log", "w")
    _background["proc"] = subprocess.Popen(BOOK_COMMAND, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def pytest_collection_modifyitems(session, config, items):
    """The longest tests go first (`rank_of`), the tests of BOOK_MODULES last, and the book starts building now
    (unless only collecting)."""
    modules = {item: Path(str(item.path)).stem for item in items}
    items.sort(key=lambda item: rank_of(modules[item]))  # a stable sort: the files keep their order
    if config.option.collectonly or not BOOK_MODULES & set(modules.values()):
        return
    _start_book_build()


def pytest_sessionfinish(session, exitstatus):
    _background["exitstatus"] = exitstatus


def pytest_unconfigure(config):
    proc = _background.pop("proc", None)
    if proc is not None and proc.poll() is None:
        # An xdist worker whose tests are done may have started the build that another worker's book tests
        # wait for: it lets the build finish, unless the run was interrupted.
        if os.environ.get("PYTEST_XDIST_WORKER") and _background.get("exitstatus") in (0, 1):
            proc.wait()
        else:
            proc.terminate()  # book/build.py stops its kernels
            proc.wait()


def build_book() -> Path:
    """Build the book as `make book` does (execution is cached); fails the test with the build's log if it fails.
    The first call waits for the build started in the background at collection, or builds (after any other
    build of this checkout: book/build.py takes turns); later calls in this process return at once."""
    if "html" in _background:
        return _background["html"]
    proc = _background.pop("proc", None)
    if proc is not None:
        code = proc.wait()
        _background["log"].close()
        output = (REPO / "_build" / "book-build.log").read_text(errors="replace")
    else:
        result = subprocess.run(BOOK_COMMAND, cwd=REPO, capture_output=True, text=True)
        code, output = result.returncode, result.stdout + result.stderr
    problems = [line for line in output.splitlines()
                if re.search(r"WARNING|ERROR|FAILED|Traceback", line) and "without encryption" not in line]
    assert code == 0, ("the book does not build:\n" + "\n".join(problems[:40]) + "\n...\n" + output[-4000:])
    _background["html"] = REPO / "_build" / "html"
    return _background["html"]


def built_book_html() -> Path:
    """The book's HTML, built (or rebuilt, quickly when nothing changed) by this process first: another build
    may be rewriting the pages meanwhile."""
    return build_book()


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


def unsolve(nb: nbformat.NotebookNode, cell_ids: list[str], release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with some answer cells (by grade_id) put back as released: the stub a student starts from."""
    released = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in release.cells}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in cell_ids:
            cell.source = released[cell.metadata["nbgrader"]["grade_id"]]
    return nb


@pytest.fixture(scope="session")
def graded(tmp_path_factory) -> dict[str, dict]:
    """For every assignment: grade the untouched student notebook and each planted mistake in one `llmcourse
    grade` run, whose canary is the solution (graded first through the same path: full marks, or the batch
    raises). Returns {assignment: {"rows": {student: Row}, "canary": Row, "feedback": dir, "inputs": dir}}.

    A planted mistake's spec may name answer cells to leave unsolved ("unsolved"): cells its test does not
    judge, whose work (08's GPT training, a minute of CPU) would only cost time."""
    results = {}
    for assignment in grading.assignments(REPO):
        base = tmp_path_factory.mktemp(f"grade-{assignment}")
        subs = base / "submissions"
        solution_path = next((REPO / "solutions" / assignment).glob("*.ipynb"))
        solution = nbformat.read(solution_path, as_version=4)
        (subs / "stub").mkdir(parents=True)
        release_path = next((REPO / "exercises" / assignment).glob("*.ipynb"))
        (subs / "stub" / release_path.name).write_bytes(release_path.read_bytes())
        release = nbformat.read(release_path, as_version=4)
        for name, spec in planted_for(assignment).items():
            (subs / name).mkdir()
            nb = unsolve(plant(solution, spec["cell"], spec["source"]), spec.get("unsolved", []), release)
            nbformat.write(nb, subs / name / "work.ipynb")
        rows = grading.grade(subs, assignment, out=base / "grades.csv", feedback=base / "feedback", progress=False)
        results[assignment] = {"rows": {r.student: r for r in rows}, "canary": rows.canary,
                               "feedback": base / "feedback", "inputs": subs, "csv": base / "grades.csv"}
    return results
