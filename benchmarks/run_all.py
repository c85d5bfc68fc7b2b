"""`make bench`: every benchmark in this folder, one after the other, into one table (benchmarks/RESULTS.md).

Each benchmark runs in a process of its own (torch's thread settings and caches do not leak from one to the
next) and returns its rows (`common.Result`); the table states the machine, the commit and the time taken.

    .venv/bin/python benchmarks/run_all.py                  # everything (about an hour on 2 cores)
    .venv/bin/python benchmarks/run_all.py --only word2vec  # one benchmark (the file's name)
    .venv/bin/python benchmarks/run_all.py --smoke --out /tmp/r.md   # tiny sizes: checks that each runs
    .venv/bin/python benchmarks/run_all.py --render         # rewrite RESULTS.md from RESULTS.json and notes.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import common
from common import Result

HERE = Path(__file__).resolve().parent
NOTES = HERE / "notes.md"
BENCHMARKS = ["word2vec", "grading", "cluster_grading", "train_char", "kv_cache", "scaling_sweep", "book_build",
              "make_cold"]


def run_one(name: str, smoke: bool) -> tuple[list[Result], float]:
    """The rows of benchmarks/<name>.py's `run(smoke)`, computed in a fresh process."""
    code = (f"import json, sys, dataclasses; sys.path.insert(0, {str(HERE)!r}); import {name}; "
            f"rows = {name}.run(smoke={smoke}); "
            f"print('\\nROWS ' + json.dumps([dataclasses.asdict(r) for r in rows]))")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("ROWS ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"benchmarks/{name}.py failed (exit {proc.returncode}); its output ends with:\n"
                           f"{proc.stdout[-2000:]}")
    return [Result(**r) for r in json.loads(line[5:])], seconds


def commit() -> str:
    proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def render(runs: dict, smoke: bool) -> str:
    """RESULTS.md: the machine, then one table of every benchmark's rows, then when and how each ran."""
    rows = [Result(**r) for name in BENCHMARKS if name in runs for r in runs[name]["rows"]]
    lines = [f"# Benchmark results{' (SMOKE RUN: tiny sizes, the numbers mean nothing)' if smoke else ''}", "",
             f"Written by `make bench` (benchmarks/run_all.py); this run on: {common.machine()}. Each "
             "benchmark's machine is in the table at the end (rows kept from earlier runs keep theirs).",
             "Each ratio compares two things measured in the same run of a benchmark on the same machine. "
             "Wall-clock times on a shared machine are stretched by other work (the load average is given "
             "below); rows that need it also give processor time.", "",
             common.table(rows), "", "| benchmark | date | commit | minutes | load average before | machine |",
             "|---|---|---|---:|---|---|"]
    for name in BENCHMARKS:
        if name in runs:
            r = runs[name]
            lines.append(f"| {name} | {r['date']} | {r['commit']} | {r['seconds'] / 60:.1f} | {r['load']} | "
                         f"{r.get('machine', '2 cores (AMD EPYC)')} |")  # runs kept from before had no column
    if NOTES.exists():  # measured analyses written by hand (profiles), kept across runs
        lines += ["", NOTES.read_text().strip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=BENCHMARKS,
                        help="run only these (repeatable); the other rows are kept from the last run")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; the numbers mean nothing")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md",
                        help="the table; its rows are also kept beside it, in the same name with .json")
    parser.add_argument("--render", action="store_true", help="run nothing: rewrite the table from the rows kept")
    args = parser.parse_args()
    store = args.out.with_suffix(".json")
    if args.render:
        args.out.write_text(render(json.loads(store.read_text()), args.smoke))
        print(f"wrote {args.out}")
        return
    runs = json.loads(store.read_text()) if args.only and store.exists() else {}
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"== benchmarks/{name}.py{' (smoke)' if args.smoke else ''}", flush=True)
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        try:
            results, seconds = run_one(name, args.smoke)
        except RuntimeError as err:
            print(err, file=sys.stderr)
            failed.append(name)
            continue
        print(common.table(results), flush=True)
        runs[name] = {"rows": [asdict(r) for r in results], "seconds": seconds, "load": load,
                      "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "commit": commit(),
                      "machine": common.machine().split(", ")[0]}
        store.write_text(json.dumps(runs, indent=1) + "\n")
        args.out.write_text(render(runs, args.smoke))
    print(f"wrote {args.out}")
    if failed:
        sys.exit(f"FAILED: {', '.join(failed)} (see above)")


if __name__ == "__main__":
    main()
