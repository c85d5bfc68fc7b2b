"""`llmcourse grade` beside plain `jupyter nbconvert --execute` on the same notebooks: the sandbox's overhead.

N copies of a student-like submission of an assignment (the released notebook with each answer cell filled
with the instructor's solution) are graded by `llmcourse.grading.batch.pipeline.grade(..., jobs=2, force=True)` with
a throwaway cache, feedback pages included; the same N notebooks, as the grading kernel runs them (the
instructor's test cells put back, hidden tests included), are executed by `jupyter nbconvert --to notebook
--execute`, two at a time, with the same Python. Reports seconds per submission of each, wall-clock and
processor time (this process and its children: the machine is shared and wall time is stretched by other
work), for the batch and for one notebook alone. Grading's figure includes its fixed costs (preparing the
assignment, the canary: the instructor's solution graded first), spread over the batch.

With `--times`, also prints where each student's grading spends its wall time (the stages that
`llmcourse.grading.kernel.worker.mark` records when LLMCOURSE_GRADING_TIMES names a file).

    .venv/bin/python benchmarks/grading.py                   # 20 submissions of 01_tokens (a few minutes)
    .venv/bin/python benchmarks/grading.py -n 4 --times      # a small batch, with the breakdown

Measured 2026-11-25 on the shared 2-core machine (load average 3 to 7 from other work, so wall times are
stretched), the grader before and after its worker pool (commits e9b718e and after), run one after the other
twice. A batch of 20, CPU s per submission: before 4.62 and 3.79, after 3.17 and 2.76, against 4.75 to 4.99 and
4.19 to 4.20 for nbconvert in the same runs (ratios 0.97 and 0.90 before, 0.63 and 0.66 after); wall ratios 0.85
and 0.64 before, 0.65 and 0.69 after. The kernel's checks only record results when graded (the reference runs
once, outside), where nbconvert's kernel computes both. One notebook alone: wall 17.9 s before, 8.0 s after
(nbconvert 8.3 and 7.2 s); its CPU stays about twice nbconvert's, as the canary is a second notebook.
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from common import Result, table

from llmcourse.grading.batch import pipeline
from llmcourse.grading.batch.rows import BATCH, CANARY
from llmcourse.grading.course import CELL_TIMEOUT
from llmcourse.grading.course import REPO
from llmcourse.grading.kernel.worker import TIMES_ENV

JOBS = 2
SOLUTION_MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


def _by_id(nb) -> dict:
    return {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}


def submission(assignment: str) -> nbformat.NotebookNode:
    """What an honest student hands in: the released notebook, each answer cell holding the instructor's
    solution without its markers, the test cells as released (no hidden tests)."""
    source = _by_id(nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4))
    nb = nbformat.read(next((REPO / "exercises" / assignment).glob("*.ipynb")), as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            cell.source = SOLUTION_MARKERS.sub("", source[meta["grade_id"]].source)
    return nb


def as_graded(nb, assignment: str) -> nbformat.NotebookNode:
    """The notebook as the grading kernel runs it: every locked cell (set-up, tests with hidden ones) taken
    from the instructor's source, as nbgrader autograde does."""
    source = _by_id(nbformat.read(next((REPO / "solutions" / assignment).glob("*.ipynb")), as_version=4))
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("locked"):
            cell.source = source[meta["grade_id"]].source
    return nb


def _cpu() -> float:
    """Processor seconds of this process and of its children that have ended (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def grade_batch(assignment: str, n: int, work: Path) -> tuple[float, float, list]:
    """(wall s, CPU s, rows) of grading n copies of the submission, 2 jobs, nothing taken from a cache."""
    subs = work / "submissions"
    nb = submission(assignment)
    for i in range(n):
        (subs / f"student{i:02d}").mkdir(parents=True)
        nbformat.write(nb, subs / f"student{i:02d}" / f"{assignment}.ipynb")
    cpu, started = _cpu(), time.perf_counter()
    rows = pipeline.grade(subs, assignment, out=work / "grades.csv", feedback=work / "feedback", jobs=JOBS,
                           force=True, cache=work / "cache", progress=False)
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    bad = [r for r in rows if not (r.clean and r.score == r.max_score)]
    if bad:
        raise RuntimeError(f"an honest submission did not get full marks: {bad[0]}")
    return wall, cpu, rows


def execute_batch(assignment: str, n: int, work: Path) -> tuple[float, float]:
    """(wall s, CPU s) of `jupyter nbconvert --to notebook --execute` on n copies, 2 at a time."""
    nb = as_graded(submission(assignment), assignment)
    paths = []
    for i in range(n):
        path = work / f"student{i:02d}" / f"{assignment}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
        paths.append(path)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def execute(path: Path) -> None:
        cmd = [str(Path(sys.executable).parent / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
               f"--ExecutePreprocessor.timeout={CELL_TIMEOUT}", "--output", "executed.ipynb", str(path)]
        subprocess.run(cmd, cwd=path.parent, env=env, check=True, capture_output=True)

    cpu, started = _cpu(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        list(pool.map(execute, paths))
    return time.perf_counter() - started, _cpu() - cpu


def breakdown(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """From the LLMCOURSE_GRADING_TIMES file: mean seconds per student between consecutive stages (the canary
    left out), and the batch's own stages; each stage -> seconds from the previous stage to it."""
    marks = collections.defaultdict(list)
    for line in path.read_text().splitlines():
        m = json.loads(line)
        marks[m["student"]].append((m["t"], m["stage"]))
    spent = collections.defaultdict(float)
    students = [s for s in marks if s not in (CANARY, BATCH)]
    for student in students:
        stages = sorted(marks[student])
        for (t0, _), (t1, stage) in zip(stages, stages[1:]):
            spent[stage] += (t1 - t0) / len(students)
    batch = sorted(marks.get(BATCH, []))
    return dict(spent), {stage: t1 - t0 for (t0, _), (t1, stage) in zip(batch, batch[1:])}


def run(smoke: bool = False, assignment: str = "01_tokens", n: int | None = None,
        times: Path | None = None) -> list[Result]:
    """Rows: seconds per submission (wall and CPU) of a batch and of one notebook, ours and nbconvert's."""
    n = n or 20
    results = []
    for size in (1,) if smoke else (n, 1):  # smoke: one notebook (the batch's path is the same)
        with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
            tmp = Path(tmp)
            if times and size == n:
                os.environ[TIMES_ENV] = str(times)
            try:
                ours, ours_cpu, _ = grade_batch(assignment, size, tmp / "grade")
            finally:
                os.environ.pop(TIMES_ENV, None)
            peer, peer_cpu = execute_batch(assignment, size, tmp / "execute")
        what = f"{assignment}, {size} honest submissions, {JOBS} jobs" if size > 1 else f"{assignment}, one notebook"
        note = "grading: canary and set-up included" + (", smoke size" if smoke else "")
        results += [
            Result("grading", f"wall s per submission, {what}", ours / size, peer / size,
                   "jupyter nbconvert --execute", "s", higher_is_better=False, note=note),
            Result("grading", f"CPU s per submission, {what}", ours_cpu / size, peer_cpu / size,
                   "jupyter nbconvert --execute", "s", higher_is_better=False, note=note),
        ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="submissions in the batch")
    parser.add_argument("--assignment", default="01_tokens")
    parser.add_argument("--times", action="store_true", help="print where grading's time goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.jsonl" if args.times else None
        print(table(run(assignment=args.assignment, n=args.n, times=times)))
        if times:
            per_student, batch = breakdown(times)
            print("\nwall seconds per student (mean), from the previous stage to each:")
            for stage, seconds in per_student.items():
                print(f"  {seconds:6.2f}  {stage}")
            print("wall seconds of the batch, from the previous stage to each:")
            for stage, seconds in batch.items():
                print(f"  {seconds:6.2f}  {stage}")


if __name__ == "__main__":
    main()
