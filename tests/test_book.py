"""The book builds, executed, with warnings as errors, every chapter shows its figures offline, and no page
shows the body of a function that an exercise grades."""
from __future__ import annotations

import ast
import builtins
import html
import inspect
import keyword
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from conftest import REPO, build_book
from llmcourse import checks


FIGURES = {"intro": 2, "01_tokens": 4, "02_word2vec": 5, "03_attention": 8, "04_ffn_memory": 7, "05_gpt": 7,
           "06_training": 4, "07_scaling": 6, "08_your_gpt": 5, "conclusion": 2}  # executed matplotlib figures each page must show


def chapters() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [entry["file"] for entry in toc["chapters"] if entry["file"].startswith("book/")]


@pytest.fixture(scope="module")
def built_book() -> Path:
    return build_book()


def test_every_chapter_is_in_the_toc_and_exists():
    assert chapters(), "_toc.yml lists no chapters"
    for chapter in chapters():
        assert (REPO / f"{chapter}.md").exists(), f"{chapter}.md is in _toc.yml but missing"
    listed = set(chapters())
    for path in (REPO / "book").glob("[0-9][0-9]_*.md"):
        assert f"book/{path.stem}" in listed, f"{path.name} is not in _toc.yml"


def test_each_chapter_shows_its_executed_figures(built_book):
    root = yaml.safe_load((REPO / "_toc.yml").read_text())["root"]
    for chapter in [root] + chapters():
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


# --- no page shows graded code --------------------------------------------------------------------------------
#
# A chapter explains a graded function by its maths, a call and a figure, never by printing its body. A body is
# compared line by line after normalising both sides to the *shape* of the code: identifiers that are not Python
# keywords or builtins become `_`, whitespace and comments go, and a leading `return` or plain assignment target
# (`x =`, `a, b =`) is dropped, so renaming variables, or writing `cos = ...` for `return ...`, changes nothing.
# Lines that say nothing once normalised (`else:`, `pass`, `)`, `return out` or `return out, weights`) are left
# out on both sides, so the lines around them count as consecutive.

RUN = 3                                      # consecutive body lines that count as showing the body
MIN_TOKENS = 3                               # shorter normalised lines (`else :`, `_`) are structure only
_KEEP = frozenset(keyword.kwlist) | frozenset(dir(builtins))  # names kept as they are
_TOKEN = re.compile(r"""[rbuRBUfF]{0,2}(?:'[^'\n]*'|"[^"\n]*")   # a string literal (on one line)
                      |[^\W\d]\w*                                 # an identifier or a keyword
                      |\d[\w.]*                                   # a number
                      |\#.*                                       # a comment
                      |\*\*=?|//=?|<<=?|>>=?|->|[-+*/%@&|^<>=!:]=|\S   # an operator or bracket
                   """, re.VERBOSE)


def normalise(line: str) -> str:
    """The shape of one line of code: 'scores = q @ k.T / 8  # note' -> '_ @ _ . _ / 8'."""
    tokens = []
    for token in _TOKEN.findall(line):
        if token.startswith("#"):
            break
        if token.isidentifier():
            token = token if token in _KEEP else "_"
        tokens.append(token)
    if tokens[:1] == ["return"]:
        tokens = tokens[1:]
    depth = 0
    for i, token in enumerate(tokens):               # a plain target (`x =`, `a, b =`, `self.w =`) is dropped
        depth += (token in "([{") - (token in ")]}")
        if token == "=" and depth == 0:
            if set(tokens[:i]) <= {"_", ".", ","}:
                tokens = tokens[i + 1:]
            break
    return " ".join(tokens)


def substantive(shape: str) -> bool:
    tokens = shape.split()
    return len(tokens) >= MIN_TOKENS and not set(tokens) <= {"_", ","}


def code_lines(text: str) -> list[str]:
    """The substantive normalised lines of some text, in order."""
    return [shape for shape in map(normalise, text.splitlines()) if substantive(shape)]


def page_lines(page_html: str) -> list[str]:
    """The substantive normalised lines of a rendered page: scripts and styles dropped, tags stripped, entities
    unescaped (code blocks keep their line breaks; each Pygments token is only wrapped in a <span>)."""
    text = re.sub(r"<(script|style)\b.*?</\1>", "", page_html, flags=re.S | re.I)
    return code_lines(html.unescape(re.sub(r"<[^>]*>", "", text)))


def body_lines(fn: Callable) -> list[str]:
    """The substantive normalised lines of a function's body: its signature and docstring left out."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))
    node = ast.parse(source).body[0]
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if not body:
        return []
    lines = source.splitlines()[body[0].lineno - 1:node.end_lineno]
    lines[0] = lines[0][body[0].col_offset:]                # in case the body starts on the signature's line
    return code_lines("\n".join(lines))


def shows_body(page: list[str], body: list[str]) -> bool:
    """True when `RUN` consecutive lines of the body (all of it, if shorter) are consecutive lines of the page."""
    n = min(RUN, len(body))
    if n == 0:
        return False
    runs = {tuple(page[i:i + n]) for i in range(len(page) - n + 1)}
    return any(tuple(body[i:i + n]) in runs for i in range(len(body) - n + 1))


@dataclass(frozen=True)
class Graded:
    function: Callable
    assignment: str          # the exercise that grades it
    work_of: str = ""        # for a helper: the graded function whose work it does

    @property
    def name(self) -> str:
        return f"{self.function.__module__}.{self.function.__qualname__}"


def graded_functions() -> list[Graded]:
    """The reference of every check, and each helper of its own module that a reference calls and that the
    exercise does not hand out (`analogy` is `analogy_scores` plus a top-k: showing the helper shows the answer)."""
    notebooks = {nb.parent.name: nb.read_text(encoding="utf-8") for nb in (REPO / "exercises").glob("*/*.ipynb")}
    graded: dict[Callable, Graded] = {}
    for check in checks.REGISTRY.values():
        assignment = next((a for a, text in sorted(notebooks.items()) if f"{check.check_name}(" in text), "?")
        graded[inspect.unwrap(check.reference)] = Graded(inspect.unwrap(check.reference), assignment)
    for ref in list(graded.values()):
        module = sys.modules[ref.function.__module__]
        called = {n.id for n in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(ref.function))))
                  if isinstance(n, ast.Name)}
        for name in sorted(called):
            helper = getattr(module, name, None)
            given = re.search(rf"from {module.__name__} import [^\n]*\b{name}\b", notebooks.get(ref.assignment, ""))
            if (inspect.isfunction(helper) and helper.__module__ == module.__name__ and helper not in graded
                    and not given):
                graded[helper] = Graded(helper, ref.assignment, work_of=ref.name)
    return list(graded.values())


def problems_in(page_html: str, page_name: str, graded: list[Graded]) -> list[str]:
    """One message per graded function whose body the page shows."""
    page = page_lines(page_html)
    return [f"{page_name} shows the body of {g.name}{f' (the work of {g.work_of})' if g.work_of else ''}, "
            f"which exercise {g.assignment} grades"
            for g in graded if shows_body(page, body_lines(g.function))]


def published_pages(html_root: Path) -> list[Path]:
    skip = {"_static", "_sources", "_images"}
    return sorted(p for p in html_root.rglob("*.html")
                  if not skip & set(p.relative_to(html_root).parts) and p.stem not in {"genindex", "search"})


def test_no_page_shows_the_body_of_a_graded_function(built_book):
    graded = graded_functions()
    pages = published_pages(built_book)
    assert {"book/01_tokens.html", "exercises/01_tokens/01_tokens.html"} <= {
        p.relative_to(built_book).as_posix() for p in pages}, "the chapter and exercise pages were not found"
    problems = [message for page in pages for message in
                problems_in(page.read_text(encoding="utf-8"), page.relative_to(built_book).as_posix(), graded)]
    assert not problems, "a chapter explains a graded function by its maths and a call, not by its code:\n" + \
        "\n".join(problems)


# --- the detector itself, without the book ---------------------------------------------------------------------

GRADED = graded_functions()


def rendered(code: str) -> str:
    """Code as a page shows it: Pygments' HTML (every token in a <span>, entities escaped) between some prose."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return f"<p>Some prose &amp; a formula.</p>\n{highlight(code, PythonLexer(), HtmlFormatter())}\n<p>More.</p>"


def renamed(fn: Callable) -> str:
    """The source of `fn`, re-indented, with every argument and local variable renamed (var0, var1, ...)."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))
    tree = ast.parse(source)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    for i, name in enumerate(sorted(names)):
        source = re.sub(rf"(?<![\w.]){name}\b", f"var{i}", source)
    return textwrap.indent(source, "  ")


def stub(fn: Callable) -> str:
    """What an exercise page shows of a graded function: its signature and docstring, then the stub."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))
    node = ast.parse(source).body[0]
    first = node.body[1] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body[0]
    head = "\n".join(source.splitlines()[:first.lineno - 1])
    return f"{head}\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"


@pytest.mark.parametrize("graded", GRADED, ids=lambda g: g.name)
def test_detector_finds_the_body_verbatim_and_renamed(graded):
    assert body_lines(graded.function), f"{graded.name}: no line of its body can be compared"
    verbatim = inspect.getsource(graded.function)
    assert problems_in(rendered(verbatim), "page.html", [graded]) == [
        f"page.html shows the body of {graded.name}{f' (the work of {graded.work_of})' if graded.work_of else ''}, "
        f"which exercise {graded.assignment} grades"]
    copy = renamed(graded.function)
    assert copy.split() != verbatim.split(), "nothing was renamed"
    assert problems_in(rendered(copy), "page.html", [graded]), f"a renamed copy of {graded.name} is not found"


def test_detector_finds_a_graded_function_rewritten_inline_in_a_chapter_cell():
    cell = """
    toks = list(b"abcabc")
    joined, pos = [], 0
    while pos < len(toks):                                # the same loop as tokens.merge, other names
        if pos + 1 < len(toks) and (toks[pos], toks[pos + 1]) == (97, 98):
            joined.append(256)
            pos += 2
        else:
            joined.append(toks[pos])
            pos += 1
    sim = (u * w).sum(dim=-1) / (u.norm(dim=-1) * w.norm(dim=-1))   # tokens.cosine_similarity, inline
    """
    found = problems_in(rendered(textwrap.dedent(cell)), "book/01_tokens.html", GRADED)
    assert found == ["book/01_tokens.html shows the body of llmcourse.tokens.merge, which exercise 01_tokens grades",
                     "book/01_tokens.html shows the body of llmcourse.tokens.cosine_similarity, which exercise "
                     "01_tokens grades"]


def test_detector_passes_a_page_that_calls_graded_functions_and_shows_their_stubs():
    import contextlib
    import io

    import torch

    from llmcourse import attention, ffn, tokens

    cell = textwrap.dedent("""
        print(tokens.count_pairs([1, 2, 1, 2]))
        print(tokens.merge([1, 2, 3, 1, 2], (1, 2), 256))
        merges = tokens.train_bpe("low lower lowest", 4)
        print(merges, tokens.decode(tokens.encode("lowest", merges), merges))
        a, b = torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
        print(tokens.cosine_similarity(a, b))
        print(tokens.sinusoidal_positions(3, 4))
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 4, 8, generator=gen) for _ in range(3))
        out, weights = attention.scaled_dot_product_attention(q, k, v, attention.causal_mask(4))
        print(attention.causal_mask(4).int(), weights[0].sum(-1))
        x = torch.randn(2, 5, 12, generator=gen)
        heads = attention.split_heads(x, 3)
        print(tuple(heads.shape), torch.equal(attention.merge_heads(heads), x))
        W1, b1, W2, b2 = torch.randn(12, 48), torch.randn(48), torch.randn(48, 12), torch.randn(12)
        acts = ffn.key_activations(x, W1, b1)
        parts = ffn.weighted_values(acts, W2)
        print(f"{(parts.sum(-2) + b2 - ffn.ffn(x, W1, b1, W2, b2)).abs().max():.1e}")
        print(ffn.promoted_tokens(W2[0], torch.randn(20, 12, generator=gen), 3))
    """)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(cell, {"torch": torch, "tokens": tokens, "attention": attention, "ffn": ffn})
    stubs = "\n\n".join(stub(g.function) for g in GRADED)
    page = rendered(cell) + f"<pre>{html.escape(output.getvalue())}</pre>" + rendered(stubs)
    assert "raise NotImplementedError()" in html.unescape(re.sub(r"<[^>]*>", "", page))
    assert problems_in(page, "book/page.html", GRADED) == []


def test_the_intro_lists_every_chapter_of_the_toc(built_book):
    """The intro's chapter list is generated from _toc.yml, so every chapter's title is on the page."""
    page = html.unescape(re.sub(r"<[^>]+>", "", (built_book / "book" / "intro.html").read_text(encoding="utf-8")))
    for chapter in chapters():
        heading = next(line for line in (REPO / f"{chapter}.md").read_text(encoding="utf-8").splitlines()
                       if line.startswith("# "))
        assert heading[2:].strip() in page, f"the intro does not list {chapter}"


PAGE_WIDTH = 88  # characters of code a code box holds at laptop width (book/assets/course.css)


def _columns(line: str) -> int:
    """The width of a line in a monospace font: CJK characters take two columns."""
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def _code_lines() -> list[tuple[str, str]]:
    """(page, line) of every code line a reader sees: the chapters' code cells and the exercises' code cells."""
    import nbformat
    lines = []
    for chapter in chapters() + ["book/intro"]:
        path = REPO / f"{chapter}.md"
        if not path.exists():
            continue
        inside = False
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("```{code-cell}"):
                inside = True
            elif inside and line.startswith("```"):
                inside = False
            elif inside and not line.startswith(":tags:"):
                lines.append((chapter, line))
    for notebook in sorted((REPO / "exercises").glob("*/*.ipynb")):
        for cell in nbformat.read(notebook, as_version=4).cells:
            if cell.cell_type == "code":
                lines += [(notebook.stem, line) for line in cell.source.splitlines()]
    return lines


def test_code_lines_fit_the_page():
    too_wide = [f"{page}: {_columns(line)} columns: {line.strip()[:70]}" for page, line in _code_lines()
                if _columns(line) > PAGE_WIDTH]
    assert not too_wide, (f"{len(too_wide)} code lines are wider than the code box ({PAGE_WIDTH} characters, "
                          "CJK characters count two); readers would scroll sideways:\n" + "\n".join(too_wide[:40]))


def test_chinese_text_in_figures_has_a_font():
    """The chapters' figures run with book/matplotlibrc: Chinese falls back to the CJK font `make` installs."""
    code = ("import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots(); ax.set_title('如何进行机器学习 (how to do machine learning)')\n"
            "fig.savefig(__import__('io').BytesIO())\n")
    result = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], cwd=REPO / "book",
                            capture_output=True, text=True)
    assert result.returncode == 0, ("Chinese text in a figure has no font (make installs Debian's "
                                    "fonts-wqy-microhei):\n" + result.stderr[-800:])
