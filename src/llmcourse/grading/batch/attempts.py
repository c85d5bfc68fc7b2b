"""Grading one student (`grade_one`): the cached grade, or the notebook checked and repaired, run in a fresh
kernel until the runs decide the grade (it ran, it used up its time, or the same cell killed its kernel twice;
anything else may be the machine's fault: run again, `ATTEMPTS` at most), then judged outside the kernel
(`llmcourse.grading.batch.judge`) and its feedback page written (`llmcourse.grading.batch.feedback`).

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import nbformat

from llmcourse.grading.batch import judge
from llmcourse.grading.batch.cache import keep, look_up
from llmcourse.grading.batch.feedback import fallback_feedback, feedback_page
from llmcourse.grading.batch.rows import HIDDEN_FAILED, Row
from llmcourse.grading.batch.submission import malformed, repair_metadata, restore_locked_cells
from llmcourse.grading.batch.workers import NB_STUDENT, Attempt, run_once
from llmcourse.grading.kernel.worker import mark

ATTEMPTS = 3  # runs of one notebook at most, when its kernel dies or cannot start


def grade_one(folder: Path, index: int, s: dict) -> tuple[Row, str | None]:
    """Grade one student: sandboxed autograde, then trusted verdicts and feedback. Never raises."""
    row, data, known = look_up(folder, s)
    if known:
        return known
    return keep(data, *autograde_safely(folder.name, index, data, row, s), s)


def autograde_safely(student: str, index: int, data: bytes, row: Row, s: dict) -> tuple[Row, str | None]:
    """`_autograde`, where a bug of ours must not stop the batch, nor give a zero: the row says what happened."""
    try:
        return _autograde(student, index, data, row, s)
    except Exception as err:
        row.score, row.status = None, f"not graded: grading error ({type(err).__name__}: {err})"[:500]
        return row, None


def settled(attempts: list[Attempt]) -> bool:
    """Whether the runs so far decide the grade: the notebook ran (or used up its time), or the same cell killed
    its kernel twice (the notebook's own doing). Anything else may be the machine's fault: run it again."""
    if not attempts:
        return False
    last = attempts[-1]
    return last.kind in ("ok", "timeout") or (last.kind == "died" and any(
        a.kind == "died" and a.where == last.where for a in attempts[:-1]))


def _autograde(student: str, index: int, data: bytes, row: Row, s: dict) -> tuple[Row, str | None]:
    assignment, limits, source = s["assignment"], s["limits"], s["source"]
    mark(student, "start")
    submitted = nbformat.reads(data.decode("utf-8", errors="replace"), as_version=4)
    problem = malformed(submitted)
    if problem:
        row.score, row.status = None, f"not graded: the notebook is malformed: {problem}"[:700]
        return row, None
    repair_metadata(submitted, s)
    ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in submitted.cells}
    expected = {c.metadata["nbgrader"]["grade_id"] for c in s["source_nb"].cells
                if c.metadata.get("nbgrader", {}).get("solution")}
    if not ids & expected:
        row.score = None
        row.status = f"not graded: not a {assignment} notebook: none of its answer cells is there (another assignment?)"
        return row, None
    restored = restore_locked_cells(submitted, s["source_nb"])
    course = s["work"] / "students" / f"s{index}"
    shutil.copytree(s["template"], course, ignore=shutil.ignore_patterns("release"))
    target = course / "submitted" / NB_STUDENT / assignment / source.name
    target.parent.mkdir(parents=True)
    target.write_bytes(nbformat.writes(restored).encode())
    mark(student, "course folder copied")
    uid = s["uid_base"] + index if os.geteuid() == 0 else None
    attempts: list[Attempt] = []
    while len(attempts) < ATTEMPTS and not settled(attempts):
        started = time.monotonic()
        attempt = run_once(course, student, uid, s)
        attempt.instructor_error = instructor_error(course, s)
        attempts.append(attempt)
        row.seconds = round(time.monotonic() - started, 1)
    final = attempts[-1]
    row.diagnostics = "\n".join(filter(None, [final.notes, setup_errors(course, student, s),
                                              without_noise(final.output)]))[-4000:]
    if not settled(attempts):
        row.score = None
        if final.kind == "instructor":
            row.status = (f"not graded: an instructor's cell that runs no student code failed on each of "
                          f"{len(attempts)} runs, the machine's fault (the canary passed); regrade with --force. "
                          f"Its error: {final.instructor_error}")[:700]
        elif final.kind == "machine":
            lines = without_noise(final.output).splitlines()
            said = next((x for x in lines if x.startswith("llmcourse sandbox:")), None) or next(
                (x for x in reversed(lines) if "Error" in x and "NbGraderException" not in x), None) or (
                lines or ["no output"])[-1]
            said = said.strip()[:300]
            row.status = (f"not graded: the grading environment failed (the kernel could not start or died in the "
                          f"instructor's set-up code on {len(attempts)} runs; it said: {said})")
        else:
            points = ", ".join(f"cell {a.where[0] + 1}" if a.where else "start-up" for a in attempts)
            row.status = (f"not graded: the kernel died at a different point on each of {len(attempts)} runs "
                          f"({points}); the machine may be short of memory or unstable: regrade with --force")
        return row, None
    verdicts = judge.judge(s["cells"], final.records, s["cases"])
    mark(student, "judged")
    autograded = course / "autograded" / NB_STUDENT / assignment / source.name
    if autograded.exists():
        explain_unchecked(verdicts, nbformat.read(autograded, as_version=4))
    row.cells = {v.grade_id: (v.score, v.points) for v in verdicts}
    row.score = sum(v.score for v in verdicts)
    row.messages = {v.grade_id: (HIDDEN_FAILED if v.message else "") if v.hidden else v.message[:2000]
                    for v in verdicts}
    row.hidden = [v.grade_id for v in verdicts if v.hidden]
    row.message = " | ".join(f"{v.grade_id}: {row.messages[v.grade_id]}" for v in verdicts if v.message)[:4000]
    if final.kind == "timeout":
        row.status = f"graded, but {final.stopped}"
    elif final.kind == "died":
        at, grade_id = final.where[0] + 1, grade_id_at(restored, final.where[0])
        row.status = (f"graded, but its kernel died in cell {at}{f' ({grade_id})' if grade_id else ''} on "
                      f"{len(attempts)} runs: the notebook's own code exited or killed it, or it passed a limit "
                      f"({limits.described()}); the tests after that point score 0")
    elif not autograded.exists():
        row.status = "graded, but nbgrader wrote no notebook"
    if final.notes:
        row.status += f" ({final.notes})"
    mark(student, "waited for the feedback lock")  # there is none any more: each page is made on its own
    html = (feedback_page(nbformat.read(autograded, as_version=4), verdicts, source.name) if autograded.exists()
            else fallback_feedback(restored, s["source_nb"], verdicts))
    mark(student, "feedback written")
    return row, html


def setup_errors(course: Path, student: str, s: dict) -> str:
    """Errors in the instructor's own cells that are not tests (the set-up): a machine fault when the
    instructor's solution is graded (a package that cannot be imported, data that cannot be read)."""
    autograded = course / "autograded" / NB_STUDENT / s["assignment"] / s["source"].name
    if not autograded.exists():
        return ""
    lines = []
    for i, cell in enumerate(nbformat.read(autograded, as_version=4).cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("locked") and not meta.get("grade"):
            for out in cell.get("outputs", []):
                if out.output_type == "error":
                    lines.append(f"cell {i + 1} ({meta.get('grade_id')}, the instructor's set-up) stopped with "
                                 f"{out.ename}: {out.evalue}"[:600])
    return "\n".join(lines)


NOISE = re.compile(r"Kernel is running over TCP|ipython kernel. entry point|explicitly quit this process|"
                   r"Ctrl-\\|ipython/issues/2049|To connect another client|--existing |SAWarning|"
                   r"for notebook in submission|return \[x for x in self|^\s*$|^To exit, you will have|"
                   r"\"quit\" from a client|^To read more about this")


def without_noise(text: str) -> str:
    """The kernel's and worker's output without the lines they print on every run."""
    return "\n".join(line for line in text.splitlines() if not NOISE.search(line))


def grade_id_at(nb, index: int) -> str | None:
    return nb.cells[index].metadata.get("nbgrader", {}).get("grade_id") if 0 <= index < len(nb.cells) else None


def instructor_error(course: Path, s: dict) -> str:
    """The first error (a failure, a time limit, an interrupt) in an instructor's locked cell that runs no code
    of the student's (`instructor_only`), in this run's autograded notebook: '' if none."""
    autograded = course / "autograded" / NB_STUDENT / s["assignment"] / s["source"].name
    ours = instructor_only(s["source_nb"])
    try:
        nb = nbformat.read(autograded, as_version=4)
    except Exception:  # no notebook: the worker's own failure says why
        return ""
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader")
        if cell.cell_type != "code" or not isinstance(meta, dict) or meta.get("grade_id") not in ours:
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and out.get("ename") != "KernelDied":
                return f"cell {i + 1} ({meta['grade_id']}) stopped with {out.get('ename')}: {out.get('evalue')}"[:500]
    return ""


_INSTRUCTOR_ONLY: dict[int, set[str]] = {}


def instructor_only(source_nb) -> set[str]:
    """The grade_ids of the locked cells that are not tests and use no name that a student's answer cell defines
    (the set-up, a demo of the data): when one of them fails, the machine failed, not the student."""
    key = id(source_nb)
    if key not in _INSTRUCTOR_ONLY:
        import ast

        answers, found = set(), set()
        for cell in source_nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("solution"):
                try:
                    answers |= {n.id for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Name)
                                and isinstance(n.ctx, ast.Store)}
                    answers |= {n.name for n in ast.walk(ast.parse(cell.source))
                                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
                except SyntaxError:
                    pass
        for cell in source_nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("locked") or meta.get("grade"):
                continue
            try:
                used = {n.id for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Name)}
            except SyntaxError:
                continue
            if not used & answers:
                found.add(meta["grade_id"])
        _INSTRUCTOR_ONLY[key] = found
    return _INSTRUCTOR_ONLY[key]


def explain_unchecked(verdicts, autograded) -> None:
    """A check that recorded nothing: add the error the test cell stopped with (NameError, timeout, ...)."""
    errors = {}
    for cell in autograded.cells:
        outs = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if outs:
            errors[cell.metadata.get("nbgrader", {}).get("grade_id")] = f"{outs[-1].ename}: {outs[-1].evalue}"[:300]
    for v in verdicts:
        if "was not checked" in v.message and v.grade_id in errors:
            v.message = v.message.replace("did not run to the end (see your notebook).",
                                          f"stopped with {errors[v.grade_id]}")
