"""Instructor tools: release student notebooks from solutions/, autograde a folder of submissions.

Both drive real nbgrader (its Python API, in this process). `configure` is the one place where our
nbgrader settings live: the repository's `nbgrader_config.py` and the private grading folders use it.

Explained in: README.md, sections "Authors" and "Instructors".
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor
from tqdm import tqdm
from traitlets import Bool

REPO = Path(__file__).resolve().parents[2]
CELL_TIMEOUT = 60  # seconds a single cell may run when a notebook is graded
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MAX_OUTPUT_CHARS = 20_000  # stream output kept per cell in feedback
CSV_COLUMNS = ["student", "assignment", "score", "max_score", "status", "message"]


def configure(c, root: Path, source: str = "solutions", release: str = "exercises", work: str = ".nbgrader") -> None:
    """Apply the course's nbgrader settings to the traitlets config `c`, for a course rooted at `root`."""
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.source_directory = source
    c.CourseDirectory.release_directory = release
    for step in ("submitted", "autograded", "feedback"):
        setattr(c.CourseDirectory, f"{step}_directory", f"{work}/{step}")
    c.CourseDirectory.db_url = f"sqlite:///{Path(root, work, 'gradebook.db')}"
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    c.Execute.timeout = CELL_TIMEOUT
    c.ExecutePreprocessor.timeout = CELL_TIMEOUT
    c.Execute.kernel_name = "python3"
    c.GenerateAssignment.create_assignment = True
    c.Autograde.create_student = True
    c.GenerateFeedback.preprocessors = [
        "nbgrader.preprocessors.GetGrades",
        "llmcourse.grading.FeedbackFilter",
        "nbgrader.preprocessors.ClearHiddenTests",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]
    c.HTMLExporter.mathjax_url = ""  # no CDN: feedback must open offline
    os.makedirs(Path(root, work), exist_ok=True)


def _api(root: Path, **kwargs):
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    # nbgrader runs `alembic`, and jupyter starts the `python3` kernel, from PATH: make it this environment's.
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    c = Config()
    configure(c, root, **kwargs)
    return NbGraderAPI(config=c)


# --- release -----------------------------------------------------------------------------------------

def assignments(root: Path = REPO) -> list[str]:
    """Every assignment with a source notebook in solutions/."""
    return sorted(p.parent.name for p in (root / "solutions").glob("*/*.ipynb"))


def release(names: list[str] | None = None, root: Path = REPO, release_dir: str = "exercises") -> list[Path]:
    """Regenerate the student notebooks of `names` (default: all) from solutions/ into `release_dir`."""
    api = _api(root, release=release_dir)
    written = []
    for name in names or assignments(root):
        if not (root / "solutions" / name).is_dir():
            raise SystemExit(f"No assignment '{name}' in {root / 'solutions'}; known: {', '.join(assignments(root))}")
        result = api.generate_assignment(name, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not release {name}:\n{result.get('error') or result.get('log')}")
        written.extend(sorted((root / release_dir / name).glob("*.ipynb")))
    return written


# --- feedback that does not leak hidden tests --------------------------------------------------------

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


# --- grading -----------------------------------------------------------------------------------------

@dataclass
class Row:
    """One student's result: a row of grades.csv, plus the score of every graded cell."""
    student: str
    assignment: str
    score: float = 0.0
    max_score: float = 0.0
    status: str = "graded"
    message: str = ""
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)

    def csv_row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in CSV_COLUMNS}


def total_points(notebook: Path) -> float:
    """The points of all graded cells of a source notebook."""
    nb = nbformat.read(notebook, as_version=4)
    return float(sum(c.metadata.get("nbgrader", {}).get("points", 0) for c in nb.cells
                     if c.metadata.get("nbgrader", {}).get("grade")))


def _find_notebook(folder: Path) -> tuple[Path | None, str]:
    """The one notebook in a student's folder, or (None, a status the instructor can act on)."""
    notebooks = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        return None, "no notebook"
    if len(notebooks) > 1:
        return None, "several notebooks: " + ", ".join(str(p.relative_to(folder)) for p in notebooks)
    try:
        nbformat.read(notebooks[0], as_version=4)
    except Exception as err:  # not JSON, empty, not a notebook
        return None, f"unreadable notebook ({type(err).__name__})"
    return notebooks[0], ""


def _failure_messages(notebook: Path) -> str:
    """'grade_id: message' for every failing graded cell of an autograded notebook; hidden cells by name only."""
    nb = nbformat.read(notebook, as_version=4)
    parts = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if not (meta.get("grade") and errors):
            continue
        if HIDDEN_BEGIN in cell.source:
            parts.append(f"{meta['grade_id']}: hidden tests failed")
        else:
            parts.append(f"{meta['grade_id']}: {errors[0].ename}: {errors[0].evalue}"[:300])
    return " | ".join(parts)


def grade(submissions: Path, assignment: str, out: Path | None = None, feedback: Path | None = None,
          root: Path = REPO, progress: bool = True) -> list[Row]:
    """Autograde `submissions/<student>/<any name>.ipynb` for `assignment`; write grades.csv and feedback.

    Works in a private temporary folder, so neither the submissions nor the repository are modified.
    """
    submissions = Path(submissions).resolve()
    if not (root / "solutions" / assignment).is_dir():
        raise SystemExit(f"No assignment '{assignment}'; known: {', '.join(assignments(root))}")
    if not submissions.is_dir():
        raise SystemExit(f"{submissions} is not a folder of student folders.")
    work = Path(tempfile.mkdtemp(prefix="llmcourse-grade-"))
    try:
        shutil.copytree(root / "solutions" / assignment, work / "source" / assignment)
        api = _api(work, source="source", release="release", work=".")
        result = api.generate_assignment(assignment, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not prepare {assignment}:\n{result.get('error') or result.get('log')}")
        source = next((work / "source" / assignment).glob("*.ipynb"))
        rows = _grade_students(api, work, submissions, assignment, source.name, progress)
        for row in rows:
            row.max_score = row.max_score or total_points(source)
        if feedback:
            _collect_feedback(api, work, rows, assignment, Path(feedback), source.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if out:
        write_csv(rows, Path(out))
    return rows


def _grade_students(api, work: Path, submissions: Path, assignment: str, notebook_name: str,
                    progress: bool) -> list[Row]:
    from nbgrader.api import Gradebook

    rows = []
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in tqdm(students, desc=f"grading {assignment}", unit="student", disable=not progress):
        row = Row(folder.name, assignment)
        rows.append(row)
        notebook, problem = _find_notebook(folder)
        if notebook is None:
            row.status = problem
            continue
        target = work / "submitted" / folder.name / assignment / notebook_name
        target.parent.mkdir(parents=True)
        shutil.copyfile(notebook, target)
        result = api.autograde(assignment, folder.name, force=True)
        if not result["success"]:
            row.status = "autograde failed"
            row.message = (result.get("error") or result.get("log") or "")[-500:]
            continue
        with Gradebook(api.coursedir.db_url) as gb:
            sub = gb.find_submission_notebook(notebook_name[:-6], assignment, folder.name)
            for g in sub.grades:
                row.cells[g.name] = (float(g.score), float(g.max_score))
        row.score = sum(s for s, _ in row.cells.values())
        row.max_score = sum(m for _, m in row.cells.values())
        row.message = _failure_messages(work / "autograded" / folder.name / assignment / notebook_name)
    return rows


MATHJAX_CDN = re.compile(r'<script src="https://cdnjs[^"]*mathjax[^"]*">\s*</script>')
MATHJAX_LOCAL = ('<script>window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]]}};</script>\n'
                 '<script src="mathjax/tex-chtml.js"></script>')


def _collect_feedback(api, work: Path, rows: list[Row], assignment: str, feedback: Path, notebook_name: str) -> None:
    """One HTML page per graded student, `feedback/<student>.html`, with MathJax served from beside it."""
    feedback.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if row.status != "graded":
            continue
        api.generate_feedback(assignment, row.student, force=True)
        html = work / "feedback" / row.student / assignment / notebook_name.replace(".ipynb", ".html")
        if html.exists():
            page = MATHJAX_CDN.sub(lambda _: MATHJAX_LOCAL, html.read_text(encoding="utf-8"))
            (feedback / f"{row.student}.html").write_text(page, encoding="utf-8")
    _copy_mathjax(feedback / "mathjax")


def _copy_mathjax(target: Path) -> None:
    """MathJax 3 (npm `mathjax`, from `make data`) beside the feedback pages, so formulas render offline."""
    from llmcourse.data import DATA_DIR

    es5 = DATA_DIR / "npm" / "mathjax" / "es5"
    if not es5.is_dir() or (target / "tex-chtml.js").exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(es5 / "tex-chtml.js", target / "tex-chtml.js")
    shutil.copytree(es5 / "output" / "chtml" / "fonts" / "woff-v2", target / "output" / "chtml" / "fonts" / "woff-v2",
                    dirs_exist_ok=True)


def write_csv(rows: list[Row], path: Path) -> None:
    """grades.csv, one row per student, written atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r.csv_row() for r in rows)
    tmp.replace(path)


def summary(rows: list[Row]) -> str:
    """A plain-text table of the grades, for the terminal."""
    width = max([len(r.student) for r in rows] + [7])
    lines = [f"{'student':<{width}}  {'score':>11}  status"]
    for r in rows:
        lines.append(f"{r.student:<{width}}  {r.score:>5g} / {r.max_score:<3g}  {r.status}")
    return "\n".join(lines)


def rows_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=1)
