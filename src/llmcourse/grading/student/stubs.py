"""A copy of llmcourse in which the functions students write are stubs: for the grading kernel and the kit.

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path
from typing import Callable

from llmcourse import checks
from llmcourse.grading.batch import judge

def build_stubbed_package(target: Path, source_nb, cells) -> None:
    """A copy of llmcourse for the grading kernel. In the modules that hold graded references, every public
    function is a stub, except the helpers the notebook imports (its 'given' names) and the functions those
    helpers call; the graded references themselves are always stubs."""
    package = Path(__file__).resolve().parents[2]
    shutil.copytree(package, target / "llmcourse", ignore=shutil.ignore_patterns("__pycache__"))
    given = judge.given_names(source_nb)
    graded = {(checks.REGISTRY[name].reference.__module__, checks.REGISTRY[name].reference.__name__)
              for cell in cells for name, _ in cell.calls}
    stub_modules(target, graded, given)
    stub_checks(target, kernel=True)


def check_modules() -> list[str]:
    """The modules of llmcourse.checks that define checks (not core, which holds the shared machinery)."""
    return sorted({c.compare.__module__ for c in checks.REGISTRY.values()} - {"llmcourse.checks.core"})


def kernel_needs() -> dict[str, set[str]]:
    """{module: names} of the checks' functions that the grading kernel runs: each check's `output` (the
    student's value turned into plain data) and what it calls. Cases, comparisons and diagnoses run on the
    judge's side."""
    needs: dict[str, set[str]] = {}
    for check in checks.REGISTRY.values():
        for fn in (check.output, *(check.watch or ())[1:]):
            # a lambda (`lambda v, name: _as_fit(v, name, 2)`) is no module-level def: the names it calls are
            names = {fn.__name__, *getattr(getattr(fn, "__code__", None), "co_names", ())}
            needs.setdefault(fn.__module__, set()).update(names)
    return needs


def stub_checks(target: Path, kernel: bool, body: Callable[[str, str, ast.FunctionDef], list[ast.stmt]] | None = None,
                preamble: str = "") -> dict[str, list[str]]:
    """In the copy of llmcourse under `target`, stub what in llmcourse.checks computes an answer or a mistake's
    result. For the grading kernel (`kernel`): every module-level function of a check module except what the
    kernel runs (`kernel_needs`), since the judge compares outside it. For the student kit: the functions marked
    `@diagnosis`, whose `body` replays their recorded results (the comparisons stay: they judge at home).
    Returns {module: [stubbed names]}."""
    needs = kernel_needs()
    stubbed: dict[str, list[str]] = {}
    for module in check_modules():
        path = target / Path(*module.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        keep = _called_from(needs.get(module, set()), functions)
        for name, node in functions.items():
            marked = any(isinstance(d, ast.Name) and d.id == "diagnosis" for d in node.decorator_list)
            if (kernel and name not in keep) or (not kernel and marked):
                node.body = body(module, name, node) if body else ast.parse(
                    f"raise NotImplementedError({CHECK_STUB_MESSAGE!r})").body
                stubbed.setdefault(module, []).append(name)
        if preamble and module in stubbed:
            _insert_preamble(tree, preamble)
        path.write_text(ast.unparse(tree), encoding="utf-8")
    return stubbed


def _insert_preamble(tree: ast.Module, preamble: str) -> None:
    at = next((i for i, n in enumerate(tree.body) if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
               and not (i == 0 and isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))), len(tree.body))
    tree.body[at:at] = ast.parse(preamble).body


def stub_modules(target: Path, graded: set[tuple[str, str]], given: set[tuple[str, str]],
                 body: Callable[[str, str, ast.FunctionDef], list[ast.stmt]] | None = None,
                 preamble: str = "") -> dict[str, list[str]]:
    """Stub, in the copy of llmcourse under `target`, the public functions of every module that holds a graded
    (module, name): all of them except the `given` helpers and what they call; graded ones always. `body(module,
    name, node)` gives a stub's statements (default: raise NotImplementedError); `preamble` is code put after a
    stubbed module's `from __future__` imports. Returns {module: [stubbed names]}."""
    stubbed: dict[str, list[str]] = {}
    for module in sorted({m for m, _ in graded}):
        path = target / Path(*module.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        keep = _called_from({name for m, name in given if m == module}, functions)
        for name, node in functions.items():
            if not name.startswith("_") and (name not in keep or (module, name) in graded):
                node.body = body(module, name, node) if body else ast.parse(f"raise NotImplementedError({STUB_MESSAGE!r})").body
                stubbed.setdefault(module, []).append(name)
        if preamble and module in stubbed:
            _insert_preamble(tree, preamble)
        path.write_text(ast.unparse(tree), encoding="utf-8")
    return stubbed


def _called_from(roots: set[str], functions: dict[str, ast.FunctionDef]) -> set[str]:
    """`roots` and every module-level function they reach by name."""
    keep, todo = set(), [r for r in roots if r in functions]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo += [n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name) and n.id in functions]
    return keep


STUB_MESSAGE = "llmcourse's reference implementations are not available while a notebook is graded"
CHECK_STUB_MESSAGE = "the checks' comparisons run outside the grading kernel"
