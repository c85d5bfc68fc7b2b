"""llmcourse.scaling: the fits recover known exponents, 6ND, the published laws, and the closed-form
compute-optimal allocation agrees with a numeric minimisation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmcourse import scaling


def noisy_power_law(A=40.0, alpha=0.3, noise=0.02, seed=0, n=12):
    rng = np.random.default_rng(seed)
    x = np.geomspace(1e3, 1e9, n)
    return x, A * x ** -alpha * np.exp(noise * rng.standard_normal(n))


@pytest.mark.parametrize("A,alpha", [(40.0, 0.3), (2.5, 0.05), (1e3, 1.2)])
def test_power_law_fit_recovers_a_known_exponent(A, alpha):
    x = np.geomspace(10, 1e8, 9)
    got_A, got_alpha = scaling.fit_power_law(x, A * x ** -alpha)
    assert got_alpha == pytest.approx(alpha, rel=1e-10) and got_A == pytest.approx(A, rel=1e-9)


def test_power_law_fit_is_least_squares_in_log_log_space_and_takes_tensors():
    x, loss = noisy_power_law()
    slope, intercept = np.polyfit(np.log(x), np.log(loss), 1)
    A, alpha = scaling.fit_power_law(torch.tensor(x), torch.tensor(loss, dtype=torch.float32))
    assert alpha == pytest.approx(-slope, rel=1e-5) and A == pytest.approx(math.exp(intercept), rel=1e-5)
    assert abs(alpha - 0.3) < 0.02                                  # noise moves it a little


def test_kaplan_constants_give_back_their_exponents():
    n = np.geomspace(1e6, 1e11, 8)
    A, alpha = scaling.fit_power_law(n, scaling.kaplan_loss_n(n))
    assert alpha == pytest.approx(0.076) and A == pytest.approx(8.8e13 ** 0.076)
    d = np.geomspace(1e8, 1e12, 8)
    assert scaling.fit_power_law(d, scaling.kaplan_loss_d(d))[1] == pytest.approx(0.095)
    assert float(scaling.kaplan_loss_n(8.8e13)) == pytest.approx(1.0)


@pytest.mark.parametrize("E,A,alpha", [(1.69, 406.4, 0.34), (0.8, 5.0, 0.15), (2.0, 30.0, 0.6)])
def test_saturating_fit_recovers_known_parameters(E, A, alpha):
    x = np.geomspace(1e3, 1e10, 12)
    got = scaling.fit_saturating(x, E + A * x ** -alpha)
    assert got == pytest.approx((E, A, alpha), rel=1e-4)


def test_saturating_fit_is_the_least_squares_optimum_on_noisy_data():
    rng = np.random.default_rng(3)
    x = np.geomspace(1e4, 1e9, 15)
    loss = 1.5 + 20 * x ** -0.3 + 0.005 * rng.standard_normal(15)
    E, A, alpha = scaling.fit_saturating(x, loss)
    sse = ((E + A * x ** -alpha - loss) ** 2).sum()
    for dE, dA, da in [(1e-3, 0, 0), (0, 0.05, 0), (0, 0, 1e-3), (-1e-3, 0, 0), (0, -0.05, 0), (0, 0, -1e-3)]:
        assert sse <= (((E + dE) + (A + dA) * x ** -(alpha + da) - loss) ** 2).sum()
    assert abs(alpha - 0.3) < 0.1


def test_training_flops_is_6nd():
    assert scaling.training_flops(174.6e9, 300e9) == pytest.approx(3.14e23, rel=1e-3)   # Brown et al. 2020
    assert np.allclose(scaling.training_flops(np.array([1e6, 2e6]), 1e9), [6e15, 1.2e16])


def test_chinchilla_loss_uses_the_published_constants():
    assert float(scaling.chinchilla_loss(1e40, 1e40)) == pytest.approx(1.69, abs=1e-6)
    assert float(scaling.chinchilla_loss(70e9, 1.4e12)) == pytest.approx(
        1.69 + 406.4 / 70e9 ** 0.34 + 410.7 / 1.4e12 ** 0.28)


@pytest.mark.parametrize("C", [1e18, 3.14e23, 1e26])
def test_closed_form_agrees_with_a_numeric_minimisation(C):
    n_opt, d_opt = scaling.compute_optimal(C)
    assert 6 * n_opt * d_opt == pytest.approx(C)
    n = np.geomspace(n_opt / 100, n_opt * 100, 200001)              # every N on the budget line, D = C / 6N
    best = n[np.argmin(scaling.chinchilla_loss(n, C / (6 * n)))]
    assert best == pytest.approx(n_opt, rel=1e-3)


def test_gpt3_budget_gives_the_published_order_of_magnitude():
    """At GPT-3's 3.14e23 FLOPs the parametric law wants tens of billions of parameters (not 175 B) and
    trillions of tokens (not 300 B)."""
    n_opt, d_opt = scaling.compute_optimal(3.14e23)
    assert 1e10 < n_opt < 1e11 and 1e12 < d_opt < 1e13
    n, d = scaling.compute_optimal(np.array([1e20, 1e24]))
    assert n.shape == (2,) and np.all(np.diff(n) > 0) and np.all(np.diff(d) > 0)


def test_sweep_runs_a_tiny_configuration():
    """The sweep's code path in seconds: two tiny sizes and two budgets of a few steps."""
    from llmcourse import sweep

    out = sweep.run_sweep(progress=False, sizes=((1, 16), (1, 32)), iters=6, data_size=(1, 16), data_steps=(3, 6),
                          n_evals=2, eval_iters=2)
    assert [r["d_model"] for r in out["models"]] == [16, 32] and [r["iters"] for r in out["data"]] == [3, 6]
    small, big = out["models"]
    assert big["non_embedding"] > small["non_embedding"] and small["tokens"] == 6 * 12 * 64
    assert [e[0] for e in small["evals"]] == [0, 3, 6] and all(math.isfinite(e[2]) for e in small["evals"])
    # the data run of 6 steps at width 16 is the model run of width 16: evaluating more often changes nothing
    assert out["data"][1]["val_loss"] == pytest.approx(small["val_loss"], abs=1e-6)


def test_non_embedding_params_leave_out_the_embeddings_and_count_tied_weights_once():
    from llmcourse import sweep, train

    model = train.build_model(83, train.TrainConfig(n_layers=2, n_heads=2, d_model=32))
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert sweep.non_embedding_params(model) == total - model.tok.weight.numel() - model.pos.weight.numel()
    assert abs(sweep.non_embedding_params(model) - 12 * 2 * 32 ** 2) < 0.1 * 12 * 2 * 32 ** 2   # Kaplan's 12 L d^2


# --- the isoFLOP study (chapter 07): the parabola, the step count, the result shipped in llmcourse/toys/ ------

def test_isoflop_minimum_finds_the_bottom_of_a_parabola_in_log_n():
    n = np.geomspace(1e4, 1e6, 5)
    loss = 2.0 + 0.3 * (np.log(n) - np.log(7e4)) ** 2
    n_opt, l_opt, coef = scaling.isoflop_minimum(n, loss)
    assert n_opt == pytest.approx(7e4, rel=1e-8) and l_opt == pytest.approx(2.0, abs=1e-9)
    assert coef[0] == pytest.approx(0.3)
    n_none, l_none, _ = scaling.isoflop_minimum(n, 3.0 - 0.1 * np.log(n) ** 2)   # opens downwards: no bottom
    assert math.isnan(n_none) and math.isnan(l_none)


def test_besiroglu_refit_gives_exponents_near_one_half():
    b = scaling.BESIROGLU
    a = b["beta"] / (b["alpha"] + b["beta"])
    assert 0.5 < a < 0.52 and scaling.HOFFMANN_ISOFLOP["a"] + scaling.HOFFMANN_ISOFLOP["b"] == pytest.approx(1)


def test_isoflop_jobs_spend_each_budget():
    from llmcourse import sweep, train

    cfg = sweep.IsoFlopConfig()
    jobs = sweep.isoflop_jobs(cfg, vocab=83)
    assert len(jobs) == sum(len(widths) for _, widths in cfg.grid)
    for budget, run in jobs:
        n = sweep.non_embedding_params(train.build_model(83, run))
        spent = 6 * n * run.iters * cfg.batch * cfg.block
        assert spent == pytest.approx(budget, rel=0.01), (budget, run.d_model, run.iters)
        assert run.eval_interval == run.iters and run.warmup <= max(1, run.iters // 10)


def test_shipped_isoflop_result_is_fresh_and_reproduced():
    """The study ships as llmcourse/toys/sweep.run_isoflop.json, keyed like the cache by llmcourse.sweep's source
    and the config; rerunning its cheapest run here (seeded, one thread) gives the same loss."""
    from llmcourse import data, sweep

    fix = "rerun it with `PYTHONPATH=src python -m llmcourse.sweep` (about 15 CPU-minutes) and commit the file"
    shipped = data.shipped_result(sweep.run_isoflop)
    config = shipped["config"]
    assert shipped["key"] == data.cache_key(sweep.run_isoflop, config), f"the isoFLOP result is stale: {fix}"
    runs = shipped["result"]["runs"]
    assert len(runs) == len(sweep.isoflop_jobs(sweep.IsoFlopConfig(**config), vocab=83)) >= 15
    cheapest = min(range(len(runs)), key=lambda i: runs[i]["iters"] * runs[i]["non_embedding"] ** 0.5)
    again = sweep.run_isoflop(progress=False, only=cheapest, cache=False, **config)["runs"][0]
    for field in ("budget", "d_model", "iters", "non_embedding", "tokens"):
        assert again[field] == runs[cheapest][field], field
    assert again["val_loss"] == pytest.approx(runs[cheapest]["val_loss"], abs=1e-6), f"{fix}"
