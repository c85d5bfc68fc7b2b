"""The grading package's flow goes one way (issue 31): no two of its modules import each other, directly or
through others, counting imports inside functions too; and each module lives in the sub-package of those it
serves (kernel, batch, student), with course, shared by all, at the top."""
from __future__ import annotations

import ast
from pathlib import Path

GRADING = Path(__file__).resolve().parents[1] / "src" / "llmcourse" / "grading"


def module_name(path: Path, package: Path = GRADING) -> str:
    """`batch/judge.py` -> "batch.judge": the module's name under llmcourse.grading."""
    return ".".join(path.relative_to(package).with_suffix("").parts)


def imports(path: Path, package: Path = GRADING) -> set[str]:
    """The modules of `package` (llmcourse.grading) that `path` imports, anywhere in it, by `module_name`
    (`from llmcourse.grading.batch import judge` counts as "batch.judge"; a package's `__init__` is not counted)."""
    known = {module_name(p, package) for p in package.rglob("*.py") if p.stem != "__init__"}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmcourse.grading"):
            base = node.module.removeprefix("llmcourse.grading").lstrip(".")
            for alias in node.names:
                name = f"{base}.{alias.name}" if base else alias.name
                found.add(name if name in known else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("llmcourse.grading.") for a in node.names
                      if a.name.startswith("llmcourse.grading.")}
    return (found & known) - {module_name(path, package)}


def graph(package: Path = GRADING) -> dict[str, set[str]]:
    return {module_name(p, package): imports(p, package) for p in package.rglob("*.py") if p.stem != "__init__"}


def test_no_two_grading_modules_import_each_other():
    edges = graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == path[0]:
                cycles.append(" -> ".join(path + [nxt]))
            elif nxt not in path and nxt in edges:
                visit(nxt, path + [nxt])

    for start in edges:
        visit(start, [start])
    assert not cycles, "grading modules import each other: " + "; ".join(sorted(set(cycles))[:10])


def test_the_check_sees_a_cycle(tmp_path):
    """The check above can fail: two modules that import each other, one of them inside a function, across
    sub-packages."""
    (tmp_path / "x").mkdir()
    (tmp_path / "a.py").write_text("from llmcourse.grading.x.b import f\n")
    (tmp_path / "x" / "b.py").write_text("def f():\n    from llmcourse.grading import a\n")
    assert imports(tmp_path / "a.py", tmp_path) == {"x.b"}
    assert imports(tmp_path / "x" / "b.py", tmp_path) == {"a"}
    assert graph(tmp_path) == {"a": {"x.b"}, "x.b": {"a"}}


def test_each_module_is_in_the_room_of_those_it_serves():
    """kernel: what runs in the grading kernel and its worker process; batch: `llmcourse grade`, the instructor's
    pipeline; student: what students receive and how it is made; course: shared, at the top."""
    rooms = {name.split(".")[0] if "." in name else "" for name in graph()}
    assert rooms == {"", "kernel", "batch", "student"}, rooms
    assert {name for name in graph() if "." not in name} == {"course"}
    for module in ["kernel.sandbox", "kernel.worker", "batch.pipeline", "batch.judge", "student.kit",
                   "student.check"]:
        assert module in graph(), module
