"""How the book and the suite use every core: book/build.py executes the toc's chapters in parallel into the
cache that `jupyter-book build` reads (so the build only renders), and tests/conftest.py hands the suite to
pytest-xdist workers by file, with the book's tests and the grading tests each kept on one worker."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
from conftest import REPO

spec = importlib.util.spec_from_file_location("book_build", REPO / "book" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

PAGE = """---
jupytext:
  text_representation: {{extension: .md, format_name: myst}}
kernelspec: {{display_name: Python 3, language: python, name: python3}}
---
# Page {name}

```{{code-cell}} ipython3
from pathlib import Path
with open(Path("runs.txt").resolve(), "a") as f:  # the page's folder: where myst-nb runs it too
    print("{name}", file=f)
print("{name} ran")
```
"""


def small_book(root: Path, pages: list[str]) -> Path:
    """A book of `pages` (each appends its name to book/runs.txt when it runs), and an unexecuted notebook."""
    (root / "book").mkdir(parents=True)
    for name in pages:
        (root / "book" / f"{name}.md").write_text(PAGE.format(name=name))
    (root / "exercises" / "ex").mkdir(parents=True)
    (root / "exercises" / "ex" / "ex.ipynb").write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": "raise NotImplementedError()"}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}))
    chapters = [{"file": f"book/{name}"} for name in pages[1:-1]]  # the last page: a section of the exercise
    chapters.append({"file": "exercises/ex/ex", "sections": [{"file": f"book/{pages[-1]}"}]})
    (root / "_toc.yml").write_text(json.dumps({"format": "jb-book", "root": f"book/{pages[0]}",
                                               "chapters": chapters}))
    (root / "_config.yml").write_text(
        "title: small\nonly_build_toc_files: true\nexclude_patterns: [_build, .cache]\n"
        "execute:\n  execute_notebooks: cache\n  cache: .cache/jupyter\n  timeout: 120\n"
        "  exclude_patterns: ['exercises/*/*.ipynb']\n")
    (root / "book" / "build.py").write_bytes((REPO / "book" / "build.py").read_bytes())
    return root


def test_the_toc_gives_every_page_with_sections_in_order(tmp_path):
    root = small_book(tmp_path, ["a", "b", "c"])
    assert [p.relative_to(root).as_posix() for p in build.toc_files(root)] == [
        "book/a.md", "book/b.md", "exercises/ex/ex.ipynb", "book/c.md"]


def test_the_course_toc_lists_every_chapter_that_the_book_executes():
    pages = {p.relative_to(REPO).as_posix() for p in build.toc_files(REPO)}
    assert "book/intro.md" in pages and "book/conclusion.md" in pages
    settings = build.execution_settings(REPO)
    assert settings["mode"] == "cache" and settings["cache"] == REPO / ".cache" / "jupyter"


def test_chapters_execute_in_parallel_once_and_the_build_only_renders(tmp_path):
    """Three pages executed two at a time into the cache; then jupyter-book renders without running any page
    again (each run appends to runs.txt), and the unexecuted exercise stays unexecuted; a second build runs
    nothing either."""
    root = small_book(tmp_path, ["a", "b", "c"])
    command = [sys.executable, str(root / "book" / "build.py"), "--jobs", "2"]
    first = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "executing 3 page(s), 2 at a time" in first.stdout
    assert sorted((root / "book" / "runs.txt").read_text().split()) == ["a", "b", "c"], "a page ran twice"
    page = (root / "_build" / "html" / "book" / "b.html").read_text()
    assert "b ran" in page, "the executed output is not in the page"
    times = json.loads((root / ".cache" / "jupyter" / build.TIMES).read_text())
    assert set(times) == {"book/a.md", "book/b.md", "book/c.md"}
    second = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "executing" not in second.stdout
    assert len((root / "book" / "runs.txt").read_text().split()) == 3, "the warm build ran a page"


def test_two_builds_at_once_take_turns(tmp_path):
    """A test run beside `make book`, or two test workers: the second build waits for the first, then finds
    every page cached; no page runs twice."""
    root = small_book(tmp_path, ["a", "b"])
    command = [sys.executable, str(root / "book" / "build.py"), "--jobs", "1"]
    procs = [subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(out[-3000:] for out in outputs)
    assert sum("executing 2 page(s)" in out for out in outputs) == 1, outputs
    assert sorted((root / "book" / "runs.txt").read_text().split()) == ["a", "b"], "a page ran twice"


def test_a_failing_page_fails_the_build_and_names_itself(tmp_path):
    root = small_book(tmp_path, ["a", "b"])
    (root / "book" / "b.md").write_text(PAGE.format(name="b").replace('print("b ran")', "1 / 0"))
    result = subprocess.run([sys.executable, str(root / "book" / "build.py")], cwd=root, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 1
    assert "FAILED book/b.md" in result.stdout and "ZeroDivisionError" in result.stdout


@pytest.mark.parametrize("nodeid, scope", [
    ("tests/test_book.py::test_x", "book"), ("tests/test_browser.py::test_y[book/01_tokens.html]", "book"),
    ("tests/test_kit.py::test_y[1]", "book"),
    ("tests/test_exercises.py::test_z[03_attention]", "graded 03_attention"),
    ("tests/test_exercises.py::test_z[03_attention-attention_no_scale]", "graded 03_attention"),
    ("tests/test_report.py::test_z[08_your_gpt]", "graded 08_your_gpt"),
    ("tests/test_exercises.py::test_grades_csv", "tests/test_exercises.py"),
    ("tests/test_grading_hostile.py::test_w", "tests/test_grading_hostile.py"),
    ("tests/test_kit_venv.py::test_v[01_tokens]", "tests/test_kit_venv.py"),
    ("tests/test_tokens.py::test_a", "tests/test_tokens.py"), ("tests/test_tokens.py::T::test_b", "tests/test_tokens.py")])
def test_what_goes_to_one_worker_together(nodeid, scope):
    """The book's tests stay on one worker; the graded batches' tests go out one assignment at a time; other tests
    by file."""
    assert conftest.scope_of(nodeid) == scope


def test_the_longest_tests_are_handed_out_first():
    order = sorted(["tests/test_tokens.py::t", "tests/test_kit.py::t", "tests/test_grading_hostile.py::t",
                    "tests/test_report.py::t[01_tokens]", "tests/test_exercises.py::t[08_your_gpt-x]",
                    "tests/test_exercises.py::t_all", "tests/test_cluster.py::t"], key=conftest.rank_of)
    assert order == ["tests/test_exercises.py::t[08_your_gpt-x]", "tests/test_report.py::t[01_tokens]",
                     "tests/test_grading_hostile.py::t", "tests/test_exercises.py::t_all", "tests/test_cluster.py::t",
                     "tests/test_tokens.py::t", "tests/test_kit.py::t"]


def test_the_scheduler_hands_out_the_scopes():
    pytest.importorskip("xdist")
    scheduling = conftest.GroupsOnOneWorker.scheduling()
    scheduler = scheduling.__new__(scheduling)  # _split_scope reads no state
    assert scheduler._split_scope("tests/test_report.py::test_z[05_gpt]") == "graded 05_gpt"
    assert scheduler._split_scope("tests/test_tokens.py::T::test_b") == "tests/test_tokens.py"
