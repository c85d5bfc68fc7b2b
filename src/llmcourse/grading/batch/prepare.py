"""What every student of a batch is graded with (`batch_setting`): the course folder prepared once (the
nbgrader source and gradebook, the test cells' cases, the stubbed llmcourse that kernels import), the block
of user ids its kernels run as, what the kernels must reach and what is hidden from them, and the version
key that says when a cached grade must be redone.

Explained in: README.md, section "How grading works".
"""
from __future__ import annotations

import compileall
import hashlib
import os
import secrets
import shutil
import site
import sys
from pathlib import Path

from llmcourse.data import DATA_DIR
from llmcourse.grading.batch import judge
from llmcourse.grading.course import nbgrader_api
from llmcourse.grading.batch.limits import Limits
from llmcourse.grading.kernel.sandbox import sweep_stale
from llmcourse.grading.student.stubs import build_stubbed_package
from llmcourse.grading.kernel.worker import cell_digest

UID_BASE = 200_000  # when grading as root, kernels run as users UID_BASE and above (no such accounts needed)
UID_BLOCK = 100_000  # each grading run draws its own block of user ids, so runs at the same time never share one
KERNEL_PYTHON = sys.executable  # the interpreter of the grading kernels (tests point it elsewhere)


def batch_setting(work: Path, batch: dict, hide: list[Path]) -> dict:
    """What every student of a batch is graded with: the batch (assignment, source, cells, limits, ...), the course
    prepared in `work` (template, cases, stubbed package), the kernels' user ids, what they must reach and what is
    hidden from them (the course's private folders, `work` and the paths in `hide`)."""
    root = batch["root"]
    sweep_stale()  # what killed runs left in the temp folder
    template, cases = prepare_course(work, root, batch["assignment"], batch["source_nb"], batch["cells"])
    return dict(batch, uid_base=UID_BASE + UID_BLOCK * secrets.randbelow(20_000), work=work, template=template,
                cases=cases, version=version(batch["source"], batch["limits"], root),
                locked=locked_digests(batch["source_nb"]), reach=reach(),
                hide=[str(p) for p in (root / "src", root / "solutions", root / ".git", root / ".nbgrader",
                                       root / "tests", work, *hide) if p and p.exists()])


def version(source: Path, limits: Limits, root: Path) -> str:
    """Changes when the assignment, the grading code, the limits or the grading environment change (the
    interpreter, the user we run as, who may enter the folders the kernel needs): cached grades are redone."""
    h = hashlib.sha256(source.read_bytes())
    for path in sorted(Path(__file__).parents[2].rglob("*.py")):
        h.update(path.read_bytes())
    h.update(repr(limits).encode())
    facts = [KERNEL_PYTHON, sys.version, os.geteuid(), str(root)]
    for path in [*reach(), str(root)]:
        facts += [(str(p), oct(p.stat().st_mode)) for p in [Path(path), *Path(path).parents] if p.exists()]
    for top in [*site.getsitepackages(), str(DATA_DIR)]:  # installs, removals, folders closed by chmod
        for folder, dirs, _ in os.walk(top):
            facts.append((folder, os.stat(folder).st_mode, os.stat(folder).st_mtime_ns))
    h.update(repr(facts).encode())
    return h.hexdigest()


def reach() -> list[str]:
    """What the grading kernel must be able to read: the Python installation, its environment, the data."""
    paths = {sys.base_prefix, sys.prefix, str(Path(KERNEL_PYTHON).resolve().parents[1]), str(DATA_DIR)}
    paths |= {p for p in site.getsitepackages() if os.path.isdir(p)}
    return sorted(str(Path(p).resolve()) for p in paths if os.path.isdir(p))


def locked_digests(source_nb) -> set[str]:
    """The instructor's cells (set-up and tests): a kernel that dies in one of them before any student code
    ran is the machine's fault, not the student's."""
    return {cell_digest(c.source) for c in source_nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("locked")}


def prepare_course(work: Path, root: Path, assignment: str, source_nb, cells) -> Path:
    """The course folder every student's grading starts from (source + gradebook), the cases, the kernel package.
    Returns the template folder and the cases (key -> argument tuples)."""
    template = work / "template"
    shutil.copytree(root / "solutions" / assignment, template / "source" / assignment)
    api = nbgrader_api(template, source="source", release="release", work=".", scratch=True)
    result = api.generate_assignment(assignment, force=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader could not prepare {assignment}:\n{result.get('error') or result.get('log')}")
    cases = judge.write_cases(cells, work / "cases")
    build_stubbed_package(work / "site", source_nb, cells)
    # Compiled once here: each kernel would compile the modules it imports (its user cannot keep the result).
    compileall.compile_dir(work / "site", quiet=2)
    return template, cases
