"""The graded checks of 07_scaling: mistakes beyond the planted ones, correct alternatives (float32, numpy or
torch, np.polyfit, an iterative optimiser), wrong types and lengths.

What every check must do (pass the solution, refuse the reference, name the planted mistakes) is tested for all
exercises in test_checks_all.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmcourse import checks


def polyfit_power_law(x, loss):                   # numpy, np.polyfit
    slope, intercept = np.polyfit(np.log(np.asarray(x)), np.log(np.asarray(loss)), 1)
    return math.exp(intercept), -slope


def test_correct_alternatives_keep_full_marks(capsys):
    checks.check_fit_power_law(polyfit_power_law)

    def torch_float32(x, loss):                   # torch in float32, returns 0-d tensors
        lx, ly = torch.log(x.float()), torch.log(loss.float())
        slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
        return torch.exp(ly.mean() - slope * lx.mean()), -slope

    def log10_consistent(x, loss):                # base-10 logs, undone with 10**
        slope, intercept = np.polyfit(np.log10(np.asarray(x)), np.log10(np.asarray(loss)), 1)
        return 10 ** intercept, -slope

    def lstsq_tensor(x, loss):                    # torch.linalg.lstsq, one tensor (A, alpha)
        design = torch.stack([torch.ones_like(x), torch.log(x)], 1)
        coef = torch.linalg.lstsq(design, torch.log(loss)[:, None]).solution[:, 0]
        return torch.stack([coef[0].exp(), -coef[1]])
    for fn in (torch_float32, log10_consistent, lstsq_tensor):
        checks.check_fit_power_law(fn)

    checks.check_training_flops(lambda n, d: 6 * n * d)
    checks.check_training_flops(lambda n, d: np.multiply(np.multiply(6.0, n), d))

    def saturating_lbfgs(x, loss):                # all three parameters at once, by torch's L-BFGS
        lx, y = torch.log(x), loss.double()
        e = torch.tensor(float(y.min()) * 0.5, dtype=torch.float64, requires_grad=True)
        log_a = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
        alpha = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([e, log_a, alpha], max_iter=2000, tolerance_grad=1e-14, tolerance_change=1e-16,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            err = ((e + torch.exp(log_a - alpha * lx) - y) ** 2).sum()
            err.backward()
            return err
        for _ in range(5):
            opt.step(closure)
        return e.item(), log_a.exp().item(), alpha.item()
    checks.check_fit_saturating(saturating_lbfgs)

    def optimal_numeric(C, A, B, alpha, beta):    # a numeric minimisation, refined: a correct alternative
        lo, hi = math.log(C / 6) - 60, math.log(C / 6) + 0.0
        f = lambda ln_n: A * math.exp(-alpha * ln_n) + B * (C / 6 / math.exp(ln_n)) ** -beta  # noqa: E731
        for _ in range(200):
            m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
            lo, hi = (lo, m2) if f(m1) < f(m2) else (m1, hi)
        n = math.exp((lo + hi) / 2)
        return n, C / (6 * n)
    checks.check_compute_optimal(optimal_numeric)
    assert capsys.readouterr().out.count("✓") == 8


def test_other_mistakes_are_named():
    with pytest.raises(AssertionError, match="natural and base-10 logs mixed"):
        checks.check_fit_power_law(lambda x, L: (1.0, -np.polyfit(np.log10(np.asarray(x)), np.log(np.asarray(L)), 1)[0]))
    with pytest.raises(AssertionError, match="natural and base-10 logs mixed"):
        checks.check_fit_power_law(lambda x, L: (10 ** math.log(polyfit_power_law(x, L)[0]), polyfit_power_law(x, L)[1]))
    with pytest.raises(AssertionError, match="x and the losses swapped"):
        checks.check_fit_power_law(lambda x, L: (1.0, -np.polyfit(np.log(np.asarray(L)), np.log(np.asarray(x)), 1)[0]))

    def linear_space_least_squares(x, loss):      # minimises sum (L - A x^-alpha)^2: the wrong objective
        x, y = np.asarray(x), np.asarray(loss)
        A, alpha = polyfit_power_law(x, y)
        for _ in range(200):                      # Gauss-Newton on the raw losses
            f = A * x ** -alpha
            J = np.stack([x ** -alpha, -A * np.log(x) * x ** -alpha], 1)
            step = np.linalg.lstsq(J, y - f, rcond=None)[0]
            A, alpha = A + step[0], alpha + step[1]
        return A, alpha
    with pytest.raises(AssertionError, match="fitting in linear space: you minimised"):
        checks.check_fit_power_law(linear_space_least_squares)

    with pytest.raises(AssertionError, match="backward pass alone"):
        checks.check_training_flops(lambda n, d: 4 * n * d)
    with pytest.raises(AssertionError, match="N x D counts each parameter once"):
        checks.check_training_flops(lambda n, d: n * d)

    def optimal(C, A, B, alpha, beta, per=6, swap=False, invert=False):
        g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
        g = 1 / g if invert else g
        a, b = beta / (alpha + beta), alpha / (alpha + beta)
        a, b = (b, a) if swap else (a, b)
        return g * (C / per) ** a, (C / per) ** b / g
    with pytest.raises(AssertionError, match="factor 6 is missing"):
        checks.check_compute_optimal(lambda *a: optimal(*a, per=1))
    with pytest.raises(AssertionError, match="exponents are swapped"):
        checks.check_compute_optimal(lambda *a: optimal(*a, swap=True))
    with pytest.raises(AssertionError, match="G is upside down"):
        checks.check_compute_optimal(lambda *a: optimal(*a, invert=True))
    with pytest.raises(AssertionError, match="not the budget"):
        checks.check_compute_optimal(lambda C, *a: (optimal(C, *a)[0], optimal(C, *a)[1] * 2))

    with pytest.raises(AssertionError, match="exponent sign"):
        checks.check_fit_saturating(lambda x, L: (0.8, 5.0, -0.15))
    with pytest.raises(AssertionError, match="squared error"):
        checks.check_fit_saturating(lambda x, L: (0.7, 5.0, 0.15))


def test_wrong_lengths_types_and_nan_are_named():
    with pytest.raises(AssertionError, match="irreducible term E is missing"):
        checks.check_fit_saturating(polyfit_power_law)
    with pytest.raises(AssertionError, match="should return 2 numbers"):
        checks.check_fit_power_law(lambda x, L: 0.3)
    with pytest.raises(AssertionError, match="keep E below every loss"):
        checks.check_fit_saturating(lambda x, L: (float(L.min()), float("nan"), float("nan")))
    with pytest.raises(AssertionError, match="torch tensor of numbers"):
        checks.check_training_flops(lambda n, d: "6ND")
    with pytest.raises(AssertionError, match="one number per model"):
        checks.check_training_flops(lambda n, d: np.atleast_1d(6 * np.asarray(n) * np.asarray(d)))


def test_an_exponent_search_that_stops_at_1_is_named():
    """The task allows 0 < alpha <= 3 and a visible law has alpha = 1.2 (issue 29: every range the task allows)."""
    def up_to_one(x, L):
        x, L = np.asarray(x), np.asarray(L)
        def fit(alpha):
            cols = np.stack([np.ones_like(x), x ** -alpha], 1)
            (e, a), *_ = np.linalg.lstsq(cols, L, rcond=None)
            return float(((cols @ [e, a] - L) ** 2).sum()), float(e), float(a)
        grid = np.geomspace(0.005, 1.0, 200)
        i = int(np.argmin([fit(a)[0] for a in grid]))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        for _ in range(80):                                           # golden-section search, as the hint says
            a1, a2 = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
            lo, hi = (lo, a2) if fit(a1)[0] < fit(a2)[0] else (a1, hi)
        return (*fit((lo + hi) / 2)[1:], (lo + hi) / 2)
    with pytest.raises(AssertionError, match="your search stops at 1"):
        checks.check_fit_saturating(up_to_one)
