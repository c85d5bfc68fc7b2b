"""Grading throughput on a local Dask cluster (`llmcourse grade --scheduler`) with 1 and 2 workers, beside a local
run with 1 and 2 jobs, on the same notebooks (llmcourse.grading.batch.cluster).

Starts `dask scheduler` and `dask worker` processes on the loopback interface (one thread each: one notebook at a
time), grades N copies of 01_tokens' solution and planted mistakes with an empty cache, and prints notebooks per
minute for the whole batch, each worker's canary included. Stops every process it started.

    .venv/bin/python benchmarks/cluster_grading.py --notebooks 8     # about 6 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --only cluster_grading    # the same, as rows of RESULTS.md
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from llmcourse import grading

from common import Result  # benchmarks/common.py: scripts here run with benchmarks/ on sys.path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from planted.p01_tokens import PLANTED  # noqa: E402

ASSIGNMENT = "01_tokens"


def submissions(folder: Path, n: int) -> Path:
    """n notebooks: the solution, then planted mistakes in turn."""
    solution = nbformat.read(next((REPO / "solutions" / ASSIGNMENT).glob("*.ipynb")), as_version=4)
    mistakes = list(PLANTED.values())
    for i in range(n):
        nb = nbformat.from_dict(solution) if i == 0 else _planted(solution, mistakes[(i - 1) % len(mistakes)])
        (folder / f"s{i:03}").mkdir(parents=True)
        nbformat.write(nb, folder / f"s{i:03}" / "work.ipynb")
    return folder


def _planted(solution, mistake: dict):
    nb = nbformat.from_dict(solution)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == mistake["cell"])
    cell.source = mistake["source"].strip("\n")
    return nb


def on_cluster(subs: Path, out: Path, workers: int) -> float:
    """Seconds to grade `subs` on a fresh local cluster of `workers` one-thread workers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dask, env = str(Path(sys.executable).with_name("dask")), {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        address = f"tcp://127.0.0.1:{port}"
        procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                    "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True) for _ in range(workers)]
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
            started = time.monotonic()
            rows = grading.grade(subs, ASSIGNMENT, out=out, scheduler=client, progress=False)
            seconds = time.monotonic() - started
        assert all(r.clean for r in rows), [r.status for r in rows if not r.clean]
        return seconds
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()


def here(subs: Path, out: Path, jobs: int) -> float:
    started = time.monotonic()
    rows = grading.grade(subs, ASSIGNMENT, out=out, jobs=jobs, progress=False)
    assert all(r.clean for r in rows), [r.status for r in rows if not r.clean]
    return time.monotonic() - started


RUNS = [("local, --jobs 2", here, 2), ("local, --jobs 1", here, 1),
        ("Dask, 1 worker", on_cluster, 1), ("Dask, 2 workers", on_cluster, 2)]


def measure(n: int, runs=RUNS) -> list[tuple[str, float, bool]]:
    """(run, seconds, CSV identical to the first run's) for each run, on the same n notebooks."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        subs = submissions(Path(tmp) / "submissions", n)
        first = None
        for i, (name, how, k) in enumerate(runs):
            csv = Path(tmp) / f"run{i}" / "grades.csv"  # a fresh cache beside each CSV: every notebook is graded
            seconds = how(subs, csv, k)
            first = first or csv.read_bytes()
            out.append((name, seconds, csv.read_bytes() == first))
    return out


def run(smoke: bool = False, n: int = 8) -> list[Result]:
    """Notebooks per minute on a local cluster of 1 and 2 workers, beside this machine grading alone (with as many
    jobs): the cost of going through Dask. Smoke: 1 notebook, 1 job and 1 worker."""
    n = 1 if smoke else n
    runs = [RUNS[1], RUNS[2]] if smoke else RUNS
    measured = {name: (seconds, same) for name, seconds, same in measure(n, runs)}
    rows = []
    for k in (1,) if smoke else (1, 2):
        dask_name, local_name = f"Dask, {k} worker{'s' if k > 1 else ''}", f"local, --jobs {k}"
        seconds, same = measured[dask_name]
        rows.append(Result("grading on Dask", f"{n} notebooks of {ASSIGNMENT}, {k} local worker(s), canaries included",
                           60 * n / seconds, 60 * n / measured[local_name][0], f"`llmcourse grade --jobs {k}`",
                           "notebooks/min", note="same CSV as the local run" if same else "THE CSV DIFFERS"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", type=int, default=8)
    args = parser.parse_args()
    print(f"{args.notebooks} notebooks of {ASSIGNMENT}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} before")
    print("| run | seconds | notebooks / minute | CSV as the local 2-job run |")
    print("|---|---:|---:|---|")
    for name, seconds, same in measure(args.notebooks):
        print(f"| {name} | {seconds:.0f} | {60 * args.notebooks / seconds:.1f} | {same} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
