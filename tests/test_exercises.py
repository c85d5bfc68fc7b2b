"""Every exercise, through the real nbgrader path: release is fresh, nothing leaks, grades are right."""
from __future__ import annotations

import filecmp
import html
import re

import nbformat
import pytest

from conftest import REPO, batch_students, in_the_batch, planted_for, student_of
from llmcourse import grading


ASSIGNMENTS = grading.assignments(REPO)


def page_text(path) -> str:
    """The visible text of an HTML page: tags removed, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def test_there_are_assignments():
    assert "01_tokens" in ASSIGNMENTS


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_are_a_fresh_release(assignment, tmp_path):
    """exercises/ is generated from solutions/ and never edited by hand: regenerate and compare bytes."""
    import shutil

    shutil.copytree(REPO / "solutions", tmp_path / "solutions")
    grading.release([assignment], root=tmp_path)
    fresh, committed = tmp_path / "exercises" / assignment, REPO / "exercises" / assignment
    cmp = filecmp.dircmp(fresh, committed)
    assert not (cmp.left_only or cmp.right_only), f"files differ: {cmp.left_only} vs {cmp.right_only}"
    for name in cmp.common_files:
        assert (fresh / name).read_bytes() == (committed / name).read_bytes(), (
            f"exercises/{assignment}/{name} is stale: run `llmcourse release {assignment}` and commit it.")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebooks_have_no_outputs(assignment):
    for path in (REPO / "solutions" / assignment).glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs before committing"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_solution_or_hidden_test_in_student_notebook(assignment):
    solution = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    student_text = "\n".join(c.source for c in nbformat.read(
        next((REPO / "exercises" / assignment).glob("*.ipynb")), as_version=4).cells)
    secret = []
    for cell in solution.cells:
        for block in re.findall(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END", cell.source, re.S):
            secret += [line.strip() for line in block.splitlines() if len(line.strip()) > 12]
    assert secret, "the solution notebook should have solution and hidden-test blocks"
    leaked = [line for line in secret if line in student_text]
    assert not leaked, f"solution or hidden-test lines appear in the student notebook: {leaked[:3]}"
    assert "BEGIN SOLUTION" not in student_text and "BEGIN HIDDEN" not in student_text


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_gets_full_marks(graded, assignment):
    """The solution is every batch's canary: graded first, through the same sandbox, limits and judging."""
    row = graded[assignment]["canary"]
    assert row is not None and row.status == "graded", row and row.message
    assert row.max_score > 0 and row.score == row.max_score, row.message


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_student_notebook_gets_zero(graded, assignment):
    row = graded[assignment]["rows"]["stub"]
    assert row.status == "graded"
    assert row.score == 0 and row.max_score > 0
    assert len(row.cells) >= 2, "every graded cell must be recorded"
    assert "not written yet" in row.message


@pytest.mark.parametrize("assignment,planted", [(a, p) for a in ASSIGNMENTS for p in in_the_batch(a)])
def test_planted_mistake_loses_its_points_and_is_named(graded, assignment, planted):
    """Planted beside others where they fit (`conftest.batch_students`): the cells it fails lose their points and
    one of them says its message; the cells it keeps keep theirs where the mistakes beside it keep them too
    (test_checks_all judges each mistake alone, every cell)."""
    spec, student = planted_for(assignment)[planted], student_of(assignment, planted)
    beside = [planted_for(assignment)[name] for name in batch_students(assignment)[student] if name != planted]
    row = graded[assignment]["rows"][student]
    assert row.status == "graded", row.message
    assert row.score < row.max_score, f"{planted}: score {row.score}/{row.max_score}"
    for cell in spec["fails"]:
        assert row.cells[cell][0] == 0, f"{planted}: {cell} should lose its points, got {row.cells[cell]}"
    for cell in [c for c in spec["keeps"] if all(c in other["keeps"] for other in beside)]:
        assert row.cells[cell][0] == row.cells[cell][1], f"{planted}: {cell} should keep its points"
    said = {cell: row.messages[cell] for cell in spec["fails"]}
    assert any(spec["message"] in m for m in said.values()), f"{planted}: should say {spec['message']!r}; got {said}"
    assert spec["message"] in page_text(graded[assignment]["feedback"] / f"{student}.html")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_feedback_hides_hidden_tests(graded, assignment):
    solution = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    hidden = [line.strip() for c in solution.cells
              for block in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END", c.source, re.S)
              for line in block.splitlines() if line.strip()]
    assert hidden, "the solution should have hidden tests"
    for page in graded[assignment]["feedback"].glob("*.html"):
        text = page_text(page)
        assert "Hidden tests:" in text
        for line in hidden:
            assert line not in text, f"{page.name} shows hidden test code: {line!r}"
        for literal in re.findall(r'"([^"]{6,})"', "\n".join(hidden)):
            assert literal not in text, f"{page.name} shows a hidden test's input: {literal!r}"
        raw = page.read_text(encoding="utf-8")
        assert not re.search(r"<(?:script|link|img)[^>]+(?:src|href)=[\"']?https?:", raw), (
            f"{page.name} loads something from the internet")


def test_grades_csv_has_one_row_per_student(graded):
    import csv

    for assignment, result in graded.items():
        with open(result["csv"], newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["student"] for r in rows] == sorted(result["rows"])
        assert list(rows[0]) == grading.CSV_COLUMNS


def test_feedback_shows_what_the_trained_gpt_writes(graded):
    """08_your_gpt's grader trains nothing itself: it loads the recorded weights and draws a seeded sample (on the
    page of a passing training: the canary's), and draws none from a model that failed its test."""
    text = html.unescape(re.sub(r"<[^>]+>", "", graded["08_your_gpt"]["canary_page"]))
    assert "Your GPT's loss on the held-out text" in text and "What it writes" in text
    assert "What it writes" not in page_text(graded["08_your_gpt"]["feedback"] / "train_without_causal_mask.html")
