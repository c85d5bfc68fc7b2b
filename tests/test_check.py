"""`llmcourse check NOTEBOOK`: a fresh top-to-bottom run, a table of the visible tests, warnings, exit status.

Run in the course's venv on exercise 01_tokens (the fastest); tests/test_kit.py runs it in the kit for every
assignment.
"""
from __future__ import annotations

import copy

import nbformat
import pytest

from conftest import REPO
from llmcourse import cli
from llmcourse.grading.student import check
from test_kit_venv import paste_solutions

ASSIGNMENT = "01_tokens"
RELEASED = REPO / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
SOLUTION = REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


def solved() -> nbformat.NotebookNode:
    return paste_solutions(nbformat.read(RELEASED, as_version=4), nbformat.read(SOLUTION, as_version=4))


def index_of(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_solved_notebook_passes(tmp_path, capsys):
    path = tmp_path / "mine.ipynb"
    nbformat.write(solved(), path)
    before = path.read_bytes()
    status = cli.main(["check", str(path)])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = [line for line in out.splitlines() if line.startswith(("✓", "✗"))]
    assert len(rows) == 7 and all(r.startswith("✓") for r in rows), out
    assert "3 hidden tests (3 points) run only when the notebook is graded" in out
    assert "Warnings" not in out, out
    assert path.read_bytes() == before, "check changed the student's notebook"


def test_untouched_notebook_fails_with_not_written_yet(capsys):
    before = RELEASED.read_bytes()
    status = cli.main(["check", str(RELEASED)])
    out = capsys.readouterr().out
    assert status == 1
    rows = [line for line in out.splitlines() if line.startswith(("✓", "✗"))]
    assert rows and all(r.startswith("✗") and "is not written yet" in r for r in rows), out
    assert RELEASED.read_bytes() == before


def test_warnings(tmp_path):
    """One notebook with everything that costs points at grading; its visible tests still pass, because the edited
    and deleted test cells are run as released (as the grader restores them)."""
    nb = solved()
    nb.cells[index_of(nb, "test_count_pairs")].source = "print('all good')  # the test was here"
    del nb.cells[index_of(nb, "test_merge")]
    at = index_of(nb, "test_decode") + 1
    stale = nbformat.v4.new_code_cell("print(defined_by_hand_earlier)")
    stale.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    stale.execution_count = 3
    loud = nbformat.v4.new_code_cell("print('x' * 30_000)")
    slow = nbformat.v4.new_code_cell("import time\ntime.sleep(60)")
    nb.cells[at:at] = [stale, loud, slow]
    path = tmp_path / "mine.ipynb"
    nbformat.write(nb, path)
    saved = copy.deepcopy(path.read_bytes())

    report = check.check_notebook(path, cell_timeout=8)
    text = report.table()
    assert path.read_bytes() == saved
    assert report.status == 0, text
    assert [r[0] for r in report.rows] == ["test_count_pairs", "test_merge", "test_train_bpe", "test_encode",
                                            "test_decode", "test_cosine_similarity", "test_sinusoidal_positions"]
    warnings = "\n".join(report.warnings)
    assert "test cell test_count_pairs was edited: the grader restores the original" in warnings
    assert "test cell test_merge was deleted: the grader puts it back" in warnings
    assert "fails on a fresh run (NameError: name 'defined_by_hand_earlier' is not defined) although your saved " \
           "notebook shows it ran" in warnings
    assert "prints 30,001 characters; the feedback keeps only the first 20,000" in warnings
    assert "ran into the grader's limit of 8 s per cell and was stopped" in warnings
    assert len(report.warnings) == 5, warnings


def test_a_failing_visible_test_gives_exit_status_1(tmp_path):
    nb = solved()
    nb.cells[index_of(nb, "count_pairs")].source = "def count_pairs(ids):\n    return {}"
    path = tmp_path / "mine.ipynb"
    nbformat.write(nb, path)
    report = check.check_notebook(path)
    assert report.status == 1
    failed = [r for r in report.rows if not r[2]]
    assert [r[0] for r in failed][:1] == ["test_count_pairs"] and "`count_pairs(" in failed[0][3], report.table()


@pytest.mark.parametrize("bad", ["missing.ipynb", "not-a-notebook.ipynb"])
def test_bad_paths_are_explained(tmp_path, bad, capsys):
    path = tmp_path / bad
    if bad.startswith("not"):
        path.write_text("hello")
    assert cli.main(["check", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_a_notebook_that_kills_its_kernel(tmp_path):
    nb = solved()
    nb.cells.insert(index_of(nb, "test_merge"), nbformat.v4.new_code_cell("import os\nos._exit(1)"))
    path = tmp_path / "mine.ipynb"
    nbformat.write(nb, path)
    report = check.check_notebook(path)
    assert report.status == 1
    assert report.rows[0][:3] == ("test_count_pairs", 1.0, True)
    assert all(not ok and "did not run" in message for _, _, ok, message in report.rows[1:]), report.table()
    assert "the run stopped early (DeadKernelError" in "\n".join(report.warnings)
