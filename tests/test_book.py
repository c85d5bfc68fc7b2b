"""The book builds, executed, with warnings as errors, and every chapter shows its figures offline."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

FIGURES = {"01_tokens": 4, "02_word2vec": 4, "03_attention": 7, "04_ffn_memory": 7}  # executed matplotlib figures each chapter must show


def chapters() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [entry["file"] for entry in toc["chapters"] if entry["file"].startswith("book/")]


@pytest.fixture(scope="module")
def built_book() -> Path:
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", ".", "--builder", "html", "-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, "the book does not build:\n" + (result.stdout + result.stderr)[-6000:]
    return REPO / "_build" / "html"


def test_every_chapter_is_in_the_toc_and_exists():
    assert chapters(), "_toc.yml lists no chapters"
    for chapter in chapters():
        assert (REPO / f"{chapter}.md").exists(), f"{chapter}.md is in _toc.yml but missing"
    listed = set(chapters())
    for path in (REPO / "book").glob("[0-9][0-9]_*.md"):
        assert f"book/{path.stem}" in listed, f"{path.name} is not in _toc.yml"


def test_each_chapter_shows_its_executed_figures(built_book):
    for chapter in chapters():
        page = (built_book / f"{chapter}.html").read_text(encoding="utf-8")
        images = re.findall(r'<img[^>]+src="[^"]*_images/[^"]+\.png"', page)
        want = FIGURES.get(Path(chapter).name, 0)
        assert len(images) >= want, f"{chapter}: {len(images)} figures, expected at least {want}"
        assert "Traceback" not in page, f"{chapter}: a cell printed a traceback"


def test_exercises_are_in_the_book_unexecuted(built_book):
    for assignment in (REPO / "exercises").iterdir():
        page = built_book / "exercises" / assignment.name / f"{assignment.name}.html"
        assert page.exists(), f"exercise {assignment.name} is not in the book (add it to _toc.yml)"
        assert "NotImplementedError" in page.read_text(encoding="utf-8"), "the exercise page should show the stubs"
    assert not (built_book / "solutions").exists(), "solutions must not be published"


def test_pages_load_nothing_from_the_internet(built_book):
    for page in built_book.rglob("*.html"):
        raw = page.read_text(encoding="utf-8")
        external = re.findall(r"<(?:script|link|img)[^>]+(?:src|href)=[\"']?(https?://[^\"' >]+)", raw)
        assert not external, f"{page.relative_to(built_book)} loads {external[:3]}"
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists(), "MathJax must be served by the book"
