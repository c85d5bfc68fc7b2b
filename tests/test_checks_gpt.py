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
    checks.check_sample(lambda l, t, k, p, s: int(torch.tensor(sample(l, t, k, p, s))))
    checks.check_generate_greedy_cached(lambda m, pr, n: (list(generate(m, pr, n)[0]), tuple(generate(m, pr, n)[1])))


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
    from llmcourse.grading.batch import judge

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


# --- issue 29: each wrong answer of its table loses points with its own message -----------------------------

def _block_in_place(x, params, n_heads):
    """The solution with `x += attention(...)`: the caller's x changes."""
    fresh = block(x, params, n_heads)
    x += fresh - x
    return x


def _dist_in_place(logits, t, k, p):
    if t:
        logits /= t
    return dist(logits, 1.0 if t else t, k, p) if t else dist(logits, t, k, p)


def _generate_appending_to_prompt(model, prompt, n_new):
    tokens, cache = generate(model, prompt, n_new)
    seq = prompt
    seq.extend(tokens)
    return seq[len(seq) - n_new:], cache


def _generate_cache_unused(model, prompt, n_new):
    """Builds the cache as it goes but takes every next token from a run of the whole sequence."""
    from llmcourse import gpt
    tokens = list(prompt)
    logits, cache = gpt.step(model, torch.tensor(tokens), 0, None)
    for _ in range(n_new):
        tokens.append(int(logits[-1].argmax()))
        _, new = gpt.step(model, torch.tensor([tokens[-1]]), len(tokens) - 1, cache)
        cache = [(torch.cat([k, k1], 1), torch.cat([v, v1], 1)) for (k, v), (k1, v1) in zip(cache, new)]
        logits = gpt.step(model, torch.tensor(tokens), 0, None)[0]          # the whole sequence again
    return tokens[len(prompt):], cache


@pytest.mark.parametrize("check,wrong,message", [
    ("block_forward", _block_in_place, "changed its argument `x`"),
    ("next_token_distribution", _dist_in_place, "changed its argument `logits`"),
    ("generate_greedy_cached", _generate_appending_to_prompt, "changed its argument `prompt`"),
    ("sample", lambda l, t, k, p, s: torch.tensor([sample(l, t, k, p, s)]), r"one token id as an int.*shape \(1,\)"),
    ("next_token_distribution", lambda l, t, k, p: dist(l, t or 1e-3, k, p), "temperature 0 means greedy"),
    ("generate_greedy_cached", _generate_cache_unused, "cache is built but not used"),
])
def test_issue_table_rows_lose_points_with_their_message(check, wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.REGISTRY[f"check_{check}"](wrong)


@pytest.mark.parametrize("kw,message", [
    (dict(softmax_dim=-2), "softmax runs over the wrong axis"), (dict(affine=False), "no gain and bias"),
    (dict(ln1_twice=True), "first LayerNorm's weights are used twice"), (dict(eps="outside"), "epsilon is outside"),
])
def test_block_diagnoses_name_the_mistake(kw, message):
    from llmcourse.checks.gpt import _block_variant
    to = lambda x, p, h: _block_variant(x.double(), {k: v.double() for k, v in p.items()}, h, **kw)  # noqa: E731
    with pytest.raises(AssertionError, match=message):
        checks.check_block_forward(lambda x, p, h: to(x, p, h).float())


@pytest.mark.parametrize("kw,message", [
    (dict(p_first=True), "applied before top-k"), (dict(between=False), "before top-k's renormalisation"),
    (dict(exactly_k=True), "top-k with ties"),
])
def test_filter_diagnoses_name_the_mistake(kw, message):
    from llmcourse.checks.gpt import _filtered

    def wrong(logits, t, k, p):
        if t == 0:
            return dist(logits, t, k, p)
        return _filtered(torch.softmax(logits.double() / t, -1), k, p, **kw).float()
    with pytest.raises(AssertionError, match=message):
        checks.check_next_token_distribution(wrong)


def test_ties_and_greedy_are_visible_cases():
    from llmcourse.checks.gpt import _dist_cases
    cases = _dist_cases()
    greedy = [l for l, t, k, p in cases if t == 0]
    assert greedy and all(float(l.topk(2).values[0] - l.topk(2).values[1]) < 1e-3 for l in greedy)
    tied = [(l, k) for l, t, k, p in cases if k == 3 and p is None]
    assert tied and all(int((l == l.topk(k).values[-1]).sum()) == 3 for l, k in tied)
