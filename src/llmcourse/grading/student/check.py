"""`llmcourse check NOTEBOOK`: what a student runs before handing in, like `nbgrader validate` or `otter check`.

It restarts the notebook: a copy runs top to bottom in a fresh kernel (the notebook's saved state does not
count), with the test cells put back as released (as the grader does) and the grader's time limit per cell.
Then it prints one row per visible test (✓, or ✗ with the error's first line) and warns about what will cost
points when the notebook is graded: a cell that fails on a fresh run although its saved outputs show no error,
a test cell edited or deleted (it will be restored), a cell that ran into the time limit (or close to it), a
stream output longer than the feedback keeps. Exit status 0 when every visible test passes. The student's file
is only read.

The released notebook to compare with is found by assignment name: inside the kit it ships with the package
(`llmcourse/_released/NN_topic.ipynb`), in the course's repository it is `exercises/NN_topic/NN_topic.ipynb`.
In the kit this module is also the `llmcourse` command (`main`), whose one subcommand is `check`.

Explained in: README.md, sections "Students" and "Teaching a class".
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from llmcourse.grading.course import CELL_TIMEOUT, MAX_OUTPUT_CHARS, cell_timeout_for

PACKAGE = Path(__file__).resolve().parents[2]
SLOW_SHARE = 0.8  # a cell that takes this share of the time limit gets a warning: another machine may be slower
KERNEL_NAME = "llmcourse-check"
DESCRIPTION = ("Run a notebook fresh, top to bottom, as the grader will, and report its visible tests and what would "
               "cost points (before handing it in).")


@dataclass
class Report:
    """What `check` found: one row per visible test, the warnings, and the exit status."""
    rows: list[tuple[str, float, bool, str]] = field(default_factory=list)  # (grade_id, points, passed, message)
    hidden: list[tuple[str, float]] = field(default_factory=list)         # hidden-test cells: run only when graded
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # locked cells of the course that failed: never the student's loss
    saved: list[str] = field(default_factory=list)  # the functions saved for later notebooks (the kit's chaining)

    @property
    def status(self) -> int:
        return 0 if self.rows and all(ok for _, _, ok, _ in self.rows) else 1

    def table(self) -> str:
        width = max([len(g) for g, *_ in self.rows] + [4])
        lines = [f"   {'test':<{width}}  points"]
        for grade_id, points, ok, message in self.rows:
            lines.append(f"{'✓' if ok else '✗'}  {grade_id:<{width}}  {points:>6g}" + (f"  {message}" if message else ""))
        passed = sum(p for _, p, ok, _ in self.rows if ok)
        total = sum(p for _, p, _, _ in self.rows)
        lines.append(f"{sum(ok for _, _, ok, _ in self.rows)} of {len(self.rows)} visible tests pass "
                     f"({passed:g} of {total:g} points)"
                     + (f"; {len(self.hidden)} hidden tests ({sum(p for _, p in self.hidden):g} points) run only "
                        "when the notebook is graded." if self.hidden else "."))
        if self.warnings:
            lines.append("")
            lines.append("Warnings (what would cost points when graded):")
            lines += [f"- {w}" for w in self.warnings]
        if self.notes:
            lines.append("")
            lines.append("Notes (not graded, no points lost):")
            lines += [f"- {n}" for n in self.notes]
        if self.saved:
            lines.append("")
            lines.append(f"Saved for the later notebooks (they now use yours): {', '.join(self.saved)}.")
        return "\n".join(lines)


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {}) if isinstance(cell.metadata.get("nbgrader"), dict) else {}


def _label(cell, index: int) -> str:
    grade_id = _meta(cell).get("grade_id")
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return f"cell {index + 1} ({grade_id})" if grade_id else f"cell {index + 1} (`{first[:40]}`)"


def _is_hidden_placeholder(cell) -> bool:
    """A released test cell whose tests are hidden: only comments are left in it."""
    return not [line for line in cell.source.splitlines() if line.strip() and not line.strip().startswith("#")]


def find_released(notebook: nbformat.NotebookNode, path: Path) -> tuple[nbformat.NotebookNode | None, str]:
    """The released notebook this one was made from, and its assignment name: the one that shares most answer and
    test cells (by nbgrader id) with it, the one with the same file name on a tie. The kit's own copies come
    first; in the course's repository, exercises/."""
    candidates = sorted((PACKAGE / "_released").glob("*.ipynb"))
    root = PACKAGE.parents[1]
    if not candidates and (root / "solutions").is_dir():
        candidates = sorted((root / "exercises").glob("*/*.ipynb"))
    ids = {_meta(c).get("grade_id") for c in notebook.cells} - {None}
    best, best_score = (None, ""), (0, False)
    for candidate in candidates:
        released = nbformat.read(candidate, as_version=4)
        graded = {_meta(c)["grade_id"] for c in released.cells
                  if _meta(c).get("grade_id") and (_meta(c).get("solution") or _meta(c).get("grade"))}
        score = (len(ids & graded), candidate.stem == path.stem)
        if score[0] and score > best_score:
            best, best_score = (released, candidate.stem), score
    return best


def restore_tests(notebook: nbformat.NotebookNode, released: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[str]]:
    """Put back every locked cell (set-up, tests) as released: edited ones get their source back, deleted ones are
    inserted after the cell that preceded them. Returns the notebook to run and what was restored."""
    nb = copy.deepcopy(notebook)
    notes = []
    present = {_meta(c).get("grade_id"): c for c in nb.cells if _meta(c).get("grade_id")}
    previous = None
    for cell in released.cells:
        meta = _meta(cell)
        grade_id = meta.get("grade_id")
        if meta.get("locked") and grade_id:
            kind = "test cell" if meta.get("grade") else "locked cell"
            if grade_id not in present:
                at = next((i + 1 for i, c in enumerate(nb.cells) if previous and _meta(c).get("grade_id") == previous), len(nb.cells))
                nb.cells.insert(at, copy.deepcopy(cell))
                notes.append(f"{kind} {grade_id} was deleted: the grader puts it back (this check ran it too).")
            elif present[grade_id].source.strip() != cell.source.strip():
                present[grade_id].source = cell.source
                present[grade_id].metadata["nbgrader"] = copy.deepcopy(meta)
                notes.append(f"{kind} {grade_id} was edited: the grader restores the original (this check ran the "
                             "original).")
        previous = grade_id or previous
    return nb, notes


def _kernel_manager(folder: Path):
    """A kernel of this very Python (the kit's venv), whatever kernels Jupyter knows elsewhere."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec = folder / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "llmcourse check", "language": "python"}))
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


def run_fresh(nb: nbformat.NotebookNode, cwd: Path, cell_timeout: int,
              progress=None) -> tuple[nbformat.NotebookNode, dict[int, float], str]:
    """Execute `nb` (a copy) top to bottom in a new kernel started in `cwd`; errors do not stop the run, a cell
    that reaches the time limit is interrupted. Returns the executed copy, the seconds of each code cell that ran,
    and why the run stopped early ('' if it did not)."""
    from nbclient import NotebookClient

    nb = copy.deepcopy(nb)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    seconds: dict[int, float] = {}
    started: dict[int, float] = {}
    stopped = f"the cell ran longer than {cell_timeout} s and was stopped (an endless loop?)"
    env = {k: v for k, v in os.environ.items() if k != "LLMCOURSE_GRADING"}
    with tempfile.TemporaryDirectory(prefix="llmcourse-check-") as tmp:
        km = _kernel_manager(Path(tmp))
        client = NotebookClient(
            nb, km=km, timeout=cell_timeout, allow_errors=True, interrupt_on_timeout=True,
            error_on_timeout={"ename": "CellTimeoutError", "evalue": stopped, "traceback": [f"CellTimeoutError: {stopped}"]},
            resources={"metadata": {"path": str(cwd)}}, record_timing=False)

        def on_start(cell, cell_index, **_):
            started[cell_index] = time.monotonic()
            if progress and cell_index in code:
                progress(code.index(cell_index) + 1, len(code), _label(cell, cell_index))

        def on_complete(cell, cell_index, **_):
            seconds[cell_index] = time.monotonic() - started.get(cell_index, time.monotonic())

        client.on_cell_start = on_start
        client.on_cell_executed = on_complete
        stopped = ""
        try:
            client.execute(env=env)
        except Exception as err:  # the kernel died (os._exit, out of memory) or could not start
            stopped = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:200]
        finally:
            if km.has_kernel:
                from jupyter_core.utils import run_sync

                run_sync(km.shutdown_kernel)(now=True)
    return nb, seconds, stopped


def check_notebook(path: Path, cell_timeout: int | None = None, progress=None) -> Report:
    """Run `path` fresh and report its visible tests and the warnings (see the module docstring). `cell_timeout`:
    the grader's limit per cell (default: the assignment's, `cell_timeout_for`)."""
    path = Path(path)
    saved = nbformat.read(path, as_version=4)
    report = Report()
    released, name = find_released(saved, path)
    if released is None:
        report.warnings.append("no released notebook matches this one (none of its cell ids): edited or deleted "
                               "test cells cannot be detected, and the grader may not accept it.")
        to_run = saved
    else:
        to_run, notes = restore_tests(saved, released)
        report.warnings += notes
    if cell_timeout is None:
        cell_timeout = cell_timeout_for(name) if released is not None else CELL_TIMEOUT
    executed, seconds, stopped = run_fresh(to_run, path.resolve().parent, cell_timeout, progress)
    if stopped:
        report.warnings.append(f"the run stopped early ({stopped}): the kernel died or could not start, and the "
                               "cells after that point did not run; when graded, their tests score 0.")

    saved_by_id = {_meta(c).get("grade_id"): c for c in saved.cells if _meta(c).get("grade_id")}
    for index, cell in enumerate(executed.cells):
        if cell.cell_type != "code":
            continue
        meta = _meta(cell)
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        label = _label(cell, index)
        took = seconds.get(index, 0.0)
        timed_out = any(e.ename == "CellTimeoutError" for e in errors) or (
            any(e.ename == "KeyboardInterrupt" for e in errors) and took >= cell_timeout - 1)
        error = (f"stopped after {cell_timeout} s, the grader's limit per cell" if timed_out else
                 f"{errors[-1].ename}: {errors[-1].evalue}".splitlines()[0][:300] if errors else "")
        if stopped and index not in seconds:
            errors, error = [None], "did not run: the kernel had stopped before this cell"
            if meta.get("grade") and not _is_hidden_placeholder(cell):
                report.rows.append((meta["grade_id"], float(meta.get("points", 0)), False, error))
            continue
        if meta.get("grade"):
            if _is_hidden_placeholder(cell):
                report.hidden.append((meta["grade_id"], float(meta.get("points", 0))))
                continue
            report.rows.append((meta["grade_id"], float(meta.get("points", 0)), not errors, error))
        before = saved_by_id.get(meta.get("grade_id")) if meta.get("grade_id") else _saved_twin(saved, cell)
        ran_before = before is not None and before.get("outputs") and not any(
            o.get("output_type") == "error" for o in before.outputs)
        if timed_out:
            report.warnings.append(f"{label} ran into the grader's limit of {cell_timeout} s per cell and was stopped: "
                                   "make it faster.")
        elif errors and ran_before:
            report.warnings.append(f"{label} fails on a fresh run ({error[:160]}) although your saved notebook shows "
                                   "it ran: it depends on something you ran by hand or in another order; the grader "
                                   "runs top to bottom.")
        elif errors and not meta.get("grade") and meta.get("locked") and not meta.get("solution"):
            # a cell of the course's (set-up, demo): when graded, llmcourse's references stand in for other
            # exercises' functions, so its failure here is never the student's loss
            report.notes.append(f"{label}, a locked cell of the course, raises {error[:300]}. It is not graded: "
                                "when your notebook is graded, llmcourse's own functions run there.")
        elif errors and not meta.get("grade"):
            if errors[-1].ename == "NotImplementedError" and not errors[-1].evalue:
                error += "it uses a function you have not written yet"
            report.warnings.append(f"{label} raises {error[:200]}")
        elif took > SLOW_SHARE * cell_timeout:
            report.warnings.append(f"{label} took {took:.0f} s, close to the grader's limit of {cell_timeout} s per "
                                   "cell: on a busier machine it may be stopped.")
        chars = sum(len(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        if chars > MAX_OUTPUT_CHARS:
            report.warnings.append(f"{label} prints {chars:,} characters; the feedback keeps only the first "
                                   f"{MAX_OUTPUT_CHARS:,} of each output.")
    if report.status == 0 and released is not None:
        report.saved = save_functions(saved, name, released)
    return report


def save_functions(notebook: nbformat.NotebookNode, assignment: str, released: nbformat.NotebookNode) -> list[str]:
    """In the kit, once every visible test passes: save the notebook's graded functions for the later notebooks
    (`llmcourse.grading.student.chain`). Returns the names saved (none outside the kit)."""
    from llmcourse.grading.student import chain

    if not chain.in_kit():
        return []
    import ast

    from llmcourse import checks

    functions = {}
    for cell in released.cells:
        if cell.cell_type == "code" and _meta(cell).get("grade"):
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in checks.REGISTRY:
                    check = checks.REGISTRY[node.func.id]
                    functions[(check.reference.__module__, check.reference.__name__)] = check.name
    try:
        return chain.save(notebook, assignment, functions)
    except OSError as err:
        print(f"(could not save your functions for the later notebooks: {err})", file=sys.stderr)
        return []


def _saved_twin(saved: nbformat.NotebookNode, cell):
    """The cell of the saved notebook with the same source (for cells without an nbgrader id)."""
    return next((c for c in saved.cells if c.cell_type == "code" and c.source == cell.source), None)


def main(argv: list[str] | None = None) -> int:
    """The kit's `llmcourse` command (also `python -m llmcourse.grading.student.check NOTEBOOK`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="llmcourse check", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebook", type=Path, help="the notebook to check, e.g. exercises/01_tokens/01_tokens.ipynb")
    parser.add_argument("--cell-timeout", type=int, default=None,
                        help=f"seconds a cell may run, as when graded (default: the assignment's, {CELL_TIMEOUT} for "
                             "most)")


def run(args: argparse.Namespace) -> int:
    if not args.notebook.is_file():
        print(f"{args.notebook}: no such notebook", file=sys.stderr)
        return 2
    try:
        nbformat.read(args.notebook, as_version=4)
    except Exception as err:
        print(f"{args.notebook} is not a readable notebook ({type(err).__name__}: {err})", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty()

    def progress(i: int, n: int, label: str) -> None:
        text = f"running cell {i}/{n}: {label}"
        print(("\r" + text[:100].ljust(100)) if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)

    print(f"Running {args.notebook} from top to bottom in a fresh kernel ...", file=sys.stderr)
    report = check_notebook(args.notebook, args.cell_timeout, progress)
    if tty:
        print("\r" + " " * 100 + "\r", end="", file=sys.stderr)
    print(report.table())
    return report.status


if __name__ == "__main__":
    sys.exit(main())
