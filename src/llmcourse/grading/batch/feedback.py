"""Feedback pages for students that show their results, never a hidden test, and run no script but MathJax.

nbgrader's own feedback quotes hidden tests in tracebacks (see ../shared/pitfalls.md): `FeedbackFilter`
runs before its `ClearHiddenTests` and keeps only verdicts. `feedback_page` puts the trusted verdicts into
the autograded notebook, bounds every output and the page's size, renders it with nbgrader's feedback
template (without nbgrader's app, its gradebook or a lock), and `secure_page` passes the result through an
allow-list sanitizer under a Content-Security-Policy, with MathJax served locally.

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import base64
import copy
import html as htmlmod
import importlib.util
import json
import re
import shutil
from pathlib import Path

import jinja2
import nbformat
import nh3
from nbconvert import HTMLExporter
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from llmcourse.data import DATA_DIR
from llmcourse.grading.course import HIDDEN_BEGIN, MAX_OUTPUT_CHARS

MAX_SOURCE_CHARS = 20_000  # of one cell's source, shown on a feedback page
MAX_IMAGE_CHARS = 1_500_000  # of one image (base64), shown on a feedback page
PAGE_BUDGET = 3_000_000  # characters of sources and outputs per page; further cells and outputs are cut
CELL_COST = 1_000  # what a cell costs of PAGE_BUDGET besides its text (its markup): 3,000 cells at most
MAX_PAGE_CHARS = 8_000_000  # of a rendered page's body, cut beyond (with a "truncated" line)


class FeedbackFilter(Preprocessor):
    """Runs before ClearHiddenTests. A cell with hidden tests shows only whether it passed; other graded
    cells keep their error as `Name: message` without the traceback (which can quote hidden code). Every
    output is reduced to what a page may show (`safe_output`), and the page to a size budget: a cell's
    source beyond MAX_SOURCE_CHARS, and cells and outputs beyond PAGE_BUDGET, give way to a "cut" line."""

    enabled = Bool(True)

    def preprocess(self, nb, resources):
        self.budget = PAGE_BUDGET
        nb, resources = super().preprocess(nb, resources)
        nb.cells = _merge_left_out(nb.cells)
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        meta = cell.metadata.get("nbgrader", {}) if isinstance(cell.metadata.get("nbgrader"), dict) else {}
        graded = bool(meta.get("grade"))
        if cell.cell_type not in ("code", "markdown"):  # raw cells (and anything else) are not shown
            cell.cell_type, cell.source, cell.metadata = "markdown", "", {}
        if not graded and self.budget <= 0:
            cell.metadata[LEFT_OUT] = True
            cell.source, cell.cell_type = "", "markdown"
            return cell, resources
        if len(cell.source) > MAX_SOURCE_CHARS:
            cut = f"[cell cut: {len(cell.source):,} characters in all, the first {MAX_SOURCE_CHARS:,} shown]"
            cell.source = cell.source[:MAX_SOURCE_CHARS] + ("\n# " if cell.cell_type == "code" else "\n\n") + cut
        self.budget -= len(cell.source) + CELL_COST
        if cell.cell_type != "code":
            cell.pop("attachments", None)  # attachment: images would be one more way in; the text stays
            return cell, resources
        if graded and HIDDEN_BEGIN in cell.source:
            failed = any(o.get("output_type") == "error" for o in cell.outputs)
            verdict = "Hidden tests: failed." if failed else "Hidden tests: passed."
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=verdict + "\n")]
            return cell, resources
        outputs = []
        for out in cell.outputs:
            if self.budget <= 0 and not graded:
                outputs.append(_text_output(f"[{len(cell.outputs) - len(outputs)} outputs not shown: the "
                                            "feedback page reached its size limit]"))
                break
            out = safe_output(out)
            last = outputs[-1] if outputs else None
            if out.output_type == "stream" and last and last.output_type == "stream" and last.name == out.name:
                self.budget += _size(last)  # one print that reached the kernel's output in pieces: one block
                last.text = _cut(last.text + out.text)
                out = outputs.pop()
            self.budget -= _size(out)
            outputs.append(out)
        cell.outputs = outputs
        return cell, resources


LEFT_OUT = "llmcourse_left_out"


def _merge_left_out(cells):
    """Consecutive cells left out for the page's size become one line saying how many."""
    merged, run = [], 0
    for cell in [*cells, None]:
        if cell is not None and cell.metadata.get(LEFT_OUT):
            run += 1
            continue
        if run:
            merged.append(nbformat.v4.new_markdown_cell(
                f"*[{run:,} cells not shown: the feedback page reached its size limit (truncated)]*"))
            run = 0
        if cell is not None:
            merged.append(cell)
    return merged


def _text_output(text: str):
    return nbformat.v4.new_output("stream", name="stdout", text=text + "\n")


def _size(out) -> int:
    return len(json.dumps(out, default=str))


def _cut(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [output cut (truncated): {len(text):,} characters in all]\n"


IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif")
TEXT_TYPES = ("text/html", "text/markdown", "text/latex", "text/plain")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value if isinstance(value, str) else str(value)


def safe_output(out):
    """One output as the feedback page may show it: streams and errors cut to MAX_OUTPUT_CHARS; of a display,
    only text (HTML and Markdown are sanitized when the page is made), images given as base64 (cut above
    MAX_IMAGE_CHARS) and SVG (shown as an image, where it runs nothing); no metadata but a numeric size;
    anything else (JavaScript, widgets, unknown types) becomes a line saying it is not shown."""
    kind = out.get("output_type")
    if kind == "stream":
        return nbformat.v4.new_output("stream", name="stderr" if out.get("name") == "stderr" else "stdout",
                                      text=_cut(_text(out.get("text", ""))))
    if kind == "error":
        ename, evalue = _cut(_text(out.get("ename", "")), 200), _cut(_text(out.get("evalue", "")))
        return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
    if kind not in ("display_data", "execute_result"):
        return _text_output(f"[an output of type {str(kind)[:40]!r} is not shown]")
    data = out.get("data") if isinstance(out.get("data"), dict) else {}
    meta = out.get("metadata") if isinstance(out.get("metadata"), dict) else {}
    kept, notes = {}, []
    for mime, value in data.items():
        value = _text(value)
        if mime in IMAGE_TYPES or mime == "image/svg+xml":
            if mime == "image/svg+xml":
                value = base64.b64encode(value.encode("utf-8", "replace")).decode()
            if len(value) > MAX_IMAGE_CHARS:
                notes.append(f"[an image of {len(value) * 3 // 4:,} bytes is not shown (truncated)]")
            elif not _BASE64.fullmatch(value):
                notes.append("[an image whose data is not base64 is not shown]")
            elif mime == "image/svg+xml":
                kept["text/html"] = f'<img alt="figure" src="data:image/svg+xml;base64,{value}">'
            else:
                kept[mime] = value
        elif mime in TEXT_TYPES:
            kept.setdefault(mime, _cut(value))
        else:
            notes.append(f"[an output of type {mime[:60]!r} is not shown]")
    if notes and not kept:
        kept["text/plain"] = "\n".join(notes)
    size = {}
    for mime in IMAGE_TYPES:
        for key in ("width", "height"):
            value = (meta.get(mime) or {}).get(key) if isinstance(meta.get(mime), dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 10_000:
                size.setdefault(mime, {})[key] = int(value)
    result = nbformat.v4.new_output("display_data", data=kept, metadata=size)
    return result


class _CompiledTemplates(jinja2.BytecodeCache):
    """Jinja's compiled templates, kept in this process (keyed by name and checked against the source by jinja)."""

    def __init__(self) -> None:
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


_COMPILED = _CompiledTemplates()


class FeedbackExporter(HTMLExporter):
    """nbconvert's HTMLExporter (the settings of `HTMLExporter` apply), which compiles its templates once per
    process rather than for every page (about 0.3 s a student)."""

    def _create_environment(self):
        environment = super()._create_environment()
        environment.bytecode_cache = _COMPILED
        return environment


MAX_NOTE_CHARS = 2000  # of a passed check's remark (a trained model's sample), shown under "✓ passed"


def put_verdicts(nb, verdicts) -> None:
    """Each test cell's output becomes the trusted verdict: ✓ passed, or the check's message; its score is
    the verdict's (what the page's table of contents and cell headings show)."""
    by_id = {v.grade_id: v for v in verdicts}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        v = by_id.get(meta.get("grade_id")) if isinstance(meta, dict) else None
        if v is None:
            continue
        meta.update(score=v.score, points=v.points)
        if v.message:
            cell.outputs = [nbformat.v4.new_output("error", ename="CheckFailed", evalue=v.message, traceback=[])]
        else:
            note = getattr(v, "note", "")
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="✓ passed\n" + (
                note[:MAX_NOTE_CHARS] + "\n" if note else ""))]


def fallback_feedback(restored, source_nb, verdicts) -> str:
    """A feedback page for a notebook that nbgrader could not finish (the time limit stopped it): the
    student's cells, each test cell as the instructor wrote it with its verdict, hidden tests cleared."""
    nb = copy.deepcopy(restored)
    instructor = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source_nb.cells
                  if c.metadata.get("nbgrader", {}).get("locked")}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if grade_id in instructor:
            cell.source = instructor[grade_id]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    note = ("**This notebook could not be run to the end when it was graded** (see the status your instructor "
            "has); the tests below show what was recorded before it stopped.")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(note))
    return feedback_page(nb, verdicts, "notebook")


def feedback_page(nb, verdicts, name: str) -> str:
    """The student's feedback page for the autograded notebook `nb` (changed in place): the trusted verdicts
    in the test cells, hidden tests cleared, outputs and size bounded (`FeedbackFilter`), rendered with
    nbgrader's feedback template, then made safe (`secure_page`). It uses no gradebook and no global state,
    so students' pages are made at the same time without a lock."""
    from nbgrader.preprocessors import ClearHiddenTests
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor

    put_verdicts(nb, verdicts)
    for cell in nb.cells:
        if isinstance(cell.metadata.get("nbgrader"), dict):
            cell.metadata.nbgrader["comment"] = None
        elif "nbgrader" in cell.metadata:
            del cell.metadata["nbgrader"]
    title = name[:-6] if name.endswith(".ipynb") else name
    resources = {"nbgrader": {"notebook": title, "score": sum(v.score for v in verdicts),
                              "max_score": sum(v.points for v in verdicts), "late_penalty": 0}}
    nb, resources = FeedbackFilter().preprocess(nb, resources)
    clear = ClearHiddenTests()  # in the test cells only: a student's own comment may say BEGIN HIDDEN TESTS
    for i, cell in enumerate(nb.cells):
        if isinstance(cell.metadata.get("nbgrader"), dict) and cell.metadata.nbgrader.get("grade"):
            clear.preprocess_cell(cell, resources, i)
    exporter = FeedbackExporter(**_FEEDBACK_TEMPLATE)
    exporter.register_preprocessor(CSSHTMLHeaderPreprocessor(), enabled=True)
    html, _ = exporter.from_notebook_node(nb, resources)
    return secure_page(html, title)


_NBGRADER_TEMPLATES = Path(importlib.util.find_spec("nbgrader").origin).parent / "server_extensions" / "formgrader"
_FEEDBACK_TEMPLATE = dict(  # what nbgrader's GenerateFeedback sets, without its app
    template_name="feedback", extra_template_basedirs=[str(_NBGRADER_TEMPLATES / "templates")],
    extra_template_paths=[str(_NBGRADER_TEMPLATES / "static" / "node_modules" / "bootstrap" / "dist" / "css")],
    mathjax_url="", sanitize_html=True, exclude_input_prompt=False)


# --- the page's safety: an allow-list of HTML, no script of its own but MathJax, a CSP --------------------

TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details", "div",
        "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
        "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strong", "sub", "summary", "sup",
        "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul", "var"}
ATTRIBUTES = {"*": {"class", "id", "title", "lang", "dir"}, "a": {"href", "name"},
              "img": {"src", "alt", "width", "height"}, "td": {"colspan", "rowspan", "align"},
              "th": {"colspan", "rowspan", "align", "scope"}, "ol": {"start"}}
_LINK = re.compile(r"(#[\w.:-]*|https?://[^\s]*|mailto:[^\s]*)", re.ASCII)
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|svg\+xml);base64,[A-Za-z0-9+/=\s]*")
_SIZE = re.compile(r"\d{1,4}(px|%)?")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src data:; "
       "font-src 'self'; base-uri 'none'; form-action 'none'")
MATHJAX_LOCAL = '<script src="mathjax/config.js"></script>\n<script src="mathjax/tex-chtml.js"></script>'
MATHJAX_CONFIG = 'window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]]}};\n'


def _attribute(tag: str, name: str, value: str) -> str | None:
    """What nh3 keeps of an allowed attribute: links to a place in the page or the web, inline images only."""
    if name == "href":
        return value if _LINK.fullmatch(value) else None
    if name == "src":
        return value if tag == "img" and _DATA_IMAGE.fullmatch(value) else None
    if name in ("width", "height"):
        return value if _SIZE.fullmatch(value) else None
    return value


def secure_page(html: str, title: str) -> str:
    """The page nbconvert rendered, made safe whatever a notebook holds: the template's style sheets are kept;
    the body passes an allow-list sanitizer (nh3: no script, frame, form, meta, base, event handler, style
    attribute, javascript: or remote URL; images only inline), cut at MAX_PAGE_CHARS with a "truncated" line;
    the head is ours, with a Content-Security-Policy that lets only the local MathJax run and no request
    leave the page."""
    head, _, rest = html.partition("<body")
    body = rest.partition(">")[2].rpartition("</body>")[0] if rest else html
    styles = "\n".join(re.findall(r"<style[^>]*>.*?</style>", head, flags=re.S | re.I))
    truncated = len(body) > MAX_PAGE_CHARS
    clean = nh3.clean(body[:MAX_PAGE_CHARS], tags=TAGS, attributes=ATTRIBUTES, attribute_filter=_attribute,
                      url_schemes={"http", "https", "mailto", "data"}, strip_comments=True,
                      link_rel="noopener noreferrer nofollow")
    if truncated:
        clean += (f"<p class=\"warn\"><b>This page was truncated</b>: it would have been {len(body):,} characters "
                  f"long, more than the {MAX_PAGE_CHARS:,} a feedback page may be.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<title>{htmlmod.escape(title)}</title>\n{styles}\n{MATHJAX_LOCAL}\n</head>\n"
            f"<body>\n{clean}\n</body>\n</html>\n")


def copy_mathjax(target: Path) -> None:
    """MathJax 3 (npm `mathjax`, from `make data`) beside the feedback pages, so formulas render offline, and
    its configuration as a file (the pages' CSP runs no inline script)."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.js").write_text(MATHJAX_CONFIG)
    es5 = DATA_DIR / "npm" / "mathjax" / "es5"
    if not es5.is_dir() or (target / "tex-chtml.js").exists():
        return
    shutil.copyfile(es5 / "tex-chtml.js", target / "tex-chtml.js")
    shutil.copytree(es5 / "output" / "chtml" / "fonts" / "woff-v2", target / "output" / "chtml" / "fonts" / "woff-v2",
                    dirs_exist_ok=True)
