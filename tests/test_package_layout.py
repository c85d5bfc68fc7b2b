"""The grading package's flow goes one way (issue 31): no two of its modules import each other, directly or
through others, counting imports inside functions too."""
from __future__ import annotations

import ast
from pathlib import Path

GRADING = Path(__file__).resolve().parents[1] / "src" / "llmcourse" / "grading"


def imports(path: Path, package: Path = GRADING) -> set[str]:
    """The modules of `package` (llmcourse.grading) that `path` imports, anywhere in it
    (`from llmcourse.grading import judge` counts)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "llmcourse.grading":
                found |= {a.name for a in node.names if (package / f"{a.name}.py").exists()}
            elif node.module.startswith("llmcourse.grading."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("llmcourse.grading.")}
    return found - {path.stem}


def test_no_two_grading_modules_import_each_other():
    graph = {p.stem: imports(p) for p in GRADING.glob("*.py") if p.stem != "__init__"}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                cycles.append(" -> ".join(path + [nxt]))
            elif nxt not in path and nxt in graph:
                visit(nxt, path + [nxt])

    for start in graph:
        visit(start, [start])
    assert not cycles, "grading modules import each other: " + "; ".join(sorted(set(cycles))[:10])


def test_the_check_sees_a_cycle(tmp_path):
    """The check above can fail: two modules that import each other, one of them inside a function."""
    (tmp_path / "a.py").write_text("from llmcourse.grading.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from llmcourse.grading import a\n")
    assert imports(tmp_path / "a.py", tmp_path) == {"b"}
    assert imports(tmp_path / "b.py", tmp_path) == {"a"}
