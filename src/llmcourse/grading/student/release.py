"""`llmcourse release`: regenerate the student notebooks in exercises/ from the source notebooks in solutions/.

Explained in: README.md, section "Authors".
"""
from __future__ import annotations

from pathlib import Path

from llmcourse.grading.course import REPO, assignments, nbgrader_api


def release(names: list[str] | None = None, root: Path = REPO, release_dir: str = "exercises") -> list[Path]:
    """Regenerate the student notebooks of `names` (default: all) from solutions/ into `release_dir`."""
    api = nbgrader_api(root, release=release_dir)
    written = []
    for name in names or assignments(root):
        if not (root / "solutions" / name).is_dir():
            raise SystemExit(f"No assignment '{name}' in {root / 'solutions'}; known: {', '.join(assignments(root))}")
        result = api.generate_assignment(name, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not release {name}:\n{result.get('error') or result.get('log')}")
        written.extend(sorted((root / release_dir / name).glob("*.ipynb")))
    return written
