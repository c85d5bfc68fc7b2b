"""The trusted half of grading: what each test cell checks, the cases it runs, and the verdicts.

A test cell of a source notebook contains only calls of checks with literal arguments, e.g.
`check_encode(encode, texts=["a b"], num_merges=60)`. The grader reads those calls from the *source*
notebook (the student cannot change it), writes each call's cases for the kernel, and afterwards judges the
plain results the kernel recorded, in the grader's own process, with the reference. Nothing the student's
code does in the kernel (patching checks, numpy, AssertionError) reaches this process.

Explained in: README.md, section "Grading".
"""
from __future__ import annotations

import ast
import copy
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import torch

from llmcourse import checks
from llmcourse.checks.core import case_key

MAX_RECORDS_BYTES = 64 * 2**20  # a kernel cannot make the grader read more than this

# Students are graded in threads, and a check's reference may draw from torch's global random state (a model's
# initialisation under `manual_seed`). Two judges at once once gave a student the expected tokens of another
# model: one judge at a time, on the very cases the kernel was given.
_ONE_AT_A_TIME = threading.Lock()


@dataclass
class TestCell:
    grade_id: str
    points: float
    hidden: bool
    calls: list[tuple[str, dict]] = field(default_factory=list)  # (check name, params)


class NotACheckCall(ValueError):
    """A test cell contains something other than calls of checks with literal arguments."""


def test_cells(notebook: nbformat.NotebookNode) -> list[TestCell]:
    """The graded cells of a source notebook and the check calls each makes."""
    cells = []
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade"):
            continue
        test = TestCell(meta["grade_id"], float(meta.get("points", 0)), "BEGIN HIDDEN TESTS" in cell.source)
        for node in ast.parse(cell.source).body:
            test.calls.append(_check_call(node, meta["grade_id"]))
        if not test.calls:
            raise NotACheckCall(f"test cell {meta['grade_id']} calls no check")
        cells.append(test)
    return cells


def _check_call(node: ast.stmt, grade_id: str) -> tuple[str, dict]:
    where = f"test cell {grade_id}, line {node.lineno}"
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)):
        raise NotACheckCall(f"{where}: test cells may only call checks, e.g. check_merge(merge)")
    call = node.value
    name = call.func.id
    if name not in checks.REGISTRY:
        raise NotACheckCall(f"{where}: {name} is not a registered check")
    if len(call.args) != 1 or not isinstance(call.args[0], ast.Name):
        raise NotACheckCall(f"{where}: {name} takes the student's function as its one positional argument")
    try:
        params = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except ValueError:
        raise NotACheckCall(f"{where}: the parameters of {name} must be literals") from None
    return name, params


def given_names(notebook: nbformat.NotebookNode) -> set[tuple[str, str]]:
    """(module, name) pairs the notebook's locked code cells import from llmcourse: helpers students may use."""
    given = set()
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("grade") or meta.get("solution"):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmcourse."):
                given |= {(node.module, alias.name) for alias in node.names}
    return given


def write_cases(cells: list[TestCell], folder: Path) -> dict[str, list]:
    """One file per check call: the argument tuples the kernel passes to the student's function.
    Returns them, key -> cases, for judging every student on exactly what their kernel was given."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for cell in cells:
        for name, params in cell.calls:
            key = case_key(name, params)
            if key not in written:
                written[key] = checks.REGISTRY[name].cases(**params)
                torch.save(written[key], folder / f"{key}.pt")
    return written


def read_records(path: Path) -> dict[str, list[dict]]:
    """The kernel's records, key -> results of the last record with that key; malformed lines are ignored."""
    records: dict[str, list[dict]] = {}
    if not path.is_file():
        return records
    with open(path, "rb") as f:
        data = f.read(MAX_RECORDS_BYTES)
    for line in data.splitlines():
        try:
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("results"), list):
                records[str(record["key"])] = [r for r in record["results"] if isinstance(r, dict)]
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
    return records


@dataclass
class Verdict:
    grade_id: str
    points: float
    score: float
    hidden: bool
    message: str  # '' when passed
    note: str = ""  # when passed: what the checks' `remark` adds (shown under "✓ passed" in the feedback)


def judge(cells: list[TestCell], records: dict[str, list[dict]],
          cases: dict[str, list] | None = None) -> list[Verdict]:
    """A cell scores its points only if every check call in it has recorded results that are right.
    `cases`: what `write_cases` returned (else each check's cases are made again)."""
    verdicts = []
    with _ONE_AT_A_TIME:
        for cell in cells:
            message, notes = "", []
            for name, params in cell.calls:
                key = case_key(name, params)
                given = copy.deepcopy((cases or {}).get(key))  # a reference may change its arguments in place
                check = checks.REGISTRY[name]
                message = check.judge(params, records.get(key), given) or ""
                if message:
                    break
                if check.remark is not None and not cell.hidden:
                    notes.append(check.remarks(params, records.get(key), copy.deepcopy((cases or {}).get(key))))
            verdicts.append(Verdict(cell.grade_id, cell.points, 0.0 if message else cell.points, cell.hidden,
                                    message, "" if message else "\n".join(n for n in notes if n)))
    return verdicts
