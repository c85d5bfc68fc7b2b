"""How long the executed book takes to build: cold (empty caches: every chapter runs, every result that does
not ship in llmcourse/toys/cache is computed) and warm (the same build again: notebooks and artefacts read from their caches).

The book is built as `make book` builds it (book/build.py: the chapters execute in parallel, one per core,
then `jupyter-book build` renders), from a copy of the committed files in a temporary folder, with an empty
artefact cache (LLMCOURSE_CACHE) and an empty notebook cache, so the repository's own caches are neither used
nor touched; the installed .venv and data/ are linked (benchmarks/make_cold.py times a fresh clone, install
included). The cold row's note gives each chapter's execution time and the load average at start and end.
There is no peer: a row gives the times, and the warm/cold ratio.

    .venv/bin/python benchmarks/book_build.py            # cold then warm (about 6 minutes on 2 quiet cores)
    .venv/bin/python benchmarks/book_build.py --jobs 1   # the chapters one at a time, as before issue 31
    .venv/bin/python benchmarks/book_build.py --smoke    # a one-page book: checks that the benchmark runs
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py: scripts here run with benchmarks/ on sys.path
from common import Result

REPO = Path(__file__).resolve().parents[1]

SMOKE_PAGE = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
# One page

```{code-cell} ipython3
from llmcourse import tokens
tokens.pretokenize("Hello world")
```
"""


def copy_of_the_book(into: Path, smoke: bool) -> Path:
    """The committed files (or a one-page book) in `into`, with links to the installed .venv and data/."""
    book = into / "course"
    if smoke:
        (book / "book").mkdir(parents=True)
        (book / "book" / "page.md").write_text(SMOKE_PAGE)
        shutil.copy2(REPO / "book" / "build.py", book / "book" / "build.py")
        (book / "_toc.yml").write_text("format: jb-book\nroot: book/page\n")
        (book / "_config.yml").write_text("title: smoke\nexclude_patterns: [.cache/*, _build/*]\n"
                                          "execute:\n  execute_notebooks: cache\n"
                                          "  cache: .cache/jupyter\n")
        return book
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = book / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    for name in (".venv", "data"):
        (book / name).symlink_to(REPO / name)
    return book


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def build(book: Path, env: dict, jobs: int | None = None) -> float:
    """Seconds of one build as `make book` runs it (book/build.py: parallel execution, then `jupyter-book build`
    with the warnings-as-errors flags)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "book/build.py"] + ([f"--jobs={jobs}"] if jobs else []),
                          cwd=book, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"the book did not build:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds


def run(smoke: bool = False, jobs: int | None = None) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="llmcourse-bench-book-") as tmp:
        book = copy_of_the_book(Path(tmp), smoke)
        env = {**os.environ, "LLMCOURSE_CACHE": str(Path(tmp) / "artefacts")}
        before = load()
        cold = build(book, env, jobs)
        after_cold = load()
        warm = build(book, env, jobs)
        times_file = book / ".cache" / "jupyter" / "execution-seconds.json"
        times = json.loads(times_file.read_text()) if times_file.exists() else {}
    how = f"{jobs} chapter(s) at a time" if jobs else f"one chapter per core ({os.cpu_count()})"
    what = "a one-page book (smoke)" if smoke else f"the whole book as `make book` builds it, {how}"
    chapters = ", ".join(f"{Path(name).stem} {s:.0f} s" for name, s in sorted(times.items(), key=lambda x: -x[1]))
    return [Result("book", f"cold build: {what}, empty caches (the results shipped in llmcourse/toys/cache are read)", cold, unit="s", higher_is_better=False,
                   note=f"load average (1/5/15 min) {before} at start, {after_cold} at end; chapters executed "
                        f"in: {chapters}"),
            Result("book", f"warm build: {what}, the same build again", warm, cold, "the cold build", "s",
                   higher_is_better=False, note=f"load average {after_cold} at start")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--jobs", type=int, default=None, help="chapters executed at once (default: one per core)")
    args = parser.parse_args()
    print(common.machine())
    print(common.table(run(args.smoke, args.jobs)))


if __name__ == "__main__":
    main()
