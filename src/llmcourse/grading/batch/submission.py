"""What a student handed in: the student folders of a submissions folder (never following a link), the one
notebook in each (only regular files, of a bounded size), what makes it impossible to grade safely
(`malformed`), the grading metadata an editor broke (`repair_metadata`) and the locked cells the student
deleted (`restore_locked_cells`).

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import copy
import os
import re
import stat
from pathlib import Path

import nbformat

from llmcourse.grading.batch.rows import Row

MAX_NOTEBOOK_BYTES = 64 * 2**20  # a larger "notebook" is not read


def student_folders(submissions: Path, assignment: str, ours: set[Path]) -> tuple[list[Path], list[Row]]:
    """The student folders to grade, and a row for each entry that must not be read: a symbolic link (to a
    file or a folder, inside or outside the submissions) is never followed. Hidden entries, plain files and the
    grader's own folders (feedback, cache) placed inside the submissions are not students."""
    folders, refused = [], []
    for entry in sorted(os.scandir(submissions), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            refused.append(Row(entry.name, assignment, score=None, status=(
                f"not graded: the student's entry is a symbolic link (to {os.readlink(entry.path)}), not a folder; "
                "grading reads only regular files inside the submissions folder")))
        elif entry.is_dir(follow_symlinks=False) and Path(entry.path).resolve() not in ours:
            folders.append(Path(entry.path))
    return folders, refused


def find_notebook(folder: Path) -> tuple[bytes | None, str, str]:
    """The bytes of the one notebook in a student's folder, its name, or (None, '', a status the instructor
    can act on). Symbolic links are never followed and only regular files are read."""
    notebooks, links = [], []
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(top, name)
            if path.is_symlink():
                links.append(path)
        dirs[:] = [d for d in dirs if d != ".ipynb_checkpoints" and not Path(top, d).is_symlink()]
        notebooks += [Path(top, f) for f in files if f.endswith(".ipynb") and not Path(top, f).is_symlink()]
    linked = [p for p in links if p.name.endswith(".ipynb") or p.is_dir()]
    if linked:
        names = ", ".join(f"{p.relative_to(folder)} -> {os.readlink(p)}" for p in linked)
        return None, "", (f"not graded: the submission holds a symbolic link ({names}); grading reads only "
                          "regular files, so ask the student for the notebook itself")[:400]
    if not notebooks:
        return None, "", "no notebook: the folder holds no .ipynb file"
    if len(notebooks) > 1:
        return None, "", ("several notebooks, keep one: " + ", ".join(str(p.relative_to(folder)) for p in sorted(notebooks)))[:300]
    path = notebooks[0]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        return None, "", f"not graded: {path.name} cannot be opened ({err.strerror})"
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None, "", f"not graded: {path.name} is not a regular file"
        if info.st_size > MAX_NOTEBOOK_BYTES:
            return None, "", f"not graded: {path.name} is {info.st_size / 2**20:.0f} MiB, more than a notebook can be"
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    try:
        nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as err:  # empty, not JSON, not a notebook
        return None, "", f"unreadable notebook ({type(err).__name__}): ask the student for the .ipynb file again"
    return data, path.name, ""


_SURROGATE = re.compile("[\ud800-\udfff]")


def malformed(nb) -> str:
    """What makes a notebook impossible to grade safely, said so that the student can fix it; '' if nothing.
    Outputs are cleared here (grading runs the notebook afresh)."""
    owners: dict[str, int] = {}
    if not isinstance(nb.get("cells"), list):
        return "it has no list of cells"
    for i, cell in enumerate(nb.cells, 1):
        if not isinstance(cell, dict):
            return f"cell {i} is not a cell (a {type(cell).__name__})"
        kind = cell.get("cell_type")
        if kind not in ("code", "markdown", "raw"):
            return (f"cell {i} has the cell type {str(kind)[:40]!r}; a cell is code, markdown or raw "
                    "(copy your work into a new cell, or a new notebook)")
        if not isinstance(cell.get("source"), str) or not isinstance(cell.get("metadata"), dict):
            return f"cell {i} has no text (source) or no metadata that Jupyter can read"
        bad = _SURROGATE.search(cell.source)
        if bad:
            line = cell.source.count("\n", 0, bad.start()) + 1
            return (f"cell {i}, line {line} holds a lone surrogate (U+{ord(bad.group()):04X}), a broken character "
                    "that is not text: retype that line")
        if kind == "code":
            cell["outputs"], cell["execution_count"] = [], None
        meta = cell.metadata.get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if isinstance(grade_id, str) and (meta.get("solution") or meta.get("grade") or meta.get("locked")):
            if grade_id in owners:
                return (f"cells {owners[grade_id]} and {i} both have grade_id {grade_id[:80]!r}: a copied cell keeps "
                        "the grading metadata of its original; delete the copy (or paste its code into a new cell)")
            owners[grade_id] = i
    try:
        nbformat.writes(nb).encode("utf-8")
    except UnicodeEncodeError:
        return "its metadata holds a lone surrogate, a broken character that is not text"
    except Exception as err:  # noqa: BLE001  (anything nbformat cannot write)
        return f"nbformat cannot write it back ({type(err).__name__}: {str(err)[:200]})"
    return ""


_RELEASED: dict[str, dict] = {}


def repair_metadata(nb, s: dict) -> None:
    """Grading metadata the student's editor broke, mended where that is safe (the points come only from the
    instructor's source, never from this metadata): a cell whose nbgrader metadata is not a mapping, has no
    grade_id, or one the assignment does not have, becomes an ordinary cell; a known cell whose flags or points
    are of the wrong type gets the released notebook's metadata back."""
    path = s["template"] / "release" / s["assignment"] / s["source"].name
    if str(path) not in _RELEASED:
        released = nbformat.read(path, as_version=4) if path.exists() else s["source_nb"]
        _RELEASED[str(path)] = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"] for c in released.cells
                                if isinstance(c.metadata.get("nbgrader"), dict) and "grade_id" in c.metadata.nbgrader}
    known = _RELEASED[str(path)]
    for cell in nb.cells:
        if "nbgrader" not in cell.metadata:
            continue
        meta = cell.metadata["nbgrader"]
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if not isinstance(grade_id, str) or grade_id not in known:
            del cell.metadata["nbgrader"]
            continue
        flags_ok = all(isinstance(meta.get(k, False), bool) for k in ("grade", "solution", "locked", "task"))
        points = meta.get("points", 0)
        if not flags_ok or isinstance(points, bool) or not isinstance(points, (int, float)):
            cell.metadata["nbgrader"] = copy.deepcopy(known[grade_id])


def restore_locked_cells(submitted, source_nb):
    """Put back every locked cell (tests, set-up) the student deleted, after the cell that preceded it in the
    source; nbgrader then restores the contents of all locked cells from the source."""
    nb = copy.deepcopy(submitted)
    present = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells}
    previous = None
    for cell in source_nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("locked") and meta.get("grade_id") not in present:
            at = next((i + 1 for i, c in enumerate(nb.cells)
                       if previous and c.metadata.get("nbgrader", {}).get("grade_id") == previous), len(nb.cells))
            nb.cells.insert(at, copy.deepcopy(cell))
        previous = meta.get("grade_id", previous)
    return nb
