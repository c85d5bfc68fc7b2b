"""The grade cache: an unchanged notebook graded under the same version key (`prepare.version`) is not graded
again. Only clean grades are kept, and only once the batch's canary has passed.

Explained in: README.md, section "Instructors: grading".
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from llmcourse.grading.batch.rows import CANARY, Row
from llmcourse.grading.batch.submission import find_notebook

CANARIES: dict = {}  # a batch's work folder -> the future of its canary, while the batch runs (set by its executor)


def canary_passed(s: dict) -> bool:
    """Whether the batch's canary passed (waiting for it if it still runs); True where no canary runs beside."""
    canary = CANARIES.get(str(s.get("work")))
    return canary is None or canary.exception() is None


def look_up(folder: Path, s: dict) -> tuple[Row, bytes | None, tuple[Row, str | None] | None]:
    """The student's row to fill and notebook, or a result already known: a row saying why the folder cannot be
    graded, or the cached grade and feedback of this very notebook (unless `force`)."""
    row = Row(folder.name, s["assignment"], max_score=sum(c.points for c in s["cells"]))
    data, _, problem = find_notebook(folder)
    if data is None:  # not graded: the score is empty, never 0
        row.status, row.score = problem if problem.startswith("not graded") else f"not graded: {problem}", None
        return row, None, (row, None)
    key, cached = cache_entry(row.student, data, s)
    if not s["force"] and cached.exists():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return row, data, (Row.from_dict(saved["row"]), saved["html"])
    return row, data, None


def cache_entry(student: str, data: bytes, s: dict) -> tuple[str, Path]:
    """The key of a notebook's grade (the notebook and the batch's version) and the file that keeps it."""
    key = hashlib.sha256(s["version"].encode() + data).hexdigest()
    return key, s["cache"] / f"{hashlib.sha256(os.fsencode(student)).hexdigest()[:16]}.json"


def keep(data: bytes, row: Row, html: str | None, s: dict) -> tuple[Row, str | None]:
    """Cache a clean grade; a kernel that died, a time limit, a machine fault: never kept, graded afresh next time;
    nor anything graded on a machine whose canary failed."""
    if row.clean and (row.student == CANARY or canary_passed(s)):
        key, cached = cache_entry(row.student, data, s)
        s["cache"].mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "row": asdict(row), "html": html}))
        tmp.replace(cached)
    return row, html
