"""The exercises chain, in the student kit: a function is the student's own once its notebook passes.

When `llmcourse check` finds every visible test of a notebook passing, it saves the notebook's graded functions
(their answer cells, with the imports of the notebook's locked cells) into the student's installation,
`llmcourse/_yours/<assignment>.py`, and notes in `_yours/index.json` which of llmcourse's functions each one
stands for (as d2l's `#@save` collects a reader's functions). From then on, in the kit, the stub of that
function, called from the student's code or from a locked cell of a later notebook (exercise 05's demo runs
`Block`, whose attention calls exercise 03's `causal_mask`), runs the student's saved version. Where none is
saved yet, the stub's message names the exercise to finish first.

Grading does not change: the grading kernel has llmcourse's references for other exercises' functions, so one
weak exercise never costs points in the next. `llmcourse.yours` gives a notebook the student's earlier functions
by their exercise names (`from llmcourse.yours import generate_greedy_cached`).

When the environment variable LLMCOURSE_CHAIN_LOG names a file, every call that runs a saved function appends
one line to it (`llmcourse.attention.causal_mask <- 03_attention.causal_mask`): the tests read it to prove which
functions ran.

Explained in: README.md, section "Students".
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import nbformat

PACKAGE = Path(__file__).resolve().parents[2]
YOURS = PACKAGE / "_yours"  # the student's saved functions (only in the kit: see `in_kit`)
LOG_ENV = "LLMCOURSE_CHAIN_LOG"


def in_kit() -> bool:
    """True in the student kit's package (it ships the released notebooks), not in the course's repository."""
    return (PACKAGE / "_released").is_dir() and not (PACKAGE.parents[1] / "solutions").is_dir()


def check_command(assignment: str) -> str:
    return f"llmcourse check exercises/{assignment}/{assignment}.ipynb"


def finish_first(assignment: str, name: str) -> str:
    """The message of a function that a later notebook needs and the student has not finished."""
    return (f"finish exercise {assignment} ({name}) first: `{check_command(assignment)}` saves your `{name}` "
            "for the later notebooks once its visible tests pass.")


def _meta(cell) -> dict:
    meta = cell.metadata.get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def module_source(notebook: nbformat.NotebookNode, names: set[str]) -> str:
    """The notebook's answer cells as a module: the imports of its locked cells, then each answer cell's imports,
    function and class definitions and constants (no other top-level code runs when it is imported)."""
    keep: list[ast.stmt] = []
    for cell in notebook.cells:
        meta = _meta(cell)
        if cell.cell_type != "code" or meta.get("grade"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                keep.append(node)
            elif meta.get("solution") and (isinstance(node, (ast.FunctionDef, ast.ClassDef)) or (
                    isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant))):
                keep.append(node)
    defined = {n.name for n in keep if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    missing = names - defined
    header = f'"""Your functions, saved by `llmcourse check` (missing: {", ".join(sorted(missing)) or "none"})."""\n'
    return header + ast.unparse(ast.Module(body=keep, type_ignores=[])) + "\n"


def save(notebook: nbformat.NotebookNode, assignment: str, functions: dict[tuple[str, str], str],
         folder: Path = YOURS) -> list[str]:
    """Save the notebook's graded functions: `functions` maps llmcourse's (module, name) to the student's name.
    Returns the student's names saved."""
    folder.mkdir(parents=True, exist_ok=True)
    source = module_source(notebook, set(functions.values()))
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    (folder / f"{assignment}.py").write_text(source, encoding="utf-8")
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    index = {k: v for k, v in index.items() if v.get("assignment") != assignment}
    for (module, name), mine in sorted(functions.items()):
        if mine in defined:
            index[f"{module}.{name}"] = {"assignment": assignment, "name": mine}
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _modules.pop(assignment, None)
    return sorted({v["name"] for v in index.values() if v["assignment"] == assignment})


_modules: dict[str, Any] = {}


def _load(assignment: str, folder: Path) -> Any:
    if assignment not in _modules:
        path = folder / f"{assignment}.py"
        spec = importlib.util.spec_from_file_location(f"llmcourse_yours_{assignment}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _modules[assignment] = module
    return _modules[assignment]


def saved(module: str, name: str, folder: Path = YOURS) -> tuple[Callable, str, str] | None:
    """(the student's saved function, its assignment, its name) standing for llmcourse's `module.name`, if any."""
    index_path = folder / "index.json"
    if not index_path.exists():
        return None
    entry = json.loads(index_path.read_text(encoding="utf-8")).get(f"{module}.{name}")
    if not entry:
        return None
    fn = getattr(_load(entry["assignment"], folder), entry["name"], None)
    return (fn, entry["assignment"], entry["name"]) if callable(fn) else None


def positional(fn: Callable, values: list) -> list:
    """`values` as positional arguments of the student's `fn`, which may have fewer parameters (no `batch=`
    option): the first ones."""
    try:
        params = inspect.signature(fn).parameters.values()
        if not any(p.kind == p.VAR_POSITIONAL for p in params):
            values = values[:len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])]
    except (TypeError, ValueError):
        pass
    return values


def call_saved(found: tuple[Callable, str, str], module: str, name: str, arguments: dict[str, Any]) -> Any:
    """Run the student's saved function on a stub's arguments (by position: the student may have named them
    otherwise, and may have fewer optional ones)."""
    fn, assignment, mine = found
    values = positional(fn, list(arguments.values()))
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{module}.{name} <- {assignment}.{mine}\n")
    return fn(*values)
