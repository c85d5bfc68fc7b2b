"""Graded checks of exercise 05_gpt: a block from its weights, counting parameters, sampling, a KV cache.

Explained in chapter 05_gpt; each check compares with `llmcourse.gpt` / `llmcourse.generate` on seeded inputs
and names the typical mistakes: LayerNorm after the residual instead of before, a residual missing, no causal
mask, the unbiased variance, the wrong scale; tied embeddings counted twice, positions or norms forgotten;
temperature applied after the softmax, top-p keeping the wrong side of the threshold, no renormalisation; the
cache not appended, the positions not offset.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from llmcourse import generate, gpt
from llmcourse.checks.core import (ATOL, RTOL, Check, as_float_array, as_int_list, compare_arrays, diagnosis,
                                   fail, register)

# --- a block from its weights --------------------------------------------------------------------------------


def _block_params(gen: torch.Generator, d: int) -> dict[str, torch.Tensor]:
    """Random weights of a block, d_ff = 4 d, with gains away from 1 and biases away from 0 so that every
    part of the formula changes the result."""
    p = {}
    for ln in ("ln1", "ln2"):
        p[f"{ln}_g"] = 1 + 0.5 * torch.randn(d, generator=gen)
        p[f"{ln}_b"] = 0.5 * torch.randn(d, generator=gen)
    for name, (n_in, n_out) in {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d), "1": (d, 4 * d),
                                "2": (4 * d, d)}.items():
        p[f"W{name}"] = torch.randn(n_in, n_out, generator=gen) / n_in ** 0.5 * 1.5
        p[f"b{name}"] = 0.3 * torch.randn(n_out, generator=gen)
    return p


def _block_cases(seed: int = 0, shapes=((5, 8, 2), (7, 12, 3), (4, 16, 4)), small: float = 1e-3):
    """(x (seq, d_model), params, n_heads) for each (seq, d_model, n_heads), then one x of scale `small` (its
    variance, about 1e-6, is below LayerNorm's epsilon: where epsilon goes matters)."""
    gen = torch.Generator().manual_seed(seed)
    cases = [(torch.randn(seq, d, generator=gen), _block_params(gen, d), h) for seq, d, h in shapes]
    if small:
        seq, d, h = shapes[0]
        cases.append((torch.randn(seq, d, generator=gen) * small, _block_params(gen, d), h))
    return cases


@diagnosis
def _block_variant(x, p, n_heads, *, pre=True, res_attn=True, res_ffn=True, causal=True, unbiased=False,
                   scale="d_head", act="gelu", eps="inside", affine=True, ln1_twice=False, softmax_dim=-1):
    """The block with one thing changed: what a typical mistake computes (float64)."""
    seq, d = x.shape
    if ln1_twice:
        p = {**p, "ln2_g": p["ln1_g"], "ln2_b": p["ln1_b"]}

    def ln(t, g, b):
        mean, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=unbiased, keepdim=True)
        z = (t - mean) / (torch.sqrt(var + 1e-5) if eps == "inside" else torch.sqrt(var) + 1e-5)
        return z * g + b if affine else z

    def attn(a):
        q, k, v = ((a @ p[f"W{n}"] + p[f"b{n}"]).view(seq, n_heads, -1).transpose(0, 1) for n in "qkv")
        s = q @ k.transpose(-1, -2) / (q.shape[-1] if scale == "d_head" else d) ** 0.5
        if causal:
            s = s.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
        return (torch.softmax(s, softmax_dim) @ v).transpose(0, 1).reshape(seq, d) @ p["Wo"] + p["bo"]

    activation = {"gelu": nn.functional.gelu, "relu": torch.relu,
                  "tanh": lambda t: nn.functional.gelu(t, approximate="tanh")}[act]
    mlp = lambda a: activation(a @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]  # noqa: E731
    if not pre:                                           # post-LN: the original Transformer's order
        h = ln(x + attn(x), p["ln1_g"], p["ln1_b"])
        return ln(h + mlp(h), p["ln2_g"], p["ln2_b"])
    h = (x if res_attn else 0) + attn(ln(x, p["ln1_g"], p["ln1_b"]))
    return (h if res_ffn else 0) + mlp(ln(h, p["ln2_g"], p["ln2_b"]))


BLOCK_MISTAKES = {
    "LayerNorm is applied after the residual addition (post-LN, the original Transformer's order). GPT-2's block "
    "normalises *before* each sublayer and adds the sublayer's output to the unnormalised stream: "
    "h = x + attention(LN1(x)), then out = h + FFN(LN2(h)).": dict(pre=False),
    "the residual is missing around attention: the block adds attention's output to its input, "
    "h = x + attention(LN1(x)), so the residual stream keeps what earlier layers wrote.": dict(res_attn=False),
    "the residual is missing around the FFN: out = h + FFN(LN2(h)), not FFN(LN2(h)) alone.": dict(res_ffn=False),
    "the causal mask is missing: a token may attend to itself and to earlier tokens only, set the scores above "
    "the diagonal to -inf before the softmax.": dict(causal=False),
    "LayerNorm uses the biased variance (divide by d_model, torch.var(..., unbiased=False)), as torch's "
    "LayerNorm does; torch.var's default divides by d_model - 1.": dict(unbiased=True),
    "the attention scores are divided by sqrt(d_model); divide by sqrt(d_head), the length of each head's "
    "queries and keys (d_head = d_model // n_heads).": dict(scale="d_model"),
    "the FFN uses ReLU; GPT's block uses GELU, torch.nn.functional.gelu.": dict(act="relu"),
    "the FFN uses GELU's tanh approximation; the course's Block uses the exact GELU, "
    "torch.nn.functional.gelu(t) without `approximate`.": dict(act="tanh"),
    "the attention softmax runs over the wrong axis: each query's weights over the keys must add up to 1, "
    "softmax over the last axis (dim=-1) of the (n_heads, seq, seq) scores, not over the queries.":
        dict(softmax_dim=-2),
    "LayerNorm has no gain and bias: after normalising, multiply by g and add b "
    "(ln1_g, ln1_b for the first, ln2_g, ln2_b for the second).": dict(affine=False),
    "the first LayerNorm's weights are used twice: the FFN's LayerNorm has its own gain and bias, "
    "ln2_g and ln2_b.": dict(ln1_twice=True),
    "LayerNorm's epsilon is outside the square root: divide by sqrt(var + 1e-5), not sqrt(var) + 1e-5 (it "
    "matters when the variance is small, as in this case).": dict(eps="outside"),
}


def _compare_block(args, got) -> None:
    x, p, n_heads = args
    x, p = x.double(), {k: v.double() for k, v in p.items()}
    want = gpt.block_forward(x, p, n_heads).numpy()
    what = f"for x of shape {tuple(x.shape)} and n_heads = {n_heads}"
    compare_arrays(got, want, "block_forward", what=what,
                   mistakes={m: _block_variant(x, p, n_heads, **kw).numpy() for m, kw in BLOCK_MISTAKES.items()})


check_block_forward = register(Check(
    name="block_forward", reference=gpt.block_forward, cases=_block_cases, output=as_float_array,
    compare=_compare_block, passed=f"block_forward is a pre-LayerNorm GPT block (tolerance {ATOL})."))


# --- counting parameters -------------------------------------------------------------------------------------

FIELDS = ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "d_ff", "tied")


def _count_cases(configs=((50257, 1024, 768, 12, 12, 3072, True), (1000, 64, 32, 3, 4, 100, False),
                          (40478, 512, 768, 12, 12, 3072, True), (256, 128, 48, 2, 6, 192, False))):
    """One dict per configuration (vocab_size, n_ctx, d_model, n_layers, n_heads, d_ff, tied)."""
    return [(dict(zip(FIELDS, c)),) for c in configs]


def _as_count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        hint = " (`/` gives a float: use `//`, or count with ints only)" if isinstance(value, float) else (
            " (use `.item()` or int(...))" if isinstance(value, (torch.Tensor, np.generic)) else "")
        fail(f"`{name}` should return an int (a number of parameters), as the task says, but it returned a "
             f"{type(value).__name__}: {value!r:.80}{hint}")
    return int(value)


@diagnosis
def _count_variant(c: dict, *, tied_twice=False, positions=True, block_norms=True, final_norm=True, biases=True,
                   d_ff=None, head_bias=True) -> int:
    V, T, d, L, f = c["vocab_size"], c["n_ctx"], c["d_model"], c["n_layers"], d_ff or c["d_ff"]
    b = 1 if biases else 0
    block = 4 * d * d + 4 * d * b + 2 * d * f + (f + d) * b + (4 * d if block_norms else 0)
    head = d * V + (V if head_bias else 0) if (not c["tied"] or tied_twice) else 0
    return V * d + (T * d if positions else 0) + L * block + (2 * d if final_norm else 0) + head


COUNT_MISTAKES = {
    "the tied LM head is counted twice: with tied embeddings the unembedding *is* the token embedding matrix, "
    "so it adds no parameters.": dict(tied_twice=True),
    "the position embeddings are missing: GPT learns one d_model vector per position, n_ctx x d_model.":
        dict(positions=False),
    "the LayerNorms are missing: each has a gain and a bias of d_model numbers, two per block and one at the "
    "end.": dict(block_norms=False, final_norm=False),
    "the LayerNorms inside the blocks are missing: two per block, each 2 x d_model.": dict(block_norms=False),
    "the final LayerNorm (after the last block, 2 x d_model) is missing.": dict(final_norm=False),
    "the biases are missing: every Linear layer has one (d_model for W_q, W_k, W_v, W_o and W_2; d_ff for W_1).":
        dict(biases=False),
    "an untied LM head is its own Linear(d_model, vocab_size) with a bias of vocab_size numbers.":
        dict(head_bias=False),
}


def _compare_count(args, got) -> None:
    (c,) = args
    want = gpt.count_params(c)
    if got == want:
        return
    for message, kw in COUNT_MISTAKES.items():
        if got == _count_variant(c, **kw):
            fail(f"`count_params` for {c}: {message}")
    if got == _count_variant(c, d_ff=4 * c["d_model"]) and c["d_ff"] != 4 * c["d_model"]:
        fail(f"`count_params` for {c}: use the configuration's d_ff ({c['d_ff']}), not 4 x d_model.")
    fail(f"`count_params` for {c} returned {got:,}, expected {want:,} (off by {got - want:+,}). Count the token "
         "and position embeddings, per block two LayerNorms, W_q, W_k, W_v, W_o with biases and the FFN's two "
         "matrices with biases, the final LayerNorm, and the head only if it is not tied.")


check_count_params = register(Check(
    name="count_params", reference=gpt.count_params, cases=_count_cases, output=_as_count, compare=_compare_count,
    passed="count_params counts every weight of a GPT exactly."))


# --- the next-token distribution -----------------------------------------------------------------------------

SETTINGS = ((1.0, None, None), (0.5, None, None), (2.0, None, None), (1.0, 5, None), (1.0, None, 0.9),
            (0.7, 10, 0.8), (1.3, None, 0.5), (0, None, None), (1.0, 3, None))


def _dist_cases(seed: int = 0, vocab: int = 30, settings=SETTINGS):
    """(logits (vocab,), temperature, top_k, top_p): distinct logits, so no two tokens tie, except where the
    setting makes a case of its own: at temperature 0 the two largest logits are 1e-4 apart (a small temperature
    instead of 0 is not one-hot there); with top_k and no top_p, the k-th largest logit is tied with the next
    two (the task keeps every tied token)."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for t, k, p in settings:
        logits = torch.randn(vocab, generator=gen) * 2
        order = logits.argsort(descending=True)
        if t == 0:
            logits[order[1]] = logits[order[0]] - 1e-4
        elif k == 3 and p is None and vocab > 5:
            logits[order[k:k + 2]] = float(logits[order[k - 1]])
        cases.append((logits, t, k, p))
    return cases


@diagnosis
def _filtered(probs: torch.Tensor, top_k, top_p, *, p_side="reach", renorm=True, between=True, p_first=False,
              exactly_k=False) -> torch.Tensor:
    if p_first and top_p is not None:
        probs = _filtered(probs, None, top_p, p_side=p_side, renorm=renorm)
        return _filtered(probs, top_k, None, renorm=renorm)
    if top_k is not None:
        if exactly_k:
            keep = torch.zeros_like(probs, dtype=torch.bool)
            keep[torch.topk(probs, top_k).indices] = True
            probs = torch.where(keep, probs, 0.0)
        else:
            probs = torch.where(probs >= torch.topk(probs, top_k).values[-1], probs, 0.0)
        probs = probs / probs.sum() if renorm and between else probs
    if top_p is not None:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = sorted_p.cumsum(-1)
        keep_sorted = {"reach": cum - sorted_p < top_p, "below": cum < top_p, "tail": cum - sorted_p >= top_p}[p_side]
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[order] = keep_sorted
        probs = torch.where(keep, probs, 0.0)
    return probs / probs.sum() if renorm else probs


@diagnosis
def _dist_mistakes(logits, t, k, p) -> dict[str, torch.Tensor]:
    wrong = {}
    if t == 0:
        top = int(logits.argmax())
        for small in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
            wrong[f"temperature 0 means greedy: all the probability on the most likely token ({top}), a one-hot "
                  f"vector. Handle T = 0 before dividing: a small temperature such as {small:g} instead of 0 is "
                  "not one-hot when the two largest logits are close, as here."] = _filtered(
                torch.softmax(logits / small, -1), k, p)
        return wrong
    soft = torch.softmax(logits, -1)
    if t != 1:
        after = ("the temperature is applied after the softmax: divide the *logits* by T, then take the softmax, "
                 "softmax(logits / T). Dividing probabilities by T and renormalising changes nothing.")
        wrong[after] = _filtered(soft, k, p)
        wrong["the temperature is applied after the softmax, to the probabilities: divide the *logits* by T, "
              "then take the softmax, softmax(logits / T)."] = _filtered(soft / t, k, p, renorm=False)
        wrong["the logits are multiplied by T: divide them, softmax(logits / T), so that T < 1 sharpens and "
              "T > 1 flattens."] = _filtered(torch.softmax(logits * t, -1), k, p)
    tempered = torch.softmax(logits / t, -1)
    if k is not None or p is not None:
        wrong["the kept probabilities are not renormalised: divide by their sum so that they add up to 1."] = \
            _filtered(tempered, k, p, renorm=False)
    if k is not None and p is not None:
        wrong["top-p is measured on the probabilities before top-k's renormalisation (or applied before top-k, "
              "which keeps the same tokens): the order is temperature, then top-k, then renormalise (divide by "
              "the sum of what is kept), *then* top-p, so that p is a share of the top-k distribution."] = \
            _filtered(tempered, k, p, between=False)
    if k is not None:
        wrong[f"top-k with ties: the task keeps every token whose probability is at least the {k}-th largest "
              f"(here tokens tie at the {k}-th place, and all of them stay); yours keeps exactly {k} "
              "(compare with the k-th value, probs >= torch.topk(probs, k).values[-1])."] = \
            _filtered(tempered, k, p, exactly_k=True)
    if p is not None:
        wrong["top-p keeps the wrong side of the threshold: it stops *before* the token at which the cumulative "
              "probability reaches p. Keep the most likely tokens up to and including that one (the smallest "
              "set whose probability is at least p)."] = _filtered(tempered, k, p, p_side="below")
        wrong["top-p keeps the wrong side of the threshold: it keeps the unlikely tail. Keep the most likely "
              "tokens, sorted in descending order, until their cumulative probability reaches p."] = \
            _filtered(tempered, k, p, p_side="tail")
    if k is not None:
        wrong[f"top-k keeps the k *least* likely tokens; keep the {k} most likely (torch.topk)."] = \
            _filtered(torch.where(tempered <= torch.topk(tempered, k, largest=False).values[-1], tempered, 0.0),
                      None, p)
    return wrong


def _compare_dist(args, got) -> None:
    logits, t, k, p = args
    logits = logits.double()
    want = generate.distribution(logits, t, k, p).numpy()
    what = f"with temperature={t}, top_k={k}, top_p={p}"
    if t == 0 and got.shape == want.shape and np.isnan(got).any():
        fail(f"`next_token_distribution` {what} returned NaN: temperature 0 means greedy. Handle T = 0 before "
             "dividing (logits / 0 is inf, and its softmax NaN): return a one-hot vector on the most likely token.")
    mistakes = {m: w.numpy() for m, w in _dist_mistakes(logits, t, k, p).items()}
    if got.shape == want.shape and not np.isnan(got).any() and abs(got.sum() - 1) > 1e-3 and \
            not any(np.allclose(got, w, atol=ATOL, rtol=RTOL) for w in mistakes.values()):
        fail(f"`next_token_distribution` {what} returns probabilities that add up to {got.sum():.4f}, not 1.")
    compare_arrays(got, want, "next_token_distribution", what=what, mistakes=mistakes)


check_next_token_distribution = register(Check(
    name="next_token_distribution", reference=generate.distribution, cases=_dist_cases, output=as_float_array,
    compare=_compare_dist, passed="next_token_distribution applies temperature, top-k and top-p."))


# --- a seeded draw -------------------------------------------------------------------------------------------

def _sample_cases(seed: int = 0, vocab: int = 30, draws=((1.0, None, None, 0), (1.0, None, None, 1),
                                                         (0.7, 5, None, 2), (1.5, None, 0.9, 3), (0, None, None, 4),
                                                         (2.0, 8, 0.95, 5))):
    """(logits, temperature, top_k, top_p, seed); temperature 0 is greedy."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(vocab, generator=gen) * 2, t, k, p, s) for t, k, p, s in draws]


def _as_token(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, (torch.Tensor, np.ndarray)) else ""
        fail(f"`{name}` should return one token id as an int, as the task says, but it returned a "
             f"{type(value).__name__}{shape}: {value!r:.80}. Turn it into an int: int(torch.multinomial(...)).")
    return int(value)


def _compare_sample(args, got) -> None:
    logits, t, k, p, seed = args
    probs = generate.distribution(logits.double(), t, k, p)
    draw = lambda q: int(torch.multinomial(q, 1, generator=torch.Generator().manual_seed(seed)))  # noqa: E731
    if got in (draw(probs), draw(probs.float())):
        return
    what = f"`sample(logits, temperature={t}, top_k={k}, top_p={p}, seed={seed})` returned {got}"
    if t == 0:
        fail(f"{what}: temperature 0 means greedy, the most likely token ({int(logits.argmax())}).")
    if probs[got] == 0:
        fail(f"{what}, a token that top-k / top-p should have removed (its probability is 0).")
    fail(f"{what}, expected {draw(probs)}. Draw from next_token_distribution(...) with "
         "torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)), so that the same seed "
         "gives the same token.")


check_sample = register(Check(
    name="sample", reference=generate.sample, cases=_sample_cases, output=_as_token, compare=_compare_sample,
    passed="sample draws the same token as the reference for every seed."))


# --- greedy generation with a KV cache -----------------------------------------------------------------------

def _generate_cases(seeds=(0, 1), prompts=((1, 2, 3), (0,), (17, 2, 8, 1, 33)), n_new: int = 12):
    """(model, prompt, n_new): `gpt.tiny_model(seed)` (2 layers, 2 heads, d_model 16, 32 positions). Cases are
    chosen so that every greedy step wins by a clear margin (see tests/test_checks_gpt.py): a near-tie could
    flip between two correct float32 computations."""
    return [(gpt.tiny_model(seed), list(prompt), n_new) for seed in seeds for prompt in prompts]


def _as_generated(value: Any, name: str) -> list:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        fail(f"`{name}` should return two things, (tokens, cache), but it returned {type(value).__name__}.")
    tokens, cache = value
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        fail(f"`{name}` should return the new tokens as a list of ints, as the task says, but it returned "
             f"{type(tokens).__name__}: {tokens!r:.80} (append int(...) of each argmax to a list).")
    tokens = as_int_list(tokens, name)
    if not isinstance(cache, (list, tuple)) or not all(isinstance(kv, (list, tuple)) and len(kv) == 2 for kv in cache):
        fail(f"`{name}`: the cache should be a list with one (keys, values) pair per layer, as `step` returns them; "
             f"got {type(cache).__name__}.")
    return [tokens, [[as_float_array(k, name), as_float_array(v, name)] for k, v in cache]]


@diagnosis
def _greedy_variant(model, prompt, n_new, *, append="cat", offset=True):
    """What a typical mistake generates: the cache replaced or never updated, or positions not offset."""
    tokens = list(prompt)
    logits, cache = gpt.step(model, torch.tensor(tokens))
    first = cache
    for _ in range(n_new):
        tokens.append(int(logits[-1].argmax()))
        logits, new = gpt.step(model, torch.tensor(tokens[-1:]), len(tokens) - 1 if offset else 0, cache,
                               strict=False)
        cache = {"cat": gpt.append_cache(cache, new), "replace": new, "keep": first}[append]
    return tokens[len(prompt):]


def _variant_or_none(model, prompt, n_new, **mistake):
    """The mistake's tokens with `step`'s own checks switched off, or None if it cannot even run."""
    try:
        return _greedy_variant(model, prompt, n_new, **mistake)
    except (RuntimeError, ValueError):
        return None


def _positions(model, tokens, *args, **kwargs) -> int:
    """How many token positions one call of `step` runs."""
    return len(tokens)


def _compare_generate(args, got) -> None:
    model, prompt, n_new = args
    (tokens, cache), positions = got
    want_tokens, want_cache = generate.greedy_cached(model, prompt, n_new)
    what = f"`generate_greedy_cached(model, prompt={prompt}, n_new={n_new})`"
    if tokens != want_tokens:
        if len(tokens) != n_new:
            fail(f"{what} returned {len(tokens)} tokens, expected the {n_new} new ones (without the prompt).")
        if tokens in (_variant_or_none(model, prompt, n_new, append="replace"),
                      _variant_or_none(model, prompt, n_new, append="keep")):
            fail(f"{what}: the cache is not appended to. `step` returns the keys and values of the new token only; "
                 "append them to the cache (torch.cat along the position axis, 1) so that the next token can "
                 "attend to every earlier one.")
        if tokens == _variant_or_none(model, prompt, n_new, offset=False):
            fail(f"{what}: the positions are not offset. With a cache, the new token is not at position 0: pass "
                 "start = its position in the whole sequence (len(tokens) - 1) to `step`.")
        fail(f"{what} returned {tokens}, expected {want_tokens} (the tokens the uncached loop writes, taking the "
             "argmax of the last position's logits at each step).")
    if len(cache) != len(want_cache):
        fail(f"{what}: the cache has {len(cache)} layers, expected {len(want_cache)}.")
    needed = len(prompt) + n_new
    if positions > needed:
        fail(f"{what} ran {positions} token positions through `step`, but with a KV cache it needs "
             f"len(prompt) + n_new = {needed}: the prompt once, then each new token once. The cache is built but "
             "not used: run only the new token, `step(model, torch.tensor([tokens[-1]]), len(tokens) - 1, cache)`,"
             " not the whole sequence again.")
    for layer, ((k, v), (wk, wv)) in enumerate(zip(cache, want_cache)):
        if k.shape != tuple(wk.shape):
            fail(f"{what}: layer {layer}'s cached keys have shape {k.shape}, expected {tuple(wk.shape)} (n_heads, "
                 f"len(prompt) + n_new, d_head): the keys and values of every token, the last generated one "
                 "included. Run each new token through `step` and append what it returns.")
        compare_arrays(k, wk.double().numpy(), "generate_greedy_cached", what=f"(the cached keys of layer {layer})")
        compare_arrays(v, wv.double().numpy(), "generate_greedy_cached", what=f"(the cached values of layer {layer})")


check_generate_greedy_cached = register(Check(
    name="generate_greedy_cached", reference=generate.greedy_cached, cases=_generate_cases, output=_as_generated,
    watch=("llmcourse.gpt.step", _positions),
    compare=_compare_generate, passed="generate_greedy_cached writes what the uncached loop writes, with a cache."))
