"""Feedback pages for students that show their results and never a hidden test.

nbgrader's own feedback quotes hidden tests in tracebacks (see ../shared/pitfalls.md): `FeedbackFilter`
runs before its `ClearHiddenTests` and keeps only verdicts; `write_feedback` puts the trusted verdicts
into the autograded notebook and gradebook and lets nbgrader write the page, with MathJax served locally.

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from llmcourse.data import DATA_DIR
from llmcourse.grading.course import HIDDEN_BEGIN, MAX_OUTPUT_CHARS, nbgrader_api


class FeedbackFilter(Preprocessor):
    """Runs before ClearHiddenTests. A cell with hidden tests shows only whether it passed; other graded
    cells keep their error as `Name: message` without the traceback (which can quote hidden code);
    long outputs are cut to MAX_OUTPUT_CHARS."""

    enabled = Bool(True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and HIDDEN_BEGIN in cell.source:
            failed = any(o.output_type == "error" for o in cell.outputs)
            verdict = "Hidden tests: failed." if failed else "Hidden tests: passed."
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=verdict + "\n")]
            return cell, resources
        for out in cell.outputs:
            if out.output_type == "error":
                out.traceback = [f"{out.ename}: {out.evalue}"]
            elif out.output_type == "stream" and len(out.text) > MAX_OUTPUT_CHARS:
                out.text = out.text[:MAX_OUTPUT_CHARS] + f"\n... [output cut: {len(out.text):,} characters in all]\n"
        return cell, resources



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


def put_verdicts(nb, verdicts) -> None:
    """Each test cell's output becomes the trusted verdict: ✓ passed, or the check's message."""
    by_id = {v.grade_id: v for v in verdicts}
    for cell in nb.cells:
        v = by_id.get(cell.metadata.get("nbgrader", {}).get("grade_id"))
        if v is None:
            continue
        if v.message:
            cell.outputs = [nbformat.v4.new_output("error", ename="CheckFailed", evalue=v.message, traceback=[])]
        else:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="✓ passed\n")]


def fallback_feedback(restored, source_nb, verdicts) -> str:
    """A feedback page for a notebook that nbgrader could not finish (the time limit stopped it): the
    student's cells, each test cell as the instructor wrote it with its verdict, hidden tests cleared."""
    from nbgrader.preprocessors import ClearHiddenTests

    nb = copy.deepcopy(restored)
    instructor = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source_nb.cells
                  if c.metadata.get("nbgrader", {}).get("locked")}
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in instructor:
            cell.source = instructor[grade_id]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    put_verdicts(nb, verdicts)
    note = ("**This notebook could not be run to the end when it was graded** (see the status your instructor "
            "has); the tests below show what was recorded before it stopped.")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(note))
    nb, _ = FeedbackFilter().preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    html, _ = FeedbackExporter(mathjax_url="", sanitize_html=True).from_notebook_node(nb)
    return html


def write_feedback(course: Path, student: str, assignment: str, name: str, autograded: Path, verdicts) -> str | None:
    """Put the trusted verdicts into the autograded notebook and the gradebook, then let nbgrader write the HTML."""
    from nbgrader.api import Gradebook

    nb = nbformat.read(autograded, as_version=4)
    put_verdicts(nb, verdicts)
    os.chmod(autograded, 0o644)
    nbformat.write(nb, autograded)
    api = nbgrader_api(course, source="source", release="release", work=".", scratch=True)
    with Gradebook(api.coursedir.db_url) as gb:
        for v in verdicts:
            gb.find_grade(v.grade_id, name[:-6], assignment, student).auto_score = v.score
        gb.db.commit()
    result = api.generate_feedback(assignment, student, force=True)
    html = course / "feedback" / student / assignment / name.replace(".ipynb", ".html")
    return html.read_text(encoding="utf-8") if result["success"] and html.exists() else None


MATHJAX_CDN = re.compile(r'<script src="https://cdnjs[^"]*mathjax[^"]*">\s*</script>')
MATHJAX_LOCAL = ('<script>window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]]}};</script>\n'
                 '<script src="mathjax/tex-chtml.js"></script>')


def copy_mathjax(target: Path) -> None:
    """MathJax 3 (npm `mathjax`, from `make data`) beside the feedback pages, so formulas render offline."""
    es5 = DATA_DIR / "npm" / "mathjax" / "es5"
    if not es5.is_dir() or (target / "tex-chtml.js").exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(es5 / "tex-chtml.js", target / "tex-chtml.js")
    shutil.copytree(es5 / "output" / "chtml" / "fonts" / "woff-v2", target / "output" / "chtml" / "fonts" / "woff-v2",
                    dirs_exist_ok=True)
