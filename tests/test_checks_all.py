"""Every graded check of every exercise, run directly (fast; test_exercises.py runs them through nbgrader):
it passes the solution, refuses the reference and wrappers around it, says when a function is not written
yet, and judges each planted mistake as its spec says (the grader's judge, on records made in this process)."""
from __future__ import annotations

import functools
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, TRAINS, calls_by_cell, notebook_namespace, planted_for, trains
from llmcourse import checks, grading
from llmcourse.checks.core import GRADING_ENV
from llmcourse.grading.batch import judge


# A check that trains a model for a minute of CPU (08's check_train_gpt, conftest.TRAINS) is run here only where
# that is cheap (refusing the reference, a stub): the solution and the planted mistakes it judges are graded
# through nbgrader by test_exercises.py (the canary, the planted batch) and checked again in the student kit by
# test_kit_venv.py.
VISIBLE = [(a, name, params) for a in grading.assignments(REPO)
           for cell, calls in calls_by_cell(a).items() if not cell.endswith("hidden") for name, params in calls]
PLANTED = [(a, p) for a in grading.assignments(REPO) for p in planted_for(a) if not trains(a, planted_for(a)[p])]


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


def judged_here(assignment: str, spec: dict, folder: Path, monkeypatch) -> dict:
    """{grade_id: Verdict} of the grader's judge for every test cell (hidden ones included) of the solution with
    the planted mistake: the kernel's side run in this process (the notebook's cells, then its test cells as the
    source notebook has them, the checks recording the plain results of the cases the grader wrote, as in the
    grading kernel), then `judge.judge` on those records, as `llmcourse grade` does after the kernel. What the
    whole pipeline adds (the sandboxed kernel, nbgrader, the feedback page) is tested on the planted mistakes of
    `conftest.in_the_batch` by test_exercises.py."""
    source = nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    released = nbformat.read(next((REPO / "exercises" / assignment).glob("*.ipynb")), as_version=4)
    stubs = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in released.cells}
    replace = {spec["cell"]: spec["source"], **{cell: stubs[cell] for cell in spec.get("unsolved", [])}}
    cells = judge.test_cells(source)
    cases = judge.write_cases(cells, folder / "cases")
    ns = notebook_namespace(assignment, replace=replace)
    monkeypatch.setenv(GRADING_ENV, str(folder))
    for cell in source.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
            try:
                exec(compile(cell.source, cell.metadata["nbgrader"]["grade_id"], "exec"), ns)
            except Exception:  # the cell fails in the kernel: its records are missing, the judge says so
                pass
    monkeypatch.delenv(GRADING_ENV)
    verdicts = judge.judge(cells, judge.read_records(folder / "records.jsonl"), cases)
    return {v.grade_id: v for v in verdicts}


@pytest.mark.parametrize("assignment,planted", PLANTED)
def test_each_planted_mistake_is_judged_as_its_spec_says(assignment, planted, tmp_path, monkeypatch):
    """Every planted mistake (tests/planted): the cells it must fail score 0, those it must keep their points, and a
    visible cell's message names the mistake (as test_exercises.py asserts of the graded batch's rows)."""
    spec = planted_for(assignment)[planted]
    verdicts = judged_here(assignment, spec, tmp_path, monkeypatch)
    for cell in spec["fails"]:
        assert verdicts[cell].score == 0, f"{planted}: {cell} should lose its points"
    for cell in spec["keeps"]:
        assert verdicts[cell].score == verdicts[cell].points, f"{planted}: {cell} should keep its points, but " \
                                                               f"{verdicts[cell].message[:300]}"
    messages = [v.message for v in verdicts.values() if v.message and not v.hidden]
    assert any(spec["message"] in m for m in messages), f"{planted}: no visible cell says {spec['message']!r}: " \
                                                        f"{messages}"
