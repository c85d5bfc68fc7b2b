"""Grading fails safe: a fault of the grading machine is never a student's zero.

The course is graded from a checkout inside a folder other users cannot enter (as `mktemp -d` makes, and as
root's home is), where the sandboxed kernel's user could not read the Python environment before; a
grading environment broken on purpose stops at the canary (the instructor's own solution, graded first)
with a message that says what is wrong, and writes no grades."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from llmcourse import grading
from llmcourse.grading.batch import prepare


ASSIGNMENT = "01_tokens"
SOLUTION = REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
RELEASE = REPO / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
IN_VENV = sys.prefix != sys.base_prefix


def _submissions(folder: Path) -> Path:
    """An honest student (the solution) and one who changed nothing (the released notebook)."""
    for name, notebook in [("honest", SOLUTION), ("untouched", RELEASE)]:
        (folder / name).mkdir(parents=True)
        shutil.copyfile(notebook, folder / name / notebook.name)
    return folder


@pytest.fixture(scope="module")
def closed_checkout():
    """A copy of the course as a newcomer has it after `make book`, inside a folder of mode 0700: the tracked
    files, the virtual environment and the data (hard links, so the copy takes seconds and no space; the
    editable install's .pth file is replaced, not edited, so it points at the copy's own src/)."""
    (REPO / ".cache").mkdir(exist_ok=True)
    outer = Path(tempfile.mkdtemp(dir=REPO / ".cache", prefix="closed-"))  # mode 0700, on the venv's disk
    assert oct(outer.stat().st_mode & 0o777) == "0o700"
    course = outer / "course"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        (course / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, course / name)
    subprocess.run(["cp", "-al", sys.prefix, str(course / ".venv")], check=True)
    subprocess.run(["cp", "-al", str(REPO / "data"), str(course / "data")], check=True)
    for pth in (course / ".venv").glob("lib/python*/site-packages/__editable__*llmcourse*.pth"):
        pth.unlink()
        pth.write_text(f"{course / 'src'}\n")
    yield course
    shutil.rmtree(outer, ignore_errors=True)


def _grade_there(course: Path, out: Path) -> subprocess.CompletedProcess:
    subs = out.parent / "submissions"
    if not subs.exists():
        _submissions(subs)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cmd = [str(course / ".venv" / "bin" / "python"), "-m", "llmcourse.cli", "grade", str(subs),
           "--assignment", ASSIGNMENT, "--out", str(out), "--jobs", "2"]
    return subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not IN_VENV, reason="the course runs from its .venv")
def test_a_checkout_in_a_closed_folder_grades_right(closed_checkout):
    out = closed_checkout.parent / "grades.csv"
    result = _grade_there(closed_checkout, out)
    assert result.returncode == 0, f"grading failed in a 0700 checkout:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with open(out, newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert float(rows["honest"]["score"]) == float(rows["honest"]["max_score"]) > 0, rows["honest"]
    assert rows["honest"]["status"] == "graded"
    assert float(rows["untouched"]["score"]) == 0 and rows["untouched"]["status"] == "graded"
    assert (out.parent / f"feedback-{ASSIGNMENT}" / "honest.html").exists(), "feedback goes beside the CSV"
    assert not (closed_checkout / "feedback").exists(), "feedback must not land in the course's own folder"


@pytest.mark.skipif(not IN_VENV or os.geteuid() != 0, reason="an unreadable package needs a kernel of another user")
def test_an_unreadable_package_stops_at_the_canary(closed_checkout):
    numpy = next((closed_checkout / ".venv").glob("lib/python*/site-packages/numpy"))
    numpy.chmod(0o700)  # a folder of the copy (hard links are only for files): the real venv is untouched
    try:
        out = closed_checkout.parent / "broken.csv"
        result = _grade_there(closed_checkout, out)
    finally:
        numpy.chmod(0o755)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert "failed its own check" in result.stderr
    assert f"cannot read {numpy}" in result.stderr, result.stderr[-3000:]
    assert "How to fix it" in result.stderr and "chmod" in result.stderr
    assert not out.exists(), "no grades may be written when the canary fails"


def test_a_missing_interpreter_stops_at_the_canary(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "KERNEL_PYTHON", str(tmp_path / "gone" / "bin" / "python3"))
    subs = _submissions(tmp_path / "submissions")
    with pytest.raises(grading.GradingEnvironmentError) as err:
        grading.grade(subs, ASSIGNMENT, out=tmp_path / "grades.csv", feedback=tmp_path / "feedback", jobs=2,
                      cache=tmp_path / "cache", progress=False)
    message = str(err.value)
    assert "the grading environment failed" in message and "could not start" in message, message
    assert "No grades or feedback were written" in message
    assert not (tmp_path / "grades.csv").exists() and not (tmp_path / "feedback").exists()
    assert not list((tmp_path / "cache").glob("*.json")), "a failed canary must not be cached"


def test_feedback_and_cache_inside_the_submissions_are_not_students(tmp_path):
    subs = tmp_path / "submissions"
    (subs / "honest").mkdir(parents=True)
    nbformat.write(nbformat.read(SOLUTION, as_version=4), subs / "honest" / "work.ipynb")
    for _ in range(2):  # the second run finds feedback/ and the cache inside the submissions folder
        rows = grading.grade(subs, ASSIGNMENT, out=subs / "grades.csv", feedback=subs / "feedback",
                             cache=subs / "cache", jobs=2, progress=False)
        assert [r.student for r in rows] == ["honest"]
    assert rows[0].clean and rows[0].score == rows[0].max_score


def test_a_notebook_stopped_by_its_time_limit_still_gets_feedback_without_hidden_tests():
    """When nbgrader could not finish (the notebook's time limit), the feedback page is made from the submitted
    notebook and the verdicts of what was recorded; hidden tests stay hidden."""
    from hostile import SECRET
    from llmcourse.grading.batch import feedback, judge

    source = nbformat.read(SOLUTION, as_version=4)
    submitted = grading.restore_locked_cells(nbformat.read(RELEASE, as_version=4), source)
    verdicts = judge.judge(judge.test_cells(source), {})
    page = feedback.fallback_feedback(submitted, source, verdicts)
    assert "could not be run to the end" in page
    assert "was not checked" in page and "Hidden tests: failed." in page
    assert SECRET not in page and "BEGIN HIDDEN" not in page
