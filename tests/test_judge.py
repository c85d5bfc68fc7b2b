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
from llmcourse.grading import judge, stubs
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
