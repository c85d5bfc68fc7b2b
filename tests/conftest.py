"""Shared fixtures: the repository root, the graded batches of every planted mistake, the kit's package; how the
tests are handed out to the workers."""
from __future__ import annotations

import sys
import ast
import copy
import fcntl
import functools
import importlib
import os
import pickle
import re
import shutil
import subprocess
import traceback
from collections.abc import Mapping
from pathlib import Path

# Under pytest-xdist every core already runs a worker (and the book builds beside them): torch in the tests and in
# the processes they start computes on one thread, instead of threads that wait for each other's core. Set before
# torch is imported; the book's build keeps the environment `make book` gives it (`book_env`).
ONE_THREAD = bool(os.environ.get("PYTEST_XDIST_WORKER")) and "OMP_NUM_THREADS" not in os.environ
if ONE_THREAD:
    os.environ["OMP_NUM_THREADS"] = "1"


def book_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not (ONE_THREAD and k == "OMP_NUM_THREADS")}


import nbformat  # noqa: E402
import pytest  # noqa: E402

from llmcourse import grading  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("PYTHONHASHSEED", "0")


# The book's cold build is the longest single step of the suite (every chapter executes, demo models train): it
# starts in the background as soon as the tests are collected (book/build.py, as `make book`: the chapters execute
# in parallel, then jupyter-book renders), the tests that need it run last, and the others run meanwhile.
#
# `make test` runs the suite on every core (pytest-xdist, `-n auto`). Tests are handed out by file, except that
# the tests that read the built book stay together on one worker (one build, read by one process), and the tests
# of the graded batches (`graded`: every planted mistake of an assignment graded in one run) go out per
# assignment, the longest batch first, so that both workers grade. The other grading tests run beside them: each
# judges only what its own batch created (its users, its folders), so they pass while another batch grades on the
# machine (issue 28).
BOOK_MODULES = {"test_book", "test_browser", "test_kit"}
GRADED_MODULES = {"test_exercises", "test_report"}
GRADING_MODULES = {"test_cluster", "test_benchmarks", "test_checks_no_answer", "test_kit_venv"}  # and test_grading_*
LONGEST_BATCH_FIRST = ["08_your_gpt"]  # its batch trains GPTs: the longest by far
BOOK_COMMAND = [sys.executable, str(REPO / "book" / "build.py")]
_background: dict = {}


def assignment_of(nodeid: str) -> str | None:
    """The assignment a test's parameters start with (tests/test_x.py::test_y[03_attention-...]), or None."""
    found = re.search(r"\[(\d\d_[^\]\-]+)", nodeid)
    return found.group(1) if found else None


def scope_of(nodeid: str) -> str:
    """The unit of tests that goes to one worker: "book" for the tests of the built book, "graded <assignment>" for
    the tests of one assignment's graded batch, otherwise the test's file."""
    path = nodeid.split("::", 1)[0]
    module = Path(path).stem
    if module in BOOK_MODULES:
        return "book"
    assignment = assignment_of(nodeid) if module in GRADED_MODULES else None
    return f"graded {assignment}" if assignment else path


def rank_of(nodeid: str) -> tuple:
    """The order in which tests are handed out: the longest first (the graded batches, one assignment at a time,
    then the other tests that grade), the book's tests last (they wait for the book, which builds in the
    background meanwhile). The graded modules' tests of several assignments come after those of one."""
    module = Path(nodeid.split("::", 1)[0]).stem
    if module in GRADED_MODULES:
        assignment = assignment_of(nodeid)
        if assignment is None:
            return (1,)
        return (0, assignment not in LONGEST_BATCH_FIRST)
    if module in GRADING_MODULES or module.startswith("test_grading"):
        return (1,)
    return (3,) if module in BOOK_MODULES else (2,)


class GroupsOnOneWorker:
    """Under pytest-xdist: a unit of `scope_of` per worker at a time (in the controller; xdist's own `--dist
    loadgroup` does not group under pytest 9.2)."""

    @staticmethod
    def scheduling():
        from xdist.scheduler import LoadScopeScheduling

        class GroupScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return scope_of(nodeid)

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
    _background["proc"] = subprocess.Popen(BOOK_COMMAND, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                           env=book_env())


def pytest_collection_modifyitems(session, config, items):
    """The longest tests go first (`rank_of`), the tests of BOOK_MODULES last, and the book starts building now
    (unless only collecting)."""
    modules = {item: Path(str(item.path)).stem for item in items}
    items.sort(key=lambda item: rank_of(item.nodeid))  # a stable sort: the files keep their order
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
        result = subprocess.run(BOOK_COMMAND, cwd=REPO, capture_output=True, text=True, env=book_env())
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


def run_folder(tmp_path_factory) -> Path:
    """A folder of this test run that all its workers share (under pytest-xdist each worker has its own temporary
    folder inside it); another run has another."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder `name` of this run, made by `build(folder)` by the first worker that asks; the others wait for it
    (a file lock), then read it."""
    root = run_folder(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def kit_package(tmp_path_factory) -> Path:
    """The student kit's package (`kit.save_package`: the stubbed modules and the recorded results of every
    visible check, about a minute), built once for the tests of the kit (test_kit, test_kit_venv,
    test_checks_no_answer)."""
    from llmcourse.grading.student import kit

    return built_once(tmp_path_factory, "kit-package", lambda folder: kit.save_package(
        folder, kit.released_notebooks(REPO)))


def planted_for(assignment: str) -> dict:
    """The planted mistakes of an assignment: tests/planted/p<assignment>.py."""
    return importlib.import_module(f"planted.p{assignment}").PLANTED


TRAINS = {"check_train_gpt"}  # checks that train a model (a minute of CPU): judged only in the graded batches


@functools.cache
def calls_by_cell(assignment: str) -> dict[str, list[tuple[str, dict]]]:
    """{test cell's grade_id: the check calls it makes, (check name, params)}, from the solution notebook."""
    from llmcourse.grading.batch import judge

    nb = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    return {cell.grade_id: cell.calls for cell in judge.test_cells(nb)}


def trains(assignment: str, spec: dict) -> bool:
    """Whether judging a planted mistake as its spec says needs a model trained (a cell it fails or keeps calls
    a check of TRAINS)."""
    calls = calls_by_cell(assignment)
    return any(name in TRAINS for cell in spec["fails"] + spec["keeps"] for name, _ in calls[cell])


def in_the_batch(assignment: str) -> list[str]:
    """The planted mistakes graded through the whole pipeline (`graded`): the first of each answer cell, so that
    every answer cell's judging goes through the kernel, nbgrader and the feedback page once, and every one whose
    judging needs a trained model, unless its spec says `batch=False` (and where else it is tested). Every
    planted mistake is judged by the same judge, the kernel's side run in the test's process, by
    test_checks_all.py."""
    chosen, cells = [], set()
    for name, spec in planted_for(assignment).items():
        if spec.get("batch", True) and (spec["cell"] not in cells or trains(assignment, spec)):
            chosen.append(name)
            cells.add(spec["cell"])
    return chosen


@functools.cache
def _cell_names(assignment: str) -> dict[str, tuple[set[str], set[str]]]:
    """{grade_id: (the names its code defines, the names it uses)} of the solution notebook's code cells."""
    nb = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: _names(c.source) for c in nb.cells
            if c.cell_type == "code" and "grade_id" in c.metadata.get("nbgrader", {})}


def _names(source: str) -> tuple[set[str], set[str]]:
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return defined, {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _reaches(assignment: str, a: dict, b: dict) -> bool:
    """Whether mistake `a`'s function can change what `b`'s cells say: `b`'s code (as planted, as solved) or a
    test cell that `b` fails uses a name that `a`'s cell defines."""
    cells = _cell_names(assignment)
    used = _names(b["source"])[1] | cells[b["cell"]][1]
    for cell in b["fails"]:
        used |= cells[cell][1]
    return bool(cells[a["cell"]][0] & used)


def _fit_together(assignment: str, a: dict, b: dict) -> bool:
    """Whether two planted mistakes can share one notebook and still each be judged as its spec says: neither's
    function is used by the other's code or failing tests (`_reaches`), no cell that one fails is failed by the
    other too (each failing cell has one cause, so its message is that mistake's), the same cells left unsolved
    and none of those judged by either, and neither needs a training."""
    unsolved = set(a.get("unsolved", []))
    return (not trains(assignment, a) and not trains(assignment, b) and unsolved == set(b.get("unsolved", []))
            and not set(a["fails"]) & set(b["fails"])
            and not unsolved & set(a["fails"] + a["keeps"] + b["fails"] + b["keeps"])
            and not _reaches(assignment, a, b) and not _reaches(assignment, b, a))


@functools.cache
def batch_students(assignment: str) -> dict[str, tuple[str, ...]]:
    """{student folder of the graded batch: the planted mistakes (of `in_the_batch`) planted together in its
    notebook}, in the batch's order; the folder is named by its mistakes joined with "+". A mistake is planted
    beside earlier ones where it fits with each (`_fit_together`): 45 notebooks become 23."""
    planted, packs = planted_for(assignment), []
    for name in in_the_batch(assignment):
        pack = next((p for p in packs if all(_fit_together(assignment, planted[m], planted[name]) for m in p)),
                    None)
        if pack is None:
            packs.append([name])
        else:
            pack.append(name)
    return {"+".join(pack): tuple(pack) for pack in packs}


def student_of(assignment: str, planted: str) -> str:
    """The student folder of the graded batch whose notebook holds the planted mistake `planted`."""
    return next(student for student, names in batch_students(assignment).items() if planted in names)


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


def grade_planted(assignment: str, base: Path) -> dict:
    """Grade the untouched student notebook and the planted mistakes of `assignment` (`in_the_batch`, several to
    a notebook where they fit: `batch_students`) in one `llmcourse grade` run in `base`, whose canary is the
    solution (graded first through the same path: full marks, or the batch raises).
    Returns {"rows": {student: Row}, "canary": Row, "canary_page": its feedback page (HTML), "feedback": dir,
    "inputs": dir, "csv": path}.

    A planted mistake's spec may name answer cells to leave unsolved ("unsolved"): cells its test does not
    judge, whose work (08's GPT training, a minute of CPU) would only cost time."""
    subs = base / "submissions"
    solution = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    (subs / "stub").mkdir(parents=True)
    release_path = next((REPO / "exercises" / assignment).glob("*.ipynb"))
    (subs / "stub" / release_path.name).write_bytes(release_path.read_bytes())
    release = nbformat.read(release_path, as_version=4)
    for student, names in batch_students(assignment).items():
        nb = solution
        for name in names:
            spec = planted_for(assignment)[name]
            nb = unsolve(plant(nb, spec["cell"], spec["source"]), spec.get("unsolved", []), release)
        (subs / student).mkdir()
        nbformat.write(nb, subs / student / "work.ipynb")
    rows = grading.grade(subs, assignment, out=base / "grades.csv", feedback=base / "feedback", progress=False)
    return {"rows": {r.student: r for r in rows}, "canary": rows.canary, "canary_page": rows.canary_page,
            "feedback": base / "feedback",
            "inputs": subs, "csv": base / "grades.csv"}


class GradedBatches(Mapping):
    """{assignment: its graded batch (`grade_planted`)}, each graded when first asked for, once per test run: by
    the worker that asks first, the others waiting for it (`built_once`), then reading its result."""

    def __init__(self, tmp_path_factory):
        self.factory, self.loaded = tmp_path_factory, {}

    def __getitem__(self, assignment: str) -> dict:
        if assignment not in grading.assignments(REPO):
            raise KeyError(assignment)
        if assignment not in self.loaded:
            folder = built_once(self.factory, f"graded-{assignment}", lambda base: self._grade(assignment, base))
            saved = pickle.loads((folder / "result.pickle").read_bytes())
            if "error" in saved:
                raise RuntimeError(f"grading the planted batch of {assignment} failed:\n{saved['error']}")
            self.loaded[assignment] = saved
        return self.loaded[assignment]

    @staticmethod
    def _grade(assignment: str, base: Path) -> None:
        try:
            saved = grade_planted(assignment, base)
        except Exception:  # kept, so that the other tests of this batch say why instead of grading it again
            saved = {"error": traceback.format_exc()}
        (base / "result.pickle").write_bytes(pickle.dumps(saved))

    def __iter__(self):
        return iter(grading.assignments(REPO))

    def __len__(self) -> int:
        return len(grading.assignments(REPO))


@pytest.fixture(scope="session")
def graded(tmp_path_factory) -> GradedBatches:
    """Every assignment's planted batch, graded when a test first reads it (`GradedBatches`)."""
    return GradedBatches(tmp_path_factory)
