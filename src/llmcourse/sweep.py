"""A scaling sweep on this machine: character-level GPTs of several sizes, and one size on several token budgets,
trained with chapter 06's recipe on Shakespeare's plays, validation loss recorded.

Every run uses `train.build_model`, `train.make_optimizer`, `train.learning_rate` and `train.get_batch` (the pieces
of `train.fit`) with the same hyperparameters; only the width and depth (the model sweep) or the number of steps
(the data sweep) change. The loop is `train.fit`'s without its samples, and it runs on a GPU when one is given.

Explained in chapter 07_scaling; `benchmarks/scaling_sweep.py` runs it from the command line.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from tqdm import tqdm

from llmcourse import train

# The book's sweep: 2-layer models, widths 16 to 96 (36x in non-embedding parameters), 600 steps of
# 12 x 64 characters each (460,800 characters); the data sweep trains the width-48 model for 75 to 1,200 steps.
WIDTHS = (16, 24, 32, 48, 64, 96)
DATA_STEPS = (75, 150, 300, 600, 1200)
DATA_WIDTH = 48


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: the model sizes (n_layers, d_model) trained for `iters` steps, and `data_steps` budgets at
    `data_size`; everything else is the shared recipe (see `recipe`)."""
    sizes: tuple = tuple((2, d) for d in WIDTHS)
    iters: int = 600
    data_size: tuple = (2, DATA_WIDTH)
    data_steps: tuple = DATA_STEPS
    n_evals: int = 6                # validation estimates along each run of the model sweep (for the frontier)
    eval_iters: int = 20
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 30
    block: int = 64
    batch: int = 12
    seed: int = 1337


def recipe(cfg: SweepConfig, n_layers: int, d_model: int, iters: int) -> train.TrainConfig:
    """Chapter 06's TrainConfig for one run of the sweep: one attention head per 16 dimensions of d_model."""
    return train.TrainConfig(n_layers=n_layers, n_heads=max(1, d_model // 16), d_model=d_model, block=cfg.block,
                             batch=cfg.batch, iters=iters, lr=cfg.lr, min_lr=cfg.min_lr,
                             warmup=min(cfg.warmup, iters // 10), eval_interval=max(1, iters // cfg.n_evals),
                             eval_iters=cfg.eval_iters, sample_at=(), seed=cfg.seed)


def non_embedding_params(model: nn.Module) -> int:
    """Parameters outside the token and position embeddings (Kaplan et al. 2020's N): attention, MLPs and
    LayerNorms. The output head shares the token embedding's matrix, so it is not counted; its bias is."""
    seen, n = set(), 0
    for name, p in model.named_parameters():          # tied weights once
        if id(p) in seen or name.startswith(("tok.", "pos.")):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


@torch.no_grad()
def _val_loss(model: nn.Module, ids: torch.Tensor, cfg: train.TrainConfig, device: str) -> float:
    """`train.estimate_loss` on a device: the same cfg.eval_iters batches for every run (seed 2)."""
    gen = torch.Generator().manual_seed(2)
    model.eval()
    total = 0.0
    for _ in range(cfg.eval_iters):
        x, y = train.get_batch(ids, cfg.block, cfg.batch, gen)
        logits = model(x.to(device))
        total += nn.functional.cross_entropy(logits.flatten(0, 1), y.to(device).flatten()).item()
    model.train()
    return total / cfg.eval_iters


def train_run(chars: train.CharData, cfg: train.TrainConfig, device: str = "cpu") -> dict:
    """One run of `train.fit`'s loop (AdamW, warm-up + cosine, clipping), validation loss every
    cfg.eval_interval steps and at the end. Returns {"n_params", "non_embedding", "tokens" (characters trained
    on), "evals": [(step, characters so far, val loss)], "val_loss", "seconds"}."""
    model = train.build_model(len(chars.chars), cfg).to(device)
    opt = train.make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    tokens_per_step = cfg.batch * cfg.block
    evals, start = [], time.perf_counter()
    for it in range(cfg.iters + 1):
        if it % cfg.eval_interval == 0 or it == cfg.iters:
            evals.append((it, it * tokens_per_step, _val_loss(model, chars.val, cfg, device)))
        if it == cfg.iters:
            break
        for group in opt.param_groups:
            group["lr"] = train.learning_rate(it, cfg)
        x, y = train.get_batch(chars.train, cfg.block, cfg.batch, gen)       # (batch, block) each
        logits = model(x.to(device))                                        # (batch, block, V)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return {"n_params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
            "non_embedding": non_embedding_params(model), "tokens": cfg.iters * tokens_per_step,
            "evals": evals, "val_loss": evals[-1][2], "seconds": time.perf_counter() - start}


def run_sweep(code: str = "", progress: bool = True, device: str = "cpu", part: str = "both", **config) -> dict:
    """The sweeps of `SweepConfig(**config)` on the plays, `part` "models", "data" or "both": {"config", "models":
    [run per size], "data": [run per budget]} (a part not run is empty). Call it through
    `data.cached(run_sweep, code=train.code_version(), **config)`: the key holds the config and the code of this
    module and of the trainer. Explained in chapter 07_scaling."""
    cfg = SweepConfig(**config)
    chars = train.char_data(train.shakespeare_plays())
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)          # as in chapter 06: small models, two shared cores
    jobs = [("models", recipe(cfg, n, d, cfg.iters)) for n, d in cfg.sizes] if part in ("models", "both") else []
    if part in ("data", "both"):
        jobs += [("data", replace(recipe(cfg, *cfg.data_size, steps), eval_interval=steps))
                 for steps in cfg.data_steps]
    out = {"config": asdict(cfg), "models": [], "data": [], "device": device}
    for kind, run_cfg in tqdm(jobs, desc=f"scaling sweep ({part})", disable=not progress):
        run = train_run(chars, run_cfg, device)
        out[kind].append({"n_layers": run_cfg.n_layers, "n_heads": run_cfg.n_heads, "d_model": run_cfg.d_model,
                          "iters": run_cfg.iters, **run})
    torch.set_num_threads(threads)
    return out


# --- an isoFLOP study (Hoffmann et al. 2022, approach 2) ------------------------------------------------------

# Three budgets of 6ND FLOPs, 10x apart in all, five 2-layer widths each (N about 24 d_model^2), placed by the runs
# themselves: at these budgets the best models are tiny, so the widths start at 8 (one head of 8 dimensions).
ISOFLOP_GRID = ((1e10, (8, 12, 16, 24, 32)),
                (3e10, (12, 16, 24, 32, 48)),
                (1e11, (16, 24, 32, 48, 64)))


@dataclass(frozen=True)
class IsoFlopConfig:
    """An isoFLOP study: for each (budget, widths) of `grid`, one run per width, each trained for the number of
    steps that makes 6 N D equal the budget (N non-embedding parameters, D characters), with its own warm-up
    and cosine decay ending at its last step; everything else is `SweepConfig`'s recipe."""
    grid: tuple = ISOFLOP_GRID
    n_layers: int = 2
    eval_iters: int = 40
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 30
    block: int = 64
    batch: int = 12
    seed: int = 1337


def isoflop_steps(budget: float, non_embedding: int, chars_per_step: int) -> int:
    """Steps that spend `budget` = 6 N D FLOPs on a model of N non-embedding parameters (at least 1)."""
    return max(1, round(budget / (6 * non_embedding * chars_per_step)))


def isoflop_jobs(cfg: IsoFlopConfig, vocab: int) -> list[tuple[float, train.TrainConfig]]:
    """(budget, the run's TrainConfig) for every point of the grid, smallest budget first; `vocab` characters."""
    recipe_cfg = SweepConfig(lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup, block=cfg.block, batch=cfg.batch,
                             eval_iters=cfg.eval_iters, seed=cfg.seed)
    jobs = []
    for budget, widths in cfg.grid:
        for d in widths:
            probe = recipe(recipe_cfg, cfg.n_layers, d, 1)
            n = non_embedding_params(train.build_model(vocab, probe))
            steps = isoflop_steps(budget, n, cfg.batch * cfg.block)
            jobs.append((budget, replace(recipe(recipe_cfg, cfg.n_layers, d, steps), eval_interval=steps)))
    return jobs


def isoflop_run(budget: float, run: dict, device: str = "cpu") -> dict:
    """One run of the study: `train_run` with TrainConfig(**run) on the plays, as a row of the result."""
    run_cfg = train.TrainConfig(**run)
    out = train_run(_plays(), run_cfg, device)
    return {"budget": budget, "n_layers": run_cfg.n_layers, "d_model": run_cfg.d_model, "iters": run_cfg.iters,
            "non_embedding": out["non_embedding"], "tokens": out["tokens"],
            "flops": 6.0 * out["non_embedding"] * out["tokens"], "val_loss": out["val_loss"],
            "seconds": out["seconds"]}


@functools.lru_cache(maxsize=1)
def _plays() -> train.CharData:
    return train.char_data(train.shakespeare_plays())


def run_isoflop(progress: bool = True, device: str = "cpu", only: int | None = None, cache: bool = True,
                **config) -> dict:
    """The isoFLOP study of `IsoFlopConfig(**config)` on the plays: {"config", "device", "runs": [{"budget",
    "n_layers", "d_model", "iters", "non_embedding", "tokens", "flops" (6 N D as run), "val_loss", "seconds"}]}.
    Each run is cached on its own (`cache`), so an interrupted study resumes; `only`: just that job of the list (a
    test reruns the cheapest one, uncached). Seeded and single-threaded on a CPU: the same config gives the same
    losses. Explained in chapter 07_scaling; `python -m llmcourse.sweep` rewrites the result that ships in
    llmcourse/toys/."""
    from llmcourse import data

    cfg = IsoFlopConfig(**config)
    jobs = isoflop_jobs(cfg, len(_plays().chars))
    if only is not None:
        jobs = [jobs[only]]
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    runs = []
    try:
        for budget, run_cfg in tqdm(jobs, desc="isoFLOP study", disable=not progress):
            args = dict(budget=budget, run=asdict(run_cfg), device=device)
            runs.append(data.cached(isoflop_run, **args) if cache else isoflop_run(**args))
    finally:
        torch.set_num_threads(threads)
    return {"config": asdict(cfg), "device": device, "runs": runs}


if __name__ == "__main__":          # `python -m llmcourse.sweep`: the module's own name, not __main__, keys it
    from llmcourse import data, sweep

    written = data.ship_result(sweep.run_isoflop)
    print(f"wrote {written}")
