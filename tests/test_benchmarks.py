"""Every benchmark runs (on a tiny size), so none rots between two `make bench`.

The numbers of a smoke run mean nothing; these tests check that each benchmark returns rows of the shared
table (benchmarks/common.py) with finite numbers, and that `make bench`'s runner writes the table.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402  (benchmarks/run_all.py)


@pytest.mark.parametrize("name", run_all.BENCHMARKS)
def test_benchmark_runs_on_a_tiny_size(name):
    rows, _ = run_all.run_one(name, smoke=True)
    assert rows, f"benchmarks/{name}.py returned no rows"
    for row in rows:
        assert row.area and row.measure, row
        assert math.isfinite(row.ours), f"{name}: {row.measure} is {row.ours}"
        if row.peer is not None:
            assert math.isfinite(row.peer) and row.peer_name, f"{name}: a peer value needs a name: {row}"


def test_make_bench_writes_one_table_and_keeps_the_other_rows(tmp_path):
    out = tmp_path / "RESULTS.md"
    store = out.with_suffix(".json")
    store.write_text(json.dumps({"book_build": {
        "rows": [{"area": "book", "measure": "kept from an earlier run", "ours": 1.0}],
        "seconds": 60.0, "load": "0.0 0.0 0.0", "date": "2026-01-01 00:00", "commit": "abc"}}))
    subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--smoke", "--only", "scaling_sweep",
                    "--out", str(out)], check=True, capture_output=True)
    text = out.read_text()
    assert "SMOKE RUN" in text and "cores" in text
    assert "kept from an earlier run" in text, "--only must keep the rows of the benchmarks it did not run"
    assert "alpha_N" in text and "| scaling_sweep |" in text
