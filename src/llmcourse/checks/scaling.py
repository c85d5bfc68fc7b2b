"""Graded checks of exercise 07_scaling: the log-log power-law fit, training compute 6ND, the saturating fit with an
irreducible term, and the compute-optimal split of a budget under C = 6ND.

The fits are checked on synthetic losses with known exponents (with and without noise) and on the published laws
of Kaplan et al. (2020) and Hoffmann et al. (2022). Explained in chapter 07_scaling; each check compares with
`llmcourse.scaling` and names the typical mistakes.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from llmcourse import scaling
from llmcourse.checks.core import Check, as_float_array, diagnosis, fail, register

FIT_RTOL = 1e-4       # the power-law fit and the allocation have closed forms: tight
SAT_RTOL = 1e-3       # the saturating fit is iterative: its parameters within 0.1%, or
SAT_SSE_SLACK = 0.01  # ... a squared error at most 1% above the best


def _close(got: np.ndarray, want: np.ndarray, rtol: float) -> bool:
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=0))


def _as_fit(value, name: str, n: int) -> np.ndarray:
    """The student's tuple of fitted numbers as a float array of length n, or a message."""
    got = as_float_array(value, name).reshape(-1)
    if got.shape != (n,):
        fail(f"`{name}` should return {n} numbers ({'A, alpha' if n == 2 else 'E, A, alpha'}), but it returned "
             f"{got.size}: {np.array2string(got, precision=4)[:80]}."
             + (" The irreducible term E is missing: this law is L = E + A / x**alpha, three numbers."
                if n == 3 and got.size == 2 else ""))
    if not np.isfinite(got).all():
        fail(f"`{name}` returned {got.tolist()}: not finite. A log of zero or of a negative number? The logs of x "
             "and of the losses are finite here (all positive)"
             + ("; with an irreducible term, log(L - E) is -inf for E equal to the smallest loss and NaN above "
                "it: keep E below every loss, or fit in the losses themselves." if n == 3 else "."))
    return got


def _describe(values: np.ndarray, names: str) -> str:
    return ", ".join(f"{n} = {v:.6g}" for n, v in zip(names.split(", "), values))


# --- the power law, fitted in log-log space -------------------------------------------------------------

def _power_cases(seed: int = 0, alphas=(0.3, 0.08), amplitudes=(40.0, 12.0), noise: float = 0.02, n: int = 12,
                 kaplan: bool = True) -> list[tuple]:
    """(x (n,) float64, loss (n,) float64): noisy power laws with known exponents over six decades of x, then
    Kaplan et al.'s L(N) from its published constants (no noise)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.logspace(3, 9, n, dtype=torch.float64)
    out = [(x, a * x ** -alpha * torch.exp(noise * torch.randn(n, generator=gen, dtype=torch.float64)))
           for alpha, a in zip(alphas, amplitudes)]
    if kaplan:
        N = torch.logspace(5, 11, 7, dtype=torch.float64)
        out.append((N, (scaling.KAPLAN["N_c"] / N) ** scaling.KAPLAN["alpha_N"]))
    return out


@diagnosis
def _linear_space_power_fit(x: np.ndarray, y: np.ndarray, start: float) -> tuple[float, float]:
    """The mistake: least squares on the losses themselves, sum (L - A x^-alpha)^2 (A solved for each alpha)."""
    def sse(alpha):
        f = x ** -alpha
        a = (y * f).sum() / (f * f).sum()
        return ((y - a * f) ** 2).sum(), a
    lo, hi = start / 3, start * 3
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        a1, a2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        lo, hi = (lo, a2) if sse(a1)[0] < sse(a2)[0] else (a1, hi)
    alpha = (lo + hi) / 2
    return sse(alpha)[1], alpha


def _compare_power(args, got) -> None:
    x, y = args[0].numpy(), args[1].numpy()
    want = np.array(scaling.fit_power_law(*args), dtype=np.float64)
    A, alpha = want
    what = f"on {len(x)} points with exponent about {alpha:.3g}"
    if _close(got, want, FIT_RTOL):
        return
    lx, ly = np.log(x), np.log(y)
    m, b = np.polyfit(x, y, 1)                                    # a straight line through the raw numbers
    mr, br = np.polyfit(ly, lx, 1)                                # log x regressed on log L
    mistakes = [
        ("exponent sign: the loss FALLS as x grows, L = A * x**(-alpha), so the slope of the line in log-log "
         "axes is -alpha and alpha is positive. Return alpha = -slope.", np.array([A, -alpha]), FIT_RTOL),
        ("natural and base-10 logs mixed: the intercept of a fit in log10 must be undone with 10**intercept, "
         "and one in ln with exp(intercept). Use one base for x, for L and for undoing the intercept.",
         np.array([math.exp(math.log10(A)), alpha]), FIT_RTOL),
        ("natural and base-10 logs mixed: the intercept of a fit in log10 must be undone with 10**intercept, "
         "and one in ln with exp(intercept). Use one base for x, for L and for undoing the intercept.",
         np.array([10 ** math.log(A), alpha]), FIT_RTOL),
        ("natural and base-10 logs mixed: the slope is d log L / d log x only when both logs have the same base "
         "(one ln and one log10 scale it by ln 10 = 2.303).", np.array([np.nan, alpha * math.log(10)]), FIT_RTOL),
        ("natural and base-10 logs mixed: the slope is d log L / d log x only when both logs have the same base "
         "(one ln and one log10 scale it by ln 10 = 2.303).", np.array([np.nan, alpha / math.log(10)]), FIT_RTOL),
        ("fitting in linear space: a straight line through the raw (x, L) is not a power law. Take the log of "
         "both, log L = log A - alpha log x is a straight line: fit THAT by least squares.",
         np.array([b, -m]), 1e-3),
        ("fitting in linear space: a straight line through the raw (x, L) is not a power law. Take the log of "
         "both, log L = log A - alpha log x is a straight line: fit THAT by least squares.",
         np.array([b, m]), 1e-3),
        ("fitting in linear space: you minimised the squared error of the losses themselves, sum (L - A x^-alpha)^2, "
         "which lets the few largest losses (small x) decide. The law is a straight line in log-log axes: "
         "least squares on (log x, log L) weighs every decade alike.",
         np.array(_linear_space_power_fit(x, y, alpha)), 1e-3),
        ("x and the losses swapped: regress log L (the loss) on log x, not log x on log L.",
         np.array([np.nan, -mr]), FIT_RTOL),
        ("x and the losses swapped: regress log L (the loss) on log x, not log x on log L.",
         np.array([math.exp(-br / mr), -1 / mr]), FIT_RTOL),
    ]
    for message, wrong, rtol in mistakes:
        known = ~np.isnan(wrong)
        if got.shape == wrong.shape and np.allclose(got[known], wrong[known], rtol=rtol, atol=0) \
                and not np.allclose(wrong[known], want[known], rtol=FIT_RTOL, atol=0):
            fail(f"`fit_power_law` {what}: {message}")
    fail(f"`fit_power_law` {what} returned {_describe(got, 'A, alpha')}; expected {_describe(want, 'A, alpha')} "
         f"(relative tolerance {FIT_RTOL}), the least-squares line through (log x, log L).")


check_fit_power_law = register(Check(
    name="fit_power_law", reference=scaling.fit_power_law, cases=_power_cases,
    output=lambda v, name: _as_fit(v, name, 2), compare=_compare_power,
    passed="fit_power_law finds the known exponents, and Kaplan's alpha_N = 0.076 from his law."))


# --- training compute ------------------------------------------------------------------------------------

def _flops_cases(sizes=((1.5e9, 1e10), (174.6e9, 300e9), (70e9, 1.4e12)), arrays: bool = True) -> list[tuple]:
    """(N, D) as numbers (published models), then as float64 tensors of a sweep."""
    out = [(float(n), float(d)) for n, d in sizes]
    if arrays:
        out.append((torch.tensor([1e4, 1e5, 1e6], dtype=torch.float64),
                    torch.tensor([5e5, 5e5, 5e5], dtype=torch.float64)))
    return out


def _compare_flops(args, got) -> None:
    n, d = (np.asarray(a, dtype=np.float64) for a in args)
    want = np.asarray(scaling.training_flops(*args), dtype=np.float64)
    what = f"for N = {np.array2string(n, precision=3)}, D = {np.array2string(d, precision=3)}"
    if got.shape != want.shape:
        fail(f"`training_flops` {what} returned shape {got.shape}, expected {want.shape}: one number per model "
             "(work element-wise on arrays).")
    if _close(got, want, 1e-6):
        return
    for message, factor in [
            ("C = 2ND counts the forward pass only (a multiply and an add per parameter per token). Training "
             "also runs the backward pass, about twice the forward (gradients for the activations and for the "
             "weights): C = 6ND.", 2),
            ("the backward pass alone is about 4ND; training is forward plus backward, C = 6ND.", 4),
            ("N x D counts each parameter once per token; a forward pass costs 2 operations (multiply, add) per "
             "parameter per token and the backward pass about 4: C = 6ND.", 1)]:
        if _close(got, want * factor / 6, 1e-6):
            fail(f"`training_flops` {what}: {message}")
    fail(f"`training_flops` {what} returned {np.array2string(got, precision=4)}, expected "
         f"{np.array2string(want, precision=4)} = 6 N D.")


check_training_flops = register(Check(
    name="training_flops", reference=scaling.training_flops, cases=_flops_cases,
    output=lambda v, name: as_float_array(v, name), compare=_compare_flops,
    passed="training_flops gives 6ND: GPT-3's 174.6 B parameters on 300 B tokens take 3.14e23 FLOPs."))


# --- the saturating law: E + A / x^alpha -------------------------------------------------------------------

def _saturating_cases(seed: int = 0, laws=((0.8, 5.0, 0.15), (2.0, 30.0, 0.6), (1.0, 2e4, 1.2)),
                      noise: float = 0.005, chinchilla: bool = True) -> list[tuple]:
    """(x (15,), loss (15,)): noiseless laws with known (E, A, alpha), one with alpha above 1 (the task allows
    0 < alpha <= 3), Chinchilla's L(N) with infinite data (E = 1.69, A = 406.4, alpha = 0.34), then the first law
    with relative noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.logspace(3, 10, 15, dtype=torch.float64)
    out = [(x, e + a * x ** -alpha) for e, a, alpha in laws]
    if chinchilla:
        c = scaling.CHINCHILLA
        N = torch.logspace(6, 12, 13, dtype=torch.float64)
        out.append((N, c["E"] + c["A"] * N ** -c["alpha"]))
    e, a, alpha = laws[0]
    out.append((x, (e + a * x ** -alpha) * (1 + noise * torch.randn(15, generator=gen, dtype=torch.float64))))
    return out


def _sse(x: np.ndarray, y: np.ndarray, params: np.ndarray) -> float:
    e, a, alpha = params
    with np.errstate(over="ignore", invalid="ignore"):
        return float(((e + a * x ** -alpha - y) ** 2).sum())


def _compare_saturating(args, got) -> None:
    x, y = args[0].numpy(), args[1].numpy()
    want = np.array(scaling.fit_saturating(*args), dtype=np.float64)
    best, ours = _sse(x, y, want), _sse(x, y, got)
    what = f"on {len(x)} points"
    if _close(got, want, SAT_RTOL) or ours <= best * (1 + SAT_SSE_SLACK) + 1e-12 * (y ** 2).sum():
        return
    if got[2] < 0 and _sse(x, y, got * [1, 1, -1]) < 2 * best + 1e-9:
        fail(f"`fit_saturating` {what}: exponent sign: L = E + A * x**(-alpha) falls as x grows, so alpha is "
             "positive.")
    if want[2] > 1 and got[2] <= 1 + 1e-6:
        fail(f"`fit_saturating` {what} returned alpha = {got[2]:.4g}, but the best exponent here is {want[2]:.4g}: "
             "your search stops at 1. The task allows any exponent 0 < alpha <= 3: search that whole range.")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)         # a pure power law through the same points
    if abs(got[0]) < 1e-6 * abs(want[0]) or _close(got[1:], np.array([math.exp(intercept), -slope]), 1e-3):
        fail(f"`fit_saturating` {what} returned E = {got[0]:.4g}: the irreducible term is forgotten. These losses "
             f"level off at E = {want[0]:.4g} (the entropy of the text, which no model removes); a pure power law "
             "A / x**alpha must fall to 0, so its exponent comes out too small. Fit E, A and alpha together.")
    fail(f"`fit_saturating` {what} returned {_describe(got, 'E, A, alpha')}, squared error {ours:.4g}; the best "
         f"fit is {_describe(want, 'E, A, alpha')}, squared error {best:.4g}. Minimise the squared error of the "
         "losses, sum (L - E - A x**-alpha)**2 (for a fixed alpha, E and A are a linear least squares; then search "
         "alpha), to within 1% of the best.")


check_fit_saturating = register(Check(
    name="fit_saturating", reference=scaling.fit_saturating, cases=_saturating_cases,
    output=lambda v, name: _as_fit(v, name, 3), compare=_compare_saturating,
    passed="fit_saturating finds E, A and alpha, also Chinchilla's E = 1.69 and alpha = 0.34."))


# --- the compute-optimal allocation -----------------------------------------------------------------------

def _optimal_cases(budgets=(3.14e23, 1e21, 5.76e23), other=((1e20, 100.0, 1000.0, 0.5, 0.3),)) -> list[tuple]:
    """(C, A, B, alpha, beta): GPT-3's, a small and Gopher's budget with Chinchilla's constants, then others."""
    c = scaling.CHINCHILLA
    return [(float(C), c["A"], c["B"], c["alpha"], c["beta"]) for C in budgets] + [tuple(map(float, o)) for o in other]


@diagnosis
def _allocation(C, A, B, alpha, beta, per=6.0, swap_exponents=False, invert_g=False):
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    G = 1 / G if invert_g else G
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    a, b = (b, a) if swap_exponents else (a, b)
    return np.array([G * (C / per) ** a, (C / per) ** b / G])


def _compare_optimal(args, got) -> None:
    C, A, B, alpha, beta = args
    want = np.array(scaling.compute_optimal(*args), dtype=np.float64)
    what = f"for C = {C:.3g} (A = {A:g}, B = {B:g}, alpha = {alpha:g}, beta = {beta:g})"
    if got.shape != (2,):
        fail(f"`compute_optimal` {what} should return 2 numbers (N, D), got {got.size}.")
    if _close(got, want, FIT_RTOL):
        return
    mistakes = [
        ("N and D swapped: return (N, D), parameters first. The parameters carry A and alpha, the tokens B and "
         "beta.", want[::-1]),
        ("C = 2ND counts the forward pass only; training costs C = 6ND, so the budget allows N D = C / 6.",
         _allocation(C, A, B, alpha, beta, per=2)),
        ("the factor 6 is missing: under C = 6ND the budget allows N D = C / 6, not C.",
         _allocation(C, A, B, alpha, beta, per=1)),
        ("the exponents are swapped: N* grows as (C/6)**(beta/(alpha+beta)) and D* as (C/6)**(alpha/(alpha+beta)) "
         "(the larger the data exponent beta, the more of the budget goes to parameters).",
         _allocation(C, A, B, alpha, beta, swap_exponents=True)),
        ("G is upside down: G = (alpha A / (beta B))**(1/(alpha+beta)), N* = G (C/6)**a, D* = (C/6)**b / G.",
         _allocation(C, A, B, alpha, beta, invert_g=True)),
    ]
    for message, wrong in mistakes:
        if _close(got, wrong, 1e-3):
            fail(f"`compute_optimal` {what}: {message}")
    spent = 6 * got[0] * got[1]
    if not math.isclose(spent, C, rel_tol=1e-3):
        fail(f"`compute_optimal` {what} returned N = {got[0]:.4g}, D = {got[1]:.4g}, which cost 6ND = {spent:.4g} "
             f"FLOPs, not the budget C = {C:.4g}: the optimum spends the whole budget.")
    fail(f"`compute_optimal` {what} returned N = {got[0]:.4g}, D = {got[1]:.4g}; expected N = {want[0]:.4g}, "
         f"D = {want[1]:.4g} (relative tolerance {FIT_RTOL}). Both spend the budget; set D = C/(6N) in "
         "A/N**alpha + B/D**beta and set its derivative in N to zero.")


check_compute_optimal = register(Check(
    name="compute_optimal", reference=scaling.compute_optimal, cases=_optimal_cases,
    output=lambda v, name: as_float_array(v, name).reshape(-1), compare=_compare_optimal,
    passed="compute_optimal matches the closed form: at GPT-3's budget, about 25 B parameters, not 175 B."))
