"""The course as nbgrader sees it: where things are, and the one place where our nbgrader settings live.

`configure` is used by the repository's `nbgrader_config.py`, by `release` and by the private grading
folders of `prepare`.

Explained in: README.md, sections "Authors" and "Instructors".
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CELL_TIMEOUT = 60  # seconds a single cell may run when a notebook is graded
# Assignments whose cells need more: exercise 08's test cell trains the student's GPT (about 40 s of one core).
CELL_TIMEOUTS = {"08_your_gpt": 150}
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MAX_OUTPUT_CHARS = 20_000  # stream output kept per cell in feedback
CSV_COLUMNS = ["student", "assignment", "score", "max_score", "status", "message"]


def cell_timeout_for(assignment: str) -> int:
    """The seconds of CPU time one cell of `assignment` may run when graded (its own limit, else CELL_TIMEOUT)."""
    return CELL_TIMEOUTS.get(assignment, CELL_TIMEOUT)


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
        "llmcourse.grading.batch.feedback.FeedbackFilter",
        "nbgrader.preprocessors.ClearHiddenTests",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]
    c.GenerateFeedback.exporter_class = "llmcourse.grading.batch.feedback.FeedbackExporter"
    c.HTMLExporter.mathjax_url = ""  # no CDN: feedback must open offline
    c.HTMLExporter.sanitize_html = True  # a student's markdown must not run scripts in the reader's browser
    os.makedirs(Path(root, work), exist_ok=True)


def nbgrader_api(root: Path, scratch: bool = False, **kwargs):
    """nbgrader's API for the course at `root`, with our settings. `scratch`: its gradebook is a throwaway in a
    private grading folder (deleted when the batch ends), written without waiting for the disk."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    # nbgrader runs `alembic`, and jupyter starts the `python3` kernel, from PATH: make it this environment's.
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    _ask_alembic_once()
    if scratch:
        _scratch_gradebooks(Path(root))
    c = Config()
    configure(c, root, **kwargs)
    return NbGraderAPI(config=c)


def _ask_alembic_once() -> None:
    """nbgrader runs the `alembic heads` command (a new Python process, 1-5 s) for its database version each time
    it creates a gradebook; the answer is in its migration scripts and cannot change while we run: read it there,
    in this process, once."""
    import functools

    import nbgrader.api

    if not hasattr(nbgrader.api.get_alembic_version, "cache_info"):
        nbgrader.api.get_alembic_version = functools.cache(_alembic_head)


def _alembic_head() -> str:
    """What `alembic heads` says for nbgrader's gradebook (nbgrader.api.get_alembic_version), without a process."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import _temp_alembic_ini

    with _temp_alembic_ini("sqlite:////tmp/gradebook.db") as ini:
        return ScriptDirectory.from_config(Config(ini)).get_current_head()


_SCRATCH: set[str] = set()  # folders whose sqlite gradebooks are throwaways


def _scratch_gradebooks(root: Path) -> None:
    """sqlite waits for the disk at every commit (about 20 ms here), and nbgrader commits dozens of times per
    notebook. A gradebook under `root` is a throwaway: commit it without that wait (PRAGMA synchronous=OFF,
    which risks only the file itself if the machine loses power)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not _SCRATCH:
        event.listen(Engine, "connect", _no_disk_wait)
    _SCRATCH.update({str(root), str(root.resolve())})


def _no_disk_wait(connection, _record) -> None:
    if not hasattr(connection, "execute"):  # not sqlite
        return
    try:
        path = next((row[2] for row in connection.execute("PRAGMA database_list") if row[1] == "main"), "")
    except Exception:  # another database
        return
    if path and any(path.startswith(folder + os.sep) for folder in _SCRATCH):
        connection.execute("PRAGMA synchronous=OFF")


def assignments(root: Path = REPO) -> list[str]:
    """Every assignment with a source notebook in solutions/."""
    return sorted(p.parent.name for p in (root / "solutions").glob("*/*.ipynb"))
