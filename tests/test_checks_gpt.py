"""The graded checks of 05_gpt: mistakes beyond the planted ones, correct alternatives, wrong types and shapes.

What every check must do (pass the solution, refuse the reference, name the planted mistakes) is tested
for all exercises in test_checks_all.py.
"""
from __future__ import annotations

import pytest
import torch

from conftest import notebook_namespace
from llmcourse import checks

SOLUTION = notebook_namespace("05_gpt")
block, count, dist, sample, generate = (SOLUTION[n] for n in ("block_forward", "count_params", "next_token_distribution",
                                                             "sample", "generate_greedy_cached"))


def _ln(t, g, b, unbiased=False):
    mean, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=unbiased, keepdim=True)
    return (t - mean) / torch.sqrt(var + 1e-5) * g + b


def _block(x, p, n_heads, unbiased=False, scale=None, act=torch.nn.functional.gelu, causal=True, res_ffn=True,
           dtype=None):
    """A block written with einsum and an explicit loop over heads: the correct alternative, or one mistake."""
    if dtype is not None:
        x, p = x.to(dtype), {k: v.to(dtype) for k, v in p.items()}
    seq, d = x.shape
    dh = d // n_heads
    a = _ln(x, p["ln1_g"], p["ln1_b"], unbiased)
    q, k, v = (torch.einsum("sd,de->se", a, p[f"W{n}"]) + p[f"b{n}"] for n in "qkv")
    outs = []
    for h in range(n_heads):
        cols = slice(h * dh, (h + 1) * dh)
        s = q[:, cols] @ k[:, cols].T / (scale or dh) ** 0.5
        if causal:
            s = s + torch.triu(torch.full((seq, seq), float("-inf")), 1)
        outs.append(torch.softmax(s, -1) @ v[:, cols])
    h = x + torch.cat(outs, -1) @ p["Wo"] + p["bo"]
    f = act(_ln(h, p["ln2_g"], p["ln2_b"], unbiased) @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    return (h if res_ffn else 0) + f


def test_correct_alternatives_keep_full_marks():
    checks.check_block_forward(_block)                                             # einsum, a loop over heads
    checks.check_block_forward(lambda x, p, h: _block(x, p, h, dtype=torch.float64))
    checks.check_count_params(lambda c: int(count(c)))
    checks.check_next_token_distribution(lambda l, t, k, p: dist(l.double(), t, k, p).float())
    checks.check_sample(lambda l, t, k, p, s: torch.tensor(sample(l, t, k, p, s)))
    checks.check_generate_greedy_cached(lambda m, pr, n: (torch.tensor(generate(m, pr, n)[0]), generate(m, pr, n)[1]))


def test_more_block_mistakes_are_named():
    for kw, message in [(dict(unbiased=True), "biased variance"), (dict(scale=None, causal=False), "causal mask"),
                        (dict(act=torch.relu), "uses ReLU"), (dict(res_ffn=False), "missing around the FFN"),
                        (dict(act=lambda t: torch.nn.functional.gelu(t, approximate="tanh")), "tanh approximation")]:
        with pytest.raises(AssertionError, match=message):
            checks.check_block_forward(lambda x, p, h: _block(x, p, h, **kw))
    with pytest.raises(AssertionError, match=r"sqrt\(d_head\)"):
        checks.check_block_forward(lambda x, p, h: _block(x, p, h, scale=x.shape[1]))
    with pytest.raises(AssertionError, match="returned shape"):
        checks.check_block_forward(lambda x, p, h: block(x, p, h)[None])


def test_more_count_mistakes_are_named():
    def without(**drop):
        def f(c):
            V, T, d, L, ff = (c[k] for k in ("vocab_size", "n_ctx", "d_model", "n_layers", "d_ff"))
            b = 0 if drop.get("biases") else 1
            per = 4 * d * d + 4 * d * b + 2 * d * ff + (ff + d) * b + (0 if drop.get("norms") else 4 * d)
            head = 0 if c["tied"] else d * V + V
            return V * d + (0 if drop.get("positions") else T * d) + L * per + (0 if drop.get("norms") else 2 * d) + head
        return f
    for drop, message in [("positions", "position embeddings are missing"), ("norms", "LayerNorms are missing"),
                          ("biases", "biases are missing")]:
        with pytest.raises(AssertionError, match=message):
            checks.check_count_params(without(**{drop: True}))
    with pytest.raises(AssertionError, match="should return an int"):
        checks.check_count_params(lambda c: "124M")


def test_more_sampling_mistakes_are_named():
    def times_t(l, t, k, p):
        return dist(l * t * t, t, k, p) if t else dist(l, t, k, p)           # softmax(l * T)
    with pytest.raises(AssertionError, match="multiplied by T"):
        checks.check_next_token_distribution(times_t)
    with pytest.raises(AssertionError, match="not renormalised"):
        checks.check_next_token_distribution(
            lambda l, t, k, p: torch.where(dist(l, t, k, p) > 0, torch.softmax(l / t, -1), 0.0))
    with pytest.raises(AssertionError, match="temperature 0 means greedy"):
        checks.check_sample(lambda l, t, k, p, s: sample(l, t or 1.0, k, p, s))
    with pytest.raises(AssertionError, match="manual_seed"):
        checks.check_sample(lambda l, t, k, p, s: sample(l, t, k, p, s + 1) if t else sample(l, t, k, p, s))


def test_generation_mistakes_are_named():
    with pytest.raises(AssertionError, match="without the prompt"):
        checks.check_generate_greedy_cached(lambda m, pr, n: (pr + generate(m, pr, n)[0], generate(m, pr, n)[1]))
    with pytest.raises(AssertionError, match="the last generated one included"):
        checks.check_generate_greedy_cached(lambda m, pr, n: (generate(m, pr, n)[0],
                                                              [(k[:, :-1], v[:, :-1]) for k, v in generate(m, pr, n)[1]]))
    with pytest.raises(AssertionError, match=r"\(tokens, cache\)"):
        checks.check_generate_greedy_cached(lambda m, pr, n: generate(m, pr, n)[0])


def test_generation_cases_have_no_near_ties():
    """Every greedy step of every visible and hidden case wins by a clear margin, so two correct float32
    computations (other thread counts, other summation orders) cannot pick different tokens."""
    import nbformat

    from conftest import REPO
    from llmcourse import gpt
    from llmcourse.checks.gpt import _generate_cases
    from llmcourse.grading import judge

    nb = nbformat.read(REPO / "solutions" / "05_gpt" / "05_gpt.ipynb", as_version=4)
    calls = [params for cell in judge.test_cells(nb) for name, params in cell.calls
             if name == "check_generate_greedy_cached"]
    assert len(calls) == 2, calls
    for params in calls:
        for model, prompt, n_new in _generate_cases(**params):
            tokens = list(prompt)
            for _ in range(n_new):
                logits = gpt.step(model, torch.tensor(tokens))[0][-1]
                top = logits.topk(2).values
                assert top[0] - top[1] > 0.05, (params, prompt)
                tokens.append(int(logits.argmax()))
