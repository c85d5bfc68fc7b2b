"""What a batch writes for each student: the row (a line of grades.csv plus every graded cell's score and
message), the names under which its feedback page and its stages are kept, the CSV and the terminal's table.

Explained in: README.md, section "Instructors: grading".
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmcourse.grading.course import CSV_COLUMNS

BATCH = ".batch"  # the name under which `mark` records the batch's own stages (a name no student folder has)
CANARY = ".canary"  # the instructor's solution, graded first through the same path (a name no student folder has)
HIDDEN_FAILED = "hidden tests failed"  # all a hidden test cell ever says, in the CSV, the row and the report


@dataclass
class Row:
    """One student's result: a row of grades.csv, plus the score of every graded cell.

    `score` is None (an empty cell in the CSV, never 0) when the notebook was not graded: a fault of the
    grading machine, or a submission the instructor must look at (status says which)."""
    student: str
    assignment: str
    score: float | None = 0.0
    max_score: float = 0.0
    status: str = "graded"
    message: str = ""
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    diagnostics: str = ""  # for the instructor and the canary: kernel output, worker errors (not in the CSV)
    # For the class report (`llmcourse.grading.batch.report`); defaults keep older cache entries loadable.
    messages: dict[str, str] = field(default_factory=dict)  # grade_id -> '' (passed), the message, or HIDDEN_FAILED
    hidden: list[str] = field(default_factory=list)  # grade_ids of the test cells with hidden tests
    seconds: float | None = None  # wall-clock seconds of the notebook's run that decided the grade

    def csv_row(self) -> dict:
        row = {k: v for k, v in asdict(self).items() if k in CSV_COLUMNS}
        row["score"] = "" if self.score is None else self.score
        row["student"] = os.fsencode(self.student).decode("utf-8", errors="replace")
        return row

    @classmethod
    def from_dict(cls, saved: dict) -> "Row":
        """A row saved as JSON (the grade cache): fields added since it was saved take their defaults."""
        return cls(**{**saved, "cells": {k: tuple(v) for k, v in saved.get("cells", {}).items()}})

    @property
    def clean(self) -> bool:
        """Graded from start to end, nothing for the instructor to look at."""
        return self.status == "graded" and self.score is not None


def shown_name(student: str) -> str:
    """A student folder's name as text (the CSV, the report, the terminal): bytes that are not UTF-8 (kept by
    Python as surrogates) become U+FFFD."""
    return os.fsencode(student).decode("utf-8", errors="replace")


def feedback_name(student: str) -> str:
    """The file name of a student's feedback page: `<folder name>.html`, or, for a name that is not UTF-8 or
    too long for a file name with `.html`, its first characters and a hash of the whole name."""
    raw = os.fsencode(student)
    if shown_name(student) == student and len(raw) <= 240:
        return f"{student}.html"
    short = shown_name(student).encode("utf-8")[:120].decode("utf-8", errors="ignore").replace("\ufffd", "_")
    return f"{short}-{hashlib.sha256(raw).hexdigest()[:12]}.html"


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
    """A plain-text table of the grades, for the terminal, with a closing line of totals. A row that is not
    cleanly graded (not graded at all, a kernel that died, a time limit) needs the instructor."""
    width = max([len(shown_name(r.student)) for r in rows] + [7])
    lines = [f"{'student':<{width}}  {'score':>11}  status"]
    for r in rows:
        score = "—" if r.score is None else f"{r.score:g}"
        lines.append(f"{shown_name(r.student):<{width}}  {score:>5} / {r.max_score:<3g}  {r.status}")
    graded = [r for r in rows if r.score is not None and r.status.startswith("graded")]
    clean = [r for r in rows if r.clean]
    mean = sum(r.score for r in graded) / len(graded) if graded else 0.0
    lines.append(f"{len(rows)} students: {len(graded)} graded (mean {mean:.1f} / {rows[0].max_score:g}), "
                 f"{len(rows) - len(clean)} need the instructor (see status)" if rows else "no student folders")
    return "\n".join(lines)
