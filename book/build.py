"""Build the book on every core: execute the chapters into the execution cache in parallel, then render.

`jupyter-book build` executes the notebooks that its cache lacks one after another, on one core. This script
first finds the chapters of _toc.yml that the cache (`execute.cache` in _config.yml) lacks, executes them in a
pool of one kernel per core, longest first, and caches them as myst-nb would (the same reader, working folder,
timeout and cache), so that the `jupyter-book build` that follows finds every chapter cached and only renders.
`make book`, the test suite (tests/conftest.py) and benchmarks/book_build.py build the book with it. Two builds
of one checkout at once (a test run beside `make book`, or two test workers) take turns: the second waits for
the first (a lock in _build/), then finds the chapters cached and only renders.

    .venv/bin/python book/build.py                  # execute what the cache lacks, then jupyter-book build
    .venv/bin/python book/build.py --execute-only   # only fill the execution cache
    .venv/bin/python book/build.py --jobs 1         # one chapter at a time (default: one per core)
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = [str(Path(sys.executable).with_name("jupyter-book")), "build", ".", "--builder", "html", "-W", "-n",
                "--keep-going"]
MYST_READER = {"type": "plugin", "name": "myst_nb_md"}  # what myst-nb hands jupyter-cache for a MyST .md page
TIMES = "execution-seconds.json"  # in the cache folder: each chapter's last execution time, to start long ones first
# A cold cache has no times yet: seconds measured on 2 idle cores, two chapters at a time on a thread each, with
# the results that ship in llmcourse/toys/cache (chapter 6's training and chapter 5's KV-cache timing among them);
# a chapter not listed counts as long.
FIRST_GUESS = {"02_word2vec": 27, "08_your_gpt": 24, "04_ffn_memory": 11, "03_attention": 10, "05_gpt": 8,
               "07_scaling": 5, "06_training": 4, "01_tokens": 4, "conclusion": 3, "intro": 4}
NEW_CHAPTER_GUESS = 300


def toc_files(root: Path = ROOT) -> list[Path]:
    """Every page of _toc.yml (root, chapters, sections, parts), as the file on disk, in the toc's order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names: list[str] = []

    def walk(entry):
        if isinstance(entry, dict):
            for key in ("root", "file"):
                if isinstance(entry.get(key), str):
                    names.append(entry[key])
            for key in ("parts", "chapters", "sections"):
                for child in entry.get(key) or []:
                    walk(child)

    walk(toc)
    pages = []
    for name in names:
        found = [root / (name + suffix) for suffix in ("", ".md", ".ipynb") if (root / (name + suffix)).is_file()]
        if not found:
            raise SystemExit(f"_toc.yml names {name}, which is neither {name}.md nor {name}.ipynb")
        pages.append(found[0])
    return pages


def execution_settings(root: Path = ROOT) -> dict:
    """The `execute` section of _config.yml, with jupyter-book's defaults."""
    execute = (yaml.safe_load((root / "_config.yml").read_text()) or {}).get("execute") or {}
    return {"mode": execute.get("execute_notebooks", "auto"), "cache": root / execute.get("cache", ".jupyter_cache"),
            "timeout": execute.get("timeout", 30), "allow_errors": bool(execute.get("allow_errors", False)),
            "exclude": list(execute.get("exclude_patterns") or [])}


# jupyter-book 1's default MyST extensions (its default_config.yml): a `:::` block decides which code cells are
# nested, so the pages are read with them, as the build reads them
JB_MYST_EXTENSIONS = ["colon_fence", "dollarmath", "linkify", "substitution", "tasklist"]


def read_notebook(path: Path, root: Path = ROOT):
    """The notebook myst-nb makes of a page in the build (the cache matches it by its code cells, their
    metadata and the kernelspec)."""
    import nbformat
    from myst_nb.core.read import is_myst_markdown_notebook, read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    text = path.read_text(encoding="utf8")
    if not is_myst_markdown_notebook(text):
        return None
    parse = (yaml.safe_load((root / "_config.yml").read_text()) or {}).get("parse") or {}
    extensions = JB_MYST_EXTENSIONS + [e for e in parse.get("myst_enable_extensions") or [] if e not in
                                       JB_MYST_EXTENSIONS]
    config = MdParserConfig(enable_extensions=set(extensions))
    return read_myst_markdown_notebook(text, config=config, add_source_map=True, path=str(path))


def to_execute(root: Path, settings: dict, cache) -> list[Path]:
    """The executable pages of the toc that the execution cache lacks."""
    pages = []
    for page in toc_files(root):
        relative = PurePosixPath(page.relative_to(root).as_posix())
        if any(relative.match(pattern) for pattern in settings["exclude"]):  # jupyter-book matches from the right
            continue
        notebook = read_notebook(page, root)
        if notebook is None or not any(cell.cell_type == "code" for cell in notebook.cells):
            continue
        try:
            cache.match_cache_notebook(notebook)
        except KeyError:
            pages.append(page)
    return pages


def execute(path: str, root: str, timeout: int, allow_errors: bool) -> tuple[str, object, float, str | None]:
    """Run one page's notebook in its own folder (in a worker process): (path, notebook, seconds, error)."""
    from jupyter_cache.executors.utils import single_nb_execution

    notebook = read_notebook(Path(path), Path(root))
    result = single_nb_execution(notebook, cwd=str(Path(path).parent), timeout=timeout, allow_errors=allow_errors,
                                 meta_override=True)
    return path, result.nb, result.time, result.exc_string if result.err is not None else None


def one_thread_each(threads: int) -> None:
    """In a pool worker, before its kernel starts: torch (OpenMP) in the kernel computes on `threads` threads.
    Two kernels that each start a thread per core on two cores wait for each other's threads: a cold build took
    half again as much CPU time (93 s and 170 s of CPU against 60 s and 106 s, on 2 cores). The numbers a chapter
    prints do not change beyond float rounding (the seventh digit). A thread count set by the caller is kept."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def execute_missing(root: Path = ROOT, jobs: int | None = None, log=print) -> bool:
    """Execute into the cache every page that it lacks, `jobs` at a time (default: one per core), longest first.
    Returns False (having printed the failing cell's traceback) if a page failed."""
    settings = execution_settings(root)
    if settings["mode"] not in ("cache", "auto", "force"):
        return True
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(settings["cache"]))
    pages = to_execute(root, settings, cache)
    if not pages:
        return True
    times_file = Path(settings["cache"]) / TIMES
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    names = {page: page.relative_to(root).as_posix() for page in pages}
    expected = {page: times.get(names[page], FIRST_GUESS.get(page.stem, NEW_CHAPTER_GUESS)) for page in pages}
    pages.sort(key=expected.get, reverse=True)
    jobs = max(1, min(jobs or usable_cores(), len(pages)))
    # Matplotlib's font cache, built here once: a kernel that builds it (a fresh machine, or fonts just installed)
    # prints "Matplotlib is building the font cache" to stderr, which the render counts as a warning, an error.
    import matplotlib.font_manager  # noqa: F401

    log(f"executing {len(pages)} page(s), {jobs} at a time: {', '.join(p.stem for p in pages)}")
    started, failed = time.perf_counter(), []
    # spawn, not fork: the workers start without this process's open cache database and threads
    threads = max(1, usable_cores() // jobs)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=one_thread_each,
                             initargs=(threads,)) as pool:
        def stop(signum, frame):  # terminated (a test run ends early): the workers go, their kernels with them
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            os._exit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        pending = {pool.submit(execute, str(page), str(root), settings["timeout"], settings["allow_errors"])
                   for page in pages}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                path, notebook, seconds, error = future.result()
                name = Path(path).relative_to(root).as_posix()
                if error is not None:
                    failed.append(name)
                    log(f"FAILED {name} after {seconds:.0f} s:\n{error}")
                    continue
                record = cache.add_nb_to_project(path, read_data=MYST_READER if path.endswith(".md") else None)
                cache.cache_notebook_bundle(CacheBundleIn(notebook, record.uri, data={"execution_seconds": seconds}),
                                            check_validity=False, overwrite=True)
                times[name] = round(seconds, 1)
                times_file.write_text(json.dumps(times, indent=1, sort_keys=True))
                log(f"executed {name} in {seconds:.0f} s ({time.perf_counter() - started:.0f} s so far)")
    return not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=None, help="pages executed at once (default: one per core)")
    parser.add_argument("--execute-only", action="store_true", help="fill the execution cache, do not render")
    args = parser.parse_args()
    (ROOT / "_build").mkdir(exist_ok=True)
    with open(ROOT / "_build" / "book-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build of this checkout runs: wait for it
        if not execute_missing(ROOT, args.jobs, log=lambda line: print(line, flush=True)):
            print("The book does not build: a page failed to execute (above).", flush=True)
            return 1
        if args.execute_only:
            return 0
        render = subprocess.Popen(JUPYTER_BOOK, cwd=ROOT)
        signal.signal(signal.SIGTERM, lambda signum, frame: (render.terminate(), os._exit(128 + signum)))
        return render.wait()


if __name__ == "__main__":
    sys.exit(main())
