"""What a newcomer waits for: `make book` and `make test` in a fresh clone, everything included (the virtual
environment's install, the data, the book's execution, the suite).

Each target runs in its own fresh `git clone` of this repository's HEAD in a temporary folder (committed files
only: commit first), with nothing shared with the checkout: no .venv, no data/, no caches (LLMCOURSE_CACHE is
unset). Debian packages already installed are not installed again. A row gives the wall-clock time, the
load average (1/5/15 min) at start and at end, and the goal of issue 31 (`make book` <= 6 min, `make test`
<= 12 min on 2 cores). Each target's log is kept in _build/make-cold-<target>.log (for `make test`, pytest's
slowest tests). The load says how far the time is from a quiet machine's: rerun there to check a goal.

    .venv/bin/python benchmarks/make_cold.py                  # both (about 20 minutes on 2 quiet cores)
    .venv/bin/python benchmarks/make_cold.py --target test    # one of them
    .venv/bin/python benchmarks/make_cold.py --smoke          # `make -n`: checks that the benchmark runs
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py: scripts here run with benchmarks/ on sys.path
from common import Result

REPO = Path(__file__).resolve().parents[1]
GOAL_MINUTES = {"book": 6, "test": 12}
TARGETS = ("book", "test")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()


def time_target(target: str, smoke: bool) -> dict:
    """`make <target>` (or `make -n <target>` for smoke) in a fresh clone: seconds, load at start and end."""
    with tempfile.TemporaryDirectory(prefix=f"llmcourse-bench-make-{target}-") as tmp:
        clone = Path(tmp) / "course"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("LLMCOURSE_CACHE", "VIRTUAL_ENV", "PYTHONPATH")}
        log = Path(tmp) / "make.log"
        before, started = load(), time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.run(["make"] + (["-n"] if smoke else []) + [target], cwd=clone, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - started
        kept = REPO / "_build" / f"make-cold-{target}.log"  # where the time went (pytest's slowest tests), kept
        kept.parent.mkdir(exist_ok=True)
        kept.write_bytes(log.read_bytes())
        if proc.returncode:
            raise RuntimeError(f"make {target} failed in a fresh clone (exit {proc.returncode}):\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        return {"seconds": seconds, "before": before, "after": load()}


def run(smoke: bool = False, targets: tuple[str, ...] = TARGETS) -> list[Result]:
    rows = []
    for target in targets:
        r = time_target(target, smoke)
        what = f"`make {target}` in a fresh clone{' (smoke: make -n)' if smoke else ''}, install included"
        rows.append(Result("set-up", what, r["seconds"] / 60, unit="min", higher_is_better=False,
                           note=f"goal <= {GOAL_MINUTES[target]} min on 2 cores; load average {r['before']} "
                                f"at start, {r['after']} at end; commit {commit()}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--target", action="append", choices=TARGETS, help="repeatable (default: both)")
    args = parser.parse_args()
    print(common.machine())
    print(common.table(run(args.smoke, tuple(args.target or TARGETS))))


if __name__ == "__main__":
    main()
