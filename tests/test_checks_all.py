"""Every graded check of every exercise, run directly (fast; test_exercises.py runs them through nbgrader):
it passes the solution, refuses the reference and wrappers around it, says when a function is not written
yet, and names each planted mistake."""
from __future__ import annotations

import functools
import re

import nbformat
import pytest

from conftest import REPO, notebook_namespace, planted_for
from llmcourse import checks, grading
from llmcourse.grading import judge


def calls_by_cell(assignment: str) -> dict[str, list[tuple[str, dict]]]:
    nb = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    return {cell.grade_id: cell.calls for cell in judge.test_cells(nb)}


# A check that trains a model for a minute of CPU (08's check_train_gpt) is run here only where that is cheap
# (refusing the reference, a stub): the solution and the planted mistakes it names are graded through nbgrader by
# test_exercises.py (the canary, the planted batch) and checked again in the student kit by test_kit.py.
TRAINS = {"check_train_gpt"}
VISIBLE = [(a, name, params) for a in grading.assignments(REPO)
           for cell, calls in calls_by_cell(a).items() if not cell.endswith("hidden") for name, params in calls]
PLANTED = [(a, p) for a in grading.assignments(REPO) for p in planted_for(a)
           if not {name for name, _ in calls_by_cell(a)[planted_for(a)[p]["fails"][0]]} & TRAINS]


@functools.cache
def solved(assignment: str) -> dict:
    """The solution notebook's namespace, run once per assignment in this process (08's loads SmolLM2 and
    generates: seconds each time)."""
    return notebook_namespace(assignment)


@pytest.mark.parametrize("assignment,name,params", [v for v in VISIBLE if v[1] not in TRAINS])
def test_check_passes_the_solution(assignment, name, params, capsys):
    check = checks.REGISTRY[name]
    check(solved(assignment)[check.name], **params)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("assignment,name,params", VISIBLE)
def test_check_refuses_the_reference_and_wrappers(assignment, name, params):
    check = checks.REGISTRY[name]
    reference = check.reference
    ns: dict = {}
    exec(f"import {reference.__module__} as M\ndef f(*args):\n    return M.{reference.__name__}(*args)\n"
         "def g(*args):\n    return f(*args)\n", ns)
    for fn in [reference, lambda *a: reference(*a), ns["f"], ns["g"]]:
        with pytest.raises(AssertionError, match="reference implementation"):
            check(fn, **params)


@pytest.mark.parametrize("assignment,name,params", VISIBLE)
def test_check_says_not_written_yet(assignment, name, params):
    def stub(*args):
        raise NotImplementedError()
    with pytest.raises(AssertionError, match="not written yet"):
        checks.REGISTRY[name](stub, **params)


@pytest.mark.parametrize("assignment,planted", PLANTED)
def test_check_names_each_planted_mistake(assignment, planted):
    """The first cell a planted mistake must fail is its visible test: its checks name the mistake."""
    spec = planted_for(assignment)[planted]
    ns = notebook_namespace(assignment, replace={spec["cell"]: spec["source"]})
    messages = []
    for name, params in calls_by_cell(assignment)[spec["fails"][0]]:
        try:
            checks.REGISTRY[name](ns[checks.REGISTRY[name].name], **params)
        except AssertionError as err:
            messages.append(str(err))
    assert any(re.search(re.escape(spec["message"]), m) for m in messages), messages
