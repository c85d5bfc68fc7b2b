"""What every benchmark returns, and the one table `make bench` writes (benchmarks/RESULTS.md).

Each benchmark module in this folder has `run(smoke: bool = False) -> list[Result]`: a row per measure,
ours beside the peer measured in the same run (where a peer exists), and a `main()` that prints its rows
as a table. `smoke=True` runs the same code on a tiny size (seconds), so that `tests/test_benchmarks.py`
keeps every benchmark from rotting; smoke numbers mean nothing.
"""
from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass

import torch


@dataclass
class Result:
    area: str                   # "word2vec", "grading", "training", ...
    measure: str                # what was measured, with its settings: "words/s, 1.93M-word corpus, 2 threads"
    ours: float
    peer: float | None = None   # the same measure for the peer, from the same run
    peer_name: str = ""         # "gensim 4.4.0", "jupyter nbconvert --execute", ...
    unit: str = ""              # "words/s", "s", "ms/iter", "%"
    higher_is_better: bool = True
    note: str = ""              # what the reader must know to read the row (a GPU, a cached run, a target)

    @property
    def ratio(self) -> float | None:
        """ours / peer: above 1 means ours is larger (faster when higher_is_better)."""
        if self.peer in (None, 0) or self.ours is None:
            return None
        return self.ours / self.peer


def _number(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.3g}"


def table(results: list[Result]) -> str:
    """A Markdown table of the results, one row each."""
    lines = ["| area | measure | ours | peer | peer is | ours / peer | unit | note |",
             "|---|---|---:|---:|---|---:|---|---|"]
    for r in results:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"| {r.area} | {r.measure} | {_number(r.ours)} | {_number(r.peer)} | {r.peer_name} | "
                     f"{ratio} | {r.unit}{'' if r.higher_is_better else ' (lower is better)'} | {r.note} |")
    return "\n".join(lines)


def machine() -> str:
    """One line that says what the numbers were measured on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")
