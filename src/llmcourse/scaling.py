"""Scaling laws: power-law fits, the published laws of Kaplan et al. (2020) and Hoffmann et al. (2022, "Chinchilla"),
training compute 6ND, and the compute-optimal split of a budget between parameters and data.

Loss falls as a power law in parameters N and training tokens D, L = A / x^alpha: a straight line of slope
-alpha in log-log axes, so the exponent is a least-squares line through (log x, log L). With an irreducible term,
L = E + A / x^alpha (the entropy of the text itself, which no model removes), the line bends and the fit is
nonlinear. Chinchilla's L(N, D) = E + A/N^alpha + B/D^beta, minimised under C = 6ND, gives the best N and D for a
budget C in closed form.

Explained in chapter 07_scaling.
"""
from __future__ import annotations

import math

import numpy as np

# Kaplan et al. 2020 ("Scaling Laws for Neural Language Models"), equations 1.1 and 1.2: loss in
# nats per token of WebText2 (GPT-2's tokenizer), N = non-embedding parameters, D = tokens.
KAPLAN = {"N_c": 8.8e13, "alpha_N": 0.076, "D_c": 5.4e13, "alpha_D": 0.095}

# Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models"), section 3.3 (approach 3): loss in nats
# per token of MassiveText, N = parameters, D = training tokens.
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

# Compute-optimal exponents N* ~ C^a, D* ~ C^b: Hoffmann et al. 2022, Table 2 (approach 2, isoFLOP profiles), and
# the refit of their approach 3 by Besiroglu et al. 2024 (E 1.8172, A 482.01, B 2085.43, alpha 0.3478, beta 0.3658).
HOFFMANN_ISOFLOP = {"a": 0.49, "b": 0.51}
BESIROGLU = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def _floats(x) -> np.ndarray:
    """Any 1-D sequence of numbers (list, numpy array, torch tensor) as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def fit_power_law(x, loss) -> tuple[float, float]:
    """Least-squares fit of loss = A * x**(-alpha) in log-log space: log L = log A - alpha log x, a straight line.

    x, loss: 1-D sequences of positive numbers of one length. Returns (A, alpha) as floats; alpha > 0 when the
    loss falls as x grows. Explained in chapter 07_scaling.
    """
    lx, ly = np.log(_floats(x)), np.log(_floats(loss))
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    intercept = ly.mean() - slope * lx.mean()
    return float(math.exp(intercept)), float(-slope)


def _fit_linear_in_e_a(x: np.ndarray, loss: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """For a fixed alpha, L = E + A * x**-alpha is linear in (E, A): their least squares and its squared error."""
    design = np.stack([np.ones_like(x), x ** -alpha], axis=1)               # (n, 2)
    (e, a), *_ = np.linalg.lstsq(design, loss, rcond=None)
    return float(e), float(a), float(((design @ np.array([e, a]) - loss) ** 2).sum())


def fit_saturating(x, loss) -> tuple[float, float, float]:
    """Least-squares fit of loss = E + A * x**(-alpha), minimising the squared error of the losses themselves.

    For a fixed alpha the model is linear in E and A (one `lstsq`); the best alpha is found by a scan of
    0.005..3 and a golden-section search around the best point of the scan. x, loss: 1-D sequences of one length
    (at least 4 points). Returns (E, A, alpha). Explained in chapter 07_scaling.
    """
    x, loss = _floats(x), _floats(loss)
    grid = np.geomspace(0.005, 3.0, 200)
    errors = [_fit_linear_in_e_a(x, loss, a)[2] for a in grid]
    i = int(np.argmin(errors))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(80):                                                     # golden-section search on alpha
        a1, a2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _fit_linear_in_e_a(x, loss, a1)[2] < _fit_linear_in_e_a(x, loss, a2)[2]:
            hi = a2
        else:
            lo = a1
    alpha = (lo + hi) / 2
    e, a, _ = _fit_linear_in_e_a(x, loss, alpha)
    return e, a, float(alpha)


def kaplan_loss_n(n):
    """Kaplan et al.'s L(N) = (N_c / N)^alpha_N for models trained to convergence on enough data (nats/token)."""
    return (KAPLAN["N_c"] / _floats(n)) ** KAPLAN["alpha_N"]


def kaplan_loss_d(d):
    """Kaplan et al.'s L(D) = (D_c / D)^alpha_D for large models trained with early stopping on D tokens."""
    return (KAPLAN["D_c"] / _floats(d)) ** KAPLAN["alpha_D"]


def training_flops(n_params, n_tokens):
    """Training compute C = 6 N D floating-point operations: 2 per parameter per token forward, 4 backward.

    Numbers or arrays (broadcast). Explained in chapter 07_scaling.
    """
    return 6.0 * np.asarray(n_params, dtype=np.float64) * np.asarray(n_tokens, dtype=np.float64)


def chinchilla_loss(n, d, E: float = CHINCHILLA["E"], A: float = CHINCHILLA["A"], B: float = CHINCHILLA["B"],
                    alpha: float = CHINCHILLA["alpha"], beta: float = CHINCHILLA["beta"]):
    """Hoffmann et al.'s parametric loss L(N, D) = E + A / N^alpha + B / D^beta (nats per token)."""
    return E + A / _floats(n) ** alpha + B / _floats(d) ** beta


def compute_optimal(C, A: float = CHINCHILLA["A"], B: float = CHINCHILLA["B"], alpha: float = CHINCHILLA["alpha"],
                    beta: float = CHINCHILLA["beta"]) -> tuple[float, float]:
    """The N and D that minimise E + A/N^alpha + B/D^beta subject to 6 N D = C (Hoffmann et al. 2022, section 3.3):

        N* = G (C/6)^(beta/(alpha+beta)),  D* = (C/6)^(alpha/(alpha+beta)) / G,  G = (alpha A / (beta B))^(1/(alpha+beta)).

    C: a budget in FLOPs (a number or an array). Returns (N*, D*). Explained in chapter 07_scaling.
    """
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    budget = np.asarray(C, dtype=np.float64) / 6
    n_opt = G * budget ** (beta / (alpha + beta))
    d_opt = budget ** (alpha / (alpha + beta)) / G
    return (float(n_opt), float(d_opt)) if n_opt.ndim == 0 else (n_opt, d_opt)


def isoflop_minimum(n, loss) -> tuple[float, float, np.ndarray]:
    """The bottom of one isoFLOP profile (Hoffmann et al. 2022, approach 2): a parabola in log N through the losses
    of several sizes trained on the same budget, loss = c2 (ln N)^2 + c1 ln N + c0 (least squares).

    n, loss: 1-D sequences of one length (at least 3). Returns (N at the bottom, the parabola's loss there, its
    coefficients (c2, c1, c0)); (nan, nan, coefficients) when the parabola opens downwards (no bottom).
    Explained in chapter 07_scaling.
    """
    ln = np.log(_floats(n))
    coef = np.polyfit(ln, _floats(loss), 2)
    if coef[0] <= 0:
        return math.nan, math.nan, coef
    x = -coef[1] / (2 * coef[0])
    return float(math.exp(x)), float(np.polyval(coef, x)), coef
