"""The scaling sweep of chapter 07_scaling from the command line: character-level GPTs of several sizes trained with
chapter 06's recipe for the same number of characters, and one size trained on several budgets; a table of
validation losses, then the fitted exponents beside Kaplan et al.'s (2020).

    .venv/bin/python benchmarks/scaling_sweep.py             # the book's sweep (about 2-3 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/scaling_sweep.py --cached    # the same, read from the book's cache if it is there
    .venv/bin/python benchmarks/scaling_sweep.py --full      # 9 sizes (36x to 1,000x), 8x more characters each,
                                                             # and an isoFLOP study on budgets 1,000x larger
    .venv/bin/python benchmarks/scaling_sweep.py --isoflop   # the book's isoFLOP study, read from the package

It runs on the GPU when torch.cuda.is_available() (or `--device cpu|cuda`). `--full` on a 2-core CPU takes hours:
it is meant for a GPU. Not part of the tests.

Measured 2026-11-25 on the shared 2-core CPU machine (torch 2.13.0+cpu, one thread): the book's sweep took 141 s
of wall time with a load average of about 3, and 82 s of CPU time (models 52 s, data 30 s) but 444 s of wall time
with a load average of 12. Exponents: alpha_N 0.046, alpha_D 0.104, compute frontier 0.047 (Kaplan et al. 2020:
0.076, 0.095, 0.050); the fit with an irreducible term finds no floor (E < 0). `--full` was not run (no GPU was
available to this session).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from llmcourse import data, scaling, sweep, train

import common  # benchmarks/common.py: scripts here run with benchmarks/ on sys.path
from common import Result

SMOKE = dict(sizes=((1, 8), (1, 16)), iters=4, data_size=(1, 8), data_steps=(2, 4), n_evals=2, eval_iters=2,
             warmup=1)
FULL = dict(sizes=((2, 16), (2, 24), (2, 32), (2, 48), (2, 64), (2, 96), (4, 128), (4, 192), (6, 256)),
            iters=4800, data_size=(4, 128), data_steps=(300, 600, 1200, 2400, 4800, 9600))


# The isoFLOP study of chapter 07 moved up 330x to 10,000x in compute (the book's runs 3e10 to 1e11 FLOPs): the
# compute-optimal size grows about as sqrt(C), so the widths move up with the budget. Hours on a GPU.
FULL_ISOFLOP = dict(grid=((1e13, (32, 48, 64, 96, 128)), (3e13, (48, 64, 96, 128, 192)),
                          (1e14, (64, 96, 128, 192, 256)), (3e14, (96, 128, 192, 256, 384))))


def isoflop_table(result: dict) -> dict:
    """Each budget's runs, the bottom of its parabola in log N, and the exponents of N* and D* against C."""
    budgets = sorted({r["budget"] for r in result["runs"]})
    optima = []
    for c in budgets:
        rows = [r for r in result["runs"] if r["budget"] == c]
        for r in rows:
            print(f"C {c:8.0e}  d_model {r['d_model']:>4}  N {r['non_embedding']:>10,}  steps {r['iters']:>8,}"
                  f"  val loss {r['val_loss']:.3f}  {r['seconds']:8.1f} s")
        n_opt, loss_opt, _ = scaling.isoflop_minimum([r["non_embedding"] for r in rows],
                                                     [r["val_loss"] for r in rows])
        optima.append(n_opt)
        print(f"C {c:8.0e}  bottom of the parabola: N* = {n_opt:,.0f}, loss {loss_opt:.3f}")
    a = float(np.polyfit(np.log(budgets), np.log(optima), 1)[0])
    print(f"N* ~ C^{a:.2f}, D* ~ C^{1 - a:.2f}; Hoffmann et al. 2022 (approach 2): "
          f"{scaling.HOFFMANN_ISOFLOP['a']}, {scaling.HOFFMANN_ISOFLOP['b']}")
    return {"a": a, "b": 1 - a}


def table(result: dict) -> None:
    print(f"{'sweep':7}{'layers':>7}{'d_model':>8}{'N (non-emb.)':>14}{'chars D':>11}{'6ND FLOPs':>11}"
          f"{'val loss':>10}{'seconds':>9}")
    for kind in ("models", "data"):
        for r in result[kind]:
            flops = float(scaling.training_flops(r["non_embedding"], r["tokens"]))
            print(f"{kind:7}{r['n_layers']:>7}{r['d_model']:>8}{r['non_embedding']:>14,}{r['tokens']:>11,}"
                  f"{flops:>11.2e}{r['val_loss']:>10.3f}{r['seconds']:>9.1f}")
    n = [r["non_embedding"] for r in result["models"]]
    d = [r["tokens"] for r in result["data"]]
    for name, x, rows, kaplan in (("N", n, result["models"], scaling.KAPLAN["alpha_N"]),
                                  ("D", d, result["data"], scaling.KAPLAN["alpha_D"])):
        loss = [r["val_loss"] for r in rows]
        _, alpha = scaling.fit_power_law(x, loss)
        E, _, alpha_sat = scaling.fit_saturating(x, loss)
        floor = (f"E = {E:.2f}, exponent {alpha_sat:.3f}" if E > 0 else
                 f"no floor (E = {E:.1f} < 0: the points do not bend towards one)")
        print(f"L({name}): power-law exponent {alpha:.3f}; with an irreducible term: {floor}; "
              f"Kaplan et al. 2020: {kaplan} (nats per BPE token of WebText2)")


def exponents(result: dict) -> dict:
    """The fitted power-law exponents of L(N) and L(D)."""
    n = [r["non_embedding"] for r in result["models"]]
    d = [r["tokens"] for r in result["data"]]
    return {"alpha_N": scaling.fit_power_law(n, [r["val_loss"] for r in result["models"]])[1],
            "alpha_D": scaling.fit_power_law(d, [r["val_loss"] for r in result["data"]])[1]}


def sweep_result(smoke: bool, full: bool, cached: bool, device: str) -> dict:
    if smoke:
        return sweep.run_sweep(progress=False, device=device, **SMOKE)
    if cached and device == "cpu" and not full:            # the book's two cached calls
        result = {part: data.cached(sweep.run_sweep, code=train.code_version(), progress=True, part=part)
                  for part in ("models", "data")}
        return {**result["models"], "data": result["data"]["data"]}
    return sweep.run_sweep(progress=True, device=device, **(FULL if full else {}))


def run(smoke: bool = False, full: bool = False, cached: bool = False,
        device: str = "cuda" if torch.cuda.is_available() else "cpu") -> list[Result]:
    """The sweep's cost and its fitted exponents beside Kaplan et al.'s (2020)."""
    started = time.perf_counter()
    result = sweep_result(smoke, full, cached, device)
    seconds = time.perf_counter() - started
    fitted = exponents(result)
    runs = len(result["models"]) + len(result["data"])
    which = "a smoke sweep" if smoke else "the --full sweep" if full else "the book's sweep"
    where = f"{which}, {runs} runs, {result['device']}"
    area = "scaling" if result["device"] == "cpu" else "scaling (GPU)"
    return [Result(area, f"wall time of {where}", seconds, unit="s", higher_is_better=False,
                   note="read from the cache" if cached and not full and not smoke else ""),
            Result(area, f"L(N) exponent alpha_N ({where})", fitted["alpha_N"], scaling.KAPLAN["alpha_N"],
                   "Kaplan et al. 2020 (WebText2, BPE)", ""),
            Result(area, f"L(D) exponent alpha_D ({where})", fitted["alpha_D"], scaling.KAPLAN["alpha_D"],
                   "Kaplan et al. 2020 (WebText2, BPE)", "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="more sizes and 8x more characters per run")
    parser.add_argument("--cached", action="store_true", help="read (or write) the book's cache")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="two tiny models: checks that the benchmark runs")
    parser.add_argument("--isoflop", action="store_true", help="only the book's isoFLOP study, as shipped")
    args = parser.parse_args()
    if args.isoflop:
        isoflop_table(data.shipped_result(sweep.run_isoflop)["result"])
        return
    started = time.perf_counter()
    result = sweep_result(args.smoke, args.full, args.cached, args.device)
    print(f"device {result['device']}, {torch.__version__}; wall time {time.perf_counter() - started:.0f} s")
    table(result)
    if args.full:
        started = time.perf_counter()
        iso = sweep.run_isoflop(progress=True, device=args.device, cache=False, **FULL_ISOFLOP)
        print(f"isoFLOP study, device {iso['device']}: wall time {time.perf_counter() - started:.0f} s")
        isoflop_table(iso)


if __name__ == "__main__":
    main()
