"""The trusted half of grading: test cells parse into check calls, verdicts come from records only,
and the grading kernel's llmcourse has no reference implementations."""
from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from conftest import REPO
from llmcourse import grading
from llmcourse.grading.batch import judge
from llmcourse.grading.student import stubs
from llmcourse.checks.core import case_key

ASSIGNMENTS = grading.assignments(REPO)


def source(assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_test_cell_only_calls_checks(assignment):
    cells = judge.test_cells(source(assignment))
    assert cells and all(c.calls for c in cells)
    assert any(c.hidden for c in cells) and any(not c.hidden for c in cells)


def test_other_statements_in_test_cells_are_refused():
    for code in ["assert f(1) == 2", "x = check_merge(merge)", "check_merge(merge, n=len('ab'))", "print(1)"]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code, metadata={
            "nbgrader": {"grade": True, "grade_id": "t", "points": 1}})])
        with pytest.raises(judge.NotACheckCall):
            judge.test_cells(nb)


def test_verdicts_come_from_records(tmp_path):
    cells = [c for c in judge.test_cells(source("01_tokens")) if c.grade_id == "test_merge"]
    name, params = cells[0].calls[0]
    right = [{"ok": [256, 3, 256]}, {"ok": [300, 5]}, {"ok": [1, 2]}, {"ok": []}]
    wrong = [{"ok": [256, 3, 256]}, {"ok": [300, 300, 5]}, {"ok": [1, 2]}, {"ok": []}]
    key = case_key(name, params)
    assert judge.judge(cells, {key: right})[0].score == 1
    verdict = judge.judge(cells, {key: wrong})[0]
    assert verdict.score == 0 and "two positions on" in verdict.message
    assert "was not checked" in judge.judge(cells, {})[0].message
    malformed = [{"ok": "nonsense"}, {"bad": 1}, {"ok": [1]}, {"ok": None}]
    assert judge.judge(cells, {key: malformed})[0].score == 0
    records = tmp_path / "records.jsonl"
    records.write_text("not json\n" + json.dumps({"check": name, "key": key, "results": right}) + "\n[1, 2]\n")
    assert judge.judge(cells, judge.read_records(records))[0].score == 1


def test_the_kernel_package_has_stubs_instead_of_references(tmp_path):
    nb = source("01_tokens")
    stubs.build_stubbed_package(tmp_path, nb, judge.test_cells(nb))
    code = ("import llmcourse.tokens as t\n"
            "print(t.pretokenize('Hello world!'))\n"
            "for f in (t.encode, t.cosine_similarity, t.decode):\n"
            "    try:\n        f('a', [])\n    except NotImplementedError as e:\n        print('stub')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split("\n")[:4] == ["['Hello', ' world', '!']", "stub", "stub", "stub"], out.stderr


def test_deleted_locked_cells_are_put_back_in_place():
    nb = source("01_tokens")
    missing = nbformat.v4.new_notebook(cells=[c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] not in
                                              ("test_merge", "setup")])
    restored = grading.restore_locked_cells(missing, nb)
    assert [c.metadata["nbgrader"]["grade_id"] for c in restored.cells] == [c.metadata["nbgrader"]["grade_id"] for c in nb.cells]


def test_helpers_keep_the_functions_they_call():
    import ast

    tree = ast.parse("def given():\n    return helper()\ndef helper():\n    return 1\ndef graded():\n    return 2\n")
    functions = {n.name: n for n in tree.body}
    assert stubs._called_from({"given"}, functions) == {"given", "helper"}



def test_students_are_judged_on_the_cases_their_kernel_was_given(tmp_path):
    """Students are judged in threads, and 05's generation cases are models made under torch.manual_seed. A
    judge that made its cases again while another thread drew random numbers once expected the tokens of
    another model: the judge must use the cases written for the kernel, never make them again."""
    from concurrent.futures import ThreadPoolExecutor

    from llmcourse import checks, gpt
    from llmcourse.checks.core import to_json

    cells = [c for c in judge.test_cells(source("05_gpt")) if c.grade_id == "test_generate_greedy_cached"]
    name, params = cells[0].calls[0]
    check = checks.REGISTRY[name]
    cases = judge.write_cases(cells, tmp_path)
    key = case_key(name, params)
    # the plain result and the positions the loop ran through `step` (prompt once, each new token once)
    right = [{"ok": to_json((check.output(check.reference(*args), name), len(args[1]) + args[2]))}
             for args in cases[key]]
    original = check.cases
    try:  # what a race on the global random state made: other models
        object.__setattr__(check, "cases", lambda **p: [(gpt.tiny_model(99), prompt, n)
                                                        for _, prompt, n in original(**p)])
        assert judge.judge(cells, {key: right})[0].score == 0, "the race this test stands in for"
        with ThreadPoolExecutor(4) as pool:
            verdicts = list(pool.map(lambda _: judge.judge(cells, {key: right}, cases)[0], range(8)))
    finally:
        object.__setattr__(check, "cases", original)
    assert all(v.score == v.points for v in verdicts), [v.message for v in verdicts]


def test_a_reference_that_changes_its_arguments_cannot_change_the_next_students_cases(tmp_path):
    """The cases are made once per batch and shared by every student's judging; a comparison that calls an
    in-place reference (02's train_step updates W_in and W_out) must not leave the next student other cases."""
    from llmcourse import checks

    cells = [c for c in judge.test_cells(source("01_tokens")) if c.grade_id == "test_merge"]
    name, params = cells[0].calls[0]
    check = checks.REGISTRY[name]
    cases = judge.write_cases(cells, tmp_path)
    key = case_key(name, params)
    right = [{"ok": check.reference(*args)} for args in cases[key]]
    original = check.compare

    def compare_in_place(args, got):  # compares, then changes its arguments as an in-place reference would
        original(args, got)
        args[0].append(999)
    try:
        object.__setattr__(check, "compare", compare_in_place)
        verdicts = [judge.judge(cells, {key: right}, cases)[0] for _ in range(3)]
    finally:
        object.__setattr__(check, "compare", original)
    assert all(v.score == v.points for v in verdicts), [v.message for v in verdicts]
