"""The course as nbgrader sees it: where things are, and the one place where our nbgrader settings live.

`configure` is used by the repository's `nbgrader_config.py`, by `release` and by the private grading
folders of `autograde`.

Explained in: README.md, sections "Authors" and "Instructors".
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CELL_TIMEOUT = 60  # seconds a single cell may run when a notebook is graded
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MAX_OUTPUT_CHARS = 20_000  # stream output kept per cell in feedback
CSV_COLUMNS = ["student", "assignment", "score", "max_score", "status", "message"]


def configure(c, root: Path, source: str = "solutions", release: str = "exercises", work: str = ".nbgrader",
              kernel: str = "python3", cell_timeout: int = CELL_TIMEOUT) -> None:
    """Apply the course's nbgrader settings to the traitlets config `c`, for a course rooted at `root`."""
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.source_directory = source
    c.CourseDirectory.release_directory = release
    for step in ("submitted", "autograded", "feedback"):
        setattr(c.CourseDirectory, f"{step}_directory", f"{work}/{step}")
    c.CourseDirectory.db_url = f"sqlite:///{Path(root, work, 'gradebook.db')}"
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    c.Execute.timeout = cell_timeout
    c.Execute.kernel_name = kernel
    stopped = f"the cell ran longer than {cell_timeout} s and was stopped (an endless loop?)"
    c.Execute.error_on_timeout = {"ename": "CellTimeoutError", "evalue": stopped, "traceback": [f"CellTimeoutError: {stopped}"]}
    c.GenerateAssignment.create_assignment = True
    c.Autograde.create_student = True
    c.GenerateFeedback.preprocessors = [
        "nbgrader.preprocessors.GetGrades",
        "llmcourse.grading.feedback.FeedbackFilter",
        "nbgrader.preprocessors.ClearHiddenTests",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]
    c.HTMLExporter.mathjax_url = ""  # no CDN: feedback must open offline
    c.HTMLExporter.sanitize_html = True  # a student's markdown must not run scripts in the reader's browser
    os.makedirs(Path(root, work), exist_ok=True)


def nbgrader_api(root: Path, **kwargs):
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    # nbgrader runs `alembic`, and jupyter starts the `python3` kernel, from PATH: make it this environment's.
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    _ask_alembic_once()
    c = Config()
    configure(c, root, **kwargs)
    return NbGraderAPI(config=c)


def _ask_alembic_once() -> None:
    """nbgrader runs the `alembic` command (a new Python process, 1-3 s) for its database version each time it
    creates a gradebook, once per batch; the answer cannot change while we run: ask it once per process."""
    import functools

    import nbgrader.api

    if not hasattr(nbgrader.api.get_alembic_version, "cache_info"):
        nbgrader.api.get_alembic_version = functools.cache(nbgrader.api.get_alembic_version)


def assignments(root: Path = REPO) -> list[str]:
    """Every assignment with a source notebook in solutions/."""
    return sorted(p.parent.name for p in (root / "solutions").glob("*/*.ipynb"))
