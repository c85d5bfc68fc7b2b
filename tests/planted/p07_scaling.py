"""Typical mistakes in exercise 07_scaling."""

ALL = ["test_fit_power_law", "test_power_law_hidden", "test_training_flops", "test_flops_hidden",
       "test_fit_saturating", "test_saturating_hidden", "test_compute_optimal", "test_optimal_hidden"]


def _keeps(*lost: str) -> list[str]:
    return [cell for cell in ALL if cell not in lost]


PLANTED = {
    "power_law_in_linear_space": dict(
        cell="fit_power_law",
        source='''
def fit_power_law(x, loss):
    slope, intercept = np.polyfit(np.asarray(x), np.asarray(loss), 1)
    return intercept, -slope
''',
        fails=["test_fit_power_law", "test_power_law_hidden"],
        keeps=_keeps("test_fit_power_law", "test_power_law_hidden"),
        message="fitting in linear space"),
    "power_law_logs_mixed": dict(
        cell="fit_power_law",
        source='''
def fit_power_law(x, loss):
    slope, intercept = np.polyfit(np.log10(np.asarray(x)), np.log10(np.asarray(loss)), 1)
    return math.exp(intercept), -slope
''',
        fails=["test_fit_power_law", "test_power_law_hidden"],
        keeps=_keeps("test_fit_power_law", "test_power_law_hidden"),
        message="natural and base-10 logs mixed"),
    "power_law_exponent_sign": dict(
        cell="fit_power_law",
        source='''
def fit_power_law(x, loss):
    slope, intercept = np.polyfit(np.log(np.asarray(x)), np.log(np.asarray(loss)), 1)
    return math.exp(intercept), slope
''',
        fails=["test_fit_power_law", "test_power_law_hidden"],
        keeps=_keeps("test_fit_power_law", "test_power_law_hidden"),
        message="exponent sign"),
    "flops_forward_only": dict(
        cell="training_flops",
        source='''
def training_flops(n_params, n_tokens):
    return 2 * n_params * n_tokens
''',
        fails=["test_training_flops", "test_flops_hidden"],
        keeps=_keeps("test_training_flops", "test_flops_hidden"),
        message="C = 2ND counts the forward pass only"),
    "saturating_without_floor": dict(
        cell="fit_saturating",
        source='''
def fit_saturating(x, loss):
    slope, intercept = np.polyfit(np.log(np.asarray(x)), np.log(np.asarray(loss)), 1)
    return 0.0, math.exp(intercept), -slope
''',
        fails=["test_fit_saturating", "test_saturating_hidden"],
        keeps=_keeps("test_fit_saturating", "test_saturating_hidden"),
        message="the irreducible term is forgotten"),
    "optimal_forward_only": dict(
        cell="compute_optimal",
        source='''
def compute_optimal(C, A, B, alpha, beta):
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n_opt = g * (C / 2) ** (beta / (alpha + beta))
    return n_opt, C / (2 * n_opt)
''',
        fails=["test_compute_optimal", "test_optimal_hidden"],
        keeps=_keeps("test_compute_optimal", "test_optimal_hidden"),
        message="C = 2ND counts the forward pass only"),
    "optimal_n_and_d_swapped": dict(
        cell="compute_optimal",
        source='''
def compute_optimal(C, A, B, alpha, beta):
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n_opt = g * (C / 6) ** (beta / (alpha + beta))
    return C / (6 * n_opt), n_opt
''',
        fails=["test_compute_optimal", "test_optimal_hidden"],
        keeps=_keeps("test_compute_optimal", "test_optimal_hidden"),
        message="N and D swapped"),
    "power_law_wraps_reference": dict(
        cell="fit_power_law",
        source='''
from llmcourse import scaling as S

def fit_power_law(x, loss):
    return S.fit_power_law(x, loss)
''',
        fails=["test_fit_power_law", "test_power_law_hidden"],
        keeps=["test_training_flops", "test_fit_saturating", "test_compute_optimal"],
        message="calls llmcourse's own reference implementation"),
    "saturating_search_stops_at_1": dict(           # issue 29: the task allows 0 < alpha <= 3
        cell="fit_saturating",
        source='''
import numpy as np

def fit_saturating(x, loss):
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)

    def fit(alpha):
        cols = np.stack([np.ones_like(x), x ** -alpha], 1)
        (e, a), *_ = np.linalg.lstsq(cols, loss, rcond=None)
        return float(((cols @ [e, a] - loss) ** 2).sum()), float(e), float(a)

    grid = np.geomspace(0.005, 1.0, 200)
    i = int(np.argmin([fit(a)[0] for a in grid]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    for _ in range(80):
        a1, a2 = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        lo, hi = (lo, a2) if fit(a1)[0] < fit(a2)[0] else (a1, hi)
    alpha = (lo + hi) / 2
    return fit(alpha)[1], fit(alpha)[2], float(alpha)
''',
        fails=["test_fit_saturating"],
        keeps=_keeps("test_fit_saturating", "test_saturating_hidden"),
        message="your search stops at 1"),
}
