"""Graded checks of exercise 03_attention: scaled dot-product attention, the causal mask, heads, a name mover.

Explained in chapter 03_attention; each check compares with `llmcourse.attention` (and `llmcourse.ioi`) on
seeded inputs and names the typical mistakes: no 1/sqrt(d_k), softmax over the wrong axis, masking after the
softmax, a mask of the wrong direction, heads split in the wrong order.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from llmcourse import attention, ioi
from llmcourse.checks.core import ATOL, Check, as_float_array, compare_arrays, diagnosis, fail, register

# torch's own attention (torch.nn.MultiheadAttention runs multi_head_attention_forward): using it scores 0
TORCH_ATTENTION = ("torch.nn.functional.scaled_dot_product_attention", "torch._C._nn.scaled_dot_product_attention",
                   "torch.nn.functional.multi_head_attention_forward")


def as_output_and_weights(value: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(output, weights) as two plain float arrays, or a message saying what was returned instead."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        fail(f"`{name}` should return two tensors, (output, weights), but it returned "
             f"{type(value).__name__}{f' of length {len(value)}' if isinstance(value, (tuple, list)) else ''}.")
    return as_float_array(value[0], name), as_float_array(value[1], name)


def as_bool_array(value: Any, name: str) -> np.ndarray:
    """A plain boolean array; a float 0/-inf mask or a 0/1 integer mask gets a message."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.bool:
            fail(f"`{name}` should return a boolean tensor (True where a token may look), but its dtype is "
                 f"{value.dtype}: build it with dtype=torch.bool, or compare, e.g. `torch.tril(torch.ones(n, n)) == 1`.")
        return value.numpy().copy()
    if isinstance(value, (list, np.ndarray)):
        array = np.array(value)
        if array.dtype == bool:
            return array
    fail(f"`{name}` should return a boolean torch tensor, but it returned a {type(value).__name__}.")


def as_head(value: Any, name: str) -> tuple[int, int]:
    """(layer, head) as two Python ints."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    if not ok:
        fail(f"`{name}` should return a pair of ints (layer, head), like (1, 2), but it returned {value!r:.80}")
    return int(value[0]), int(value[1])


# --- scaled dot-product attention --------------------------------------------------------------------

def _random_mask(gen: torch.Generator, seq: int) -> torch.Tensor:
    """A random (seq, seq) mask that keeps the diagonal, so every row and every column has a True."""
    return (torch.rand(seq, seq, generator=gen) < 0.5) | torch.eye(seq, dtype=torch.bool)


def _attention_cases(seed: int = 0, shapes=((1, 4, 8), (2, 5, 16), (2, 3, 6, 4)), masks=("none", "causal", "random")):
    """(q, k, v, mask) with q, k, v of shape (*batch, seq, d); d_v = d + 1 so that outputs and weights differ."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for shape in shapes:
        *batch, seq, d = shape
        q, k = (torch.randn(*batch, seq, d, generator=gen) * 2 for _ in range(2))
        v = torch.randn(*batch, seq, d + 1, generator=gen)
        for kind in masks:
            mask = {"none": None, "causal": attention.causal_mask(seq), "random": _random_mask(gen, seq)}[kind]
            cases.append((q, k, v, mask))
    return cases


@diagnosis
def _attention_mistakes(q, k, v, mask) -> dict[str, torch.Tensor]:
    """The weights that typical wrong implementations return (NaN included), each under its teaching message."""
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1)
    fill = (lambda s: s) if mask is None else (lambda s: s.masked_fill(~mask, float("-inf")))
    wrong = {
        "the scores are not scaled: divide q @ k^T by sqrt(d_k) (the last dimension of q) before the softmax, "
        "or the softmax saturates as d_k grows.": torch.softmax(fill(scores), dim=-1),
        "divide the scores by sqrt(d_k), not by d_k.": torch.softmax(fill(scores / d_k), dim=-1),
        "divide the scores by sqrt(d_k), the size of the queries and keys (q.shape[-1]), not of the values.":
            torch.softmax(fill(scores / math.sqrt(v.shape[-1])), dim=-1),
        "the softmax runs over the wrong axis: normalise over the keys (dim=-1), so that each query's "
        "weights (each row) sum to 1, not each key's (each column).": torch.softmax(fill(scores / math.sqrt(d_k)), dim=-2),
    }
    if mask is not None:
        wrong["the mask is applied after the softmax: set forbidden scores to -inf *before* the softmax, so that "
              "the allowed weights still sum to 1 (zeroing weights afterwards leaves rows that sum to less than 1)."] = \
            torch.softmax(scores / math.sqrt(d_k), dim=-1) * mask
        wrong["the mask is the wrong way round: True means *may attend* (as in torch), so fill the scores with -inf "
              "where the mask is False (`scores.masked_fill(~mask, float('-inf'))`), not where it is True."] = \
            torch.softmax((scores / math.sqrt(d_k)).masked_fill(mask, float("-inf")), dim=-1)
    return wrong


def _compare_attention(args, got) -> None:
    q, k, v, mask = (a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    out, weights = got
    want_out, want_weights = (t.numpy() for t in attention.scaled_dot_product_attention(q, k, v, mask))
    what = f"for q of shape {tuple(q.shape)}" + (" with a mask" if mask is not None else " without a mask")
    if weights.shape == want_out.shape and out.shape == want_weights.shape:
        fail(f"`scaled_dot_product_attention` {what}: return (output, weights) in that order.")
    mistakes = _attention_mistakes(q, k, v, mask)
    for message, wrong in mistakes.items():  # mistakes that produce NaN (a row with nothing to look at) first
        w = wrong.numpy()
        if weights.shape == w.shape and np.isnan(w).any() and np.allclose(weights, w, atol=ATOL, equal_nan=True):
            fail(f"`scaled_dot_product_attention` {what}, the weights: {message}")
    compare_arrays(weights, want_weights, "scaled_dot_product_attention", what=what + ", the weights",
                   mistakes={m: w.numpy() for m, w in mistakes.items()})
    compare_arrays(out, want_out, "scaled_dot_product_attention", what=what + " (the weights are right), the output")


check_scaled_dot_product_attention = register(Check(
    name="scaled_dot_product_attention", reference=attention.scaled_dot_product_attention, cases=_attention_cases,
    output=as_output_and_weights, compare=_compare_attention,
    forbidden=TORCH_ATTENTION,
    passed=f"scaled_dot_product_attention matches the reference, with and without masks (tolerance {ATOL})."))


# --- causal mask -------------------------------------------------------------------------------------

def _compare_causal_mask(args, got) -> None:
    (n,) = args
    want = attention.causal_mask(n).numpy()
    if got.shape != want.shape:
        fail(f"`causal_mask({n})` returned shape {got.shape}, expected {want.shape}.")
    if (got == want).all():
        return
    if (got == want.T).all():
        fail(f"`causal_mask({n})` is the wrong direction: row i is the query, so token i may look at columns "
             "0..i (True on and *below* the diagonal, `torch.tril`), never at later tokens.")
    if (got == np.tril(np.ones((n, n), dtype=bool), -1)).all():
        fail(f"`causal_mask({n})` leaves out the diagonal: a token may attend to itself (the first token has "
             "nothing else to look at).")
    if (got == ~want).all():
        fail(f"`causal_mask({n})` is inverted: True must mark what a token *may* look at (itself and earlier tokens).")
    fail(f"`causal_mask({n})` returned {got.astype(int).tolist()}, expected {want.astype(int).tolist()}.")


check_causal_mask = register(Check(
    name="causal_mask", reference=attention.causal_mask,
    cases=lambda sizes=(1, 3, 6): [(n,) for n in sizes],
    output=as_bool_array, compare=_compare_causal_mask, passed="causal_mask lets each token see itself and the past."))


# --- splitting and merging heads ---------------------------------------------------------------------

def _split_cases(seed: int = 0, shapes=((1, 3, 8, 2), (2, 5, 12, 3), (2, 4, 12, 4))):
    """(x, n_heads) with x of shape (batch, seq, d_model) for each (batch, seq, d_model, n_heads)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, s, d, generator=gen), h) for b, s, d, h in shapes]


def _compare_split(args, got) -> None:
    x, n_heads = args
    batch, seq, d_model = x.shape
    d_head = d_model // n_heads
    want = attention.split_heads(x, n_heads).double().numpy()
    xd = x.double()
    if got.shape != want.shape and got.shape == (batch, seq, n_heads, d_head):
        fail("`split_heads` returned (batch, seq, n_heads, d_head): transpose to (batch, n_heads, seq, d_head), "
             "so that each head's (seq, d_head) block is one matrix.")
    compare_arrays(got, want, "split_heads", what=f"for x of shape {tuple(x.shape)} and n_heads={n_heads}", mistakes={
        "the heads are split in the wrong order: view the last axis as (n_heads, d_head), not (d_head, n_heads), "
        "so that head h gets the contiguous columns h*d_head .. (h+1)*d_head - 1.":
            xd.view(batch, seq, d_head, n_heads).permute(0, 3, 1, 2).numpy(),
        "reshaping straight to (batch, n_heads, seq, d_head) mixes different tokens into one row: view as "
        "(batch, seq, n_heads, d_head) first, then swap the seq and head axes (transpose(1, 2)).":
            xd.reshape(batch, n_heads, seq, d_head).numpy(),
    })


check_split_heads = register(Check(
    name="split_heads", reference=attention.split_heads, cases=_split_cases,
    output=as_float_array, compare=_compare_split, passed="split_heads gives each head its own columns."))


def _merge_cases(seed: int = 0, shapes=((1, 2, 3, 4), (2, 3, 5, 4), (2, 4, 4, 3))):
    """(x,) with x of shape (batch, n_heads, seq, d_head)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=gen),) for shape in shapes]


def _compare_merge(args, got) -> None:
    (x,) = args
    b, h, s, dh = x.shape                                        # (batch, n_heads, seq, d_head)
    want = attention.merge_heads(x).double().numpy()
    xd = x.double()
    compare_arrays(got, want, "merge_heads", what=f"for x of shape {tuple(x.shape)}", mistakes={
        "reshaping (batch, n_heads, seq, d_head) straight to (batch, seq, d_model) mixes tokens: transpose(1, 2) "
        "first, so that each token's heads sit side by side.": xd.reshape(b, s, h * dh).numpy(),
        "the heads are merged in the wrong order: head h must end up in columns h*d_head .. (h+1)*d_head - 1 "
        "(the inverse of split_heads).": xd.permute(0, 2, 3, 1).reshape(b, s, h * dh).numpy(),
    })


check_merge_heads = register(Check(
    name="merge_heads", reference=attention.merge_heads, cases=_merge_cases,
    output=as_float_array, compare=_compare_merge, passed="merge_heads undoes split_heads."))


# --- multi-head attention from given weights ---------------------------------------------------------

def _mha_cases(seed: int = 0, shapes=((1, 4, 8, 2), (2, 6, 12, 3), (2, 5, 16, 4)), causal: bool = True):
    """(x, w_q, w_k, w_v, w_o, n_heads, mask) for each (batch, seq, d_model, n_heads)."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for b, s, d, h in shapes:
        x = torch.randn(b, s, d, generator=gen)
        w_q, w_k, w_v, w_o = (torch.randn(d, d, generator=gen) / math.sqrt(d) * 2 for _ in range(4))
        cases.append((x, w_q, w_k, w_v, w_o, h, attention.causal_mask(s) if causal else None))
    return cases


@diagnosis
def _mha_mistakes(x, w_q, w_k, w_v, w_o, n_heads, mask) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    batch, seq, d_model = x.shape
    d_head = d_model // n_heads

    def split_wrong(t):
        return t.view(batch, seq, d_head, n_heads).permute(0, 3, 1, 2)

    def merge_wrong(t):
        return t.permute(0, 2, 3, 1).reshape(batch, seq, d_model)

    q, k, v = (attention.split_heads(x @ w, n_heads) for w in (w_q, w_k, w_v))
    results = {}
    o, w = attention.scaled_dot_product_attention(split_wrong(x @ w_q), split_wrong(x @ w_k), split_wrong(x @ w_v), mask)
    results["the heads are split in the wrong order: head h must use the contiguous columns h*d_head .. "
            "(h+1)*d_head - 1 of x @ w_q (view as (batch, seq, n_heads, d_head), then transpose)."] = (merge_wrong(o) @ w_o, w)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_model)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, -1)
    results["each head scales its scores by sqrt(d_head), the size of *its* queries and keys, not by "
            "sqrt(d_model)."] = (attention.merge_heads(w @ v) @ w_o, w)
    o, w = attention.scaled_dot_product_attention(q, k, v, mask)
    results["the heads' merged output must still be multiplied by w_o, which mixes the heads."] = (attention.merge_heads(o), w)
    qt, kt, vt = (attention.split_heads(x @ m.T, n_heads) for m in (w_q, w_k, w_v))
    ot, wt = attention.scaled_dot_product_attention(qt, kt, vt, mask)
    results["the weights are applied transposed: they are given in the orientation x @ w (d_model in, d_model out), "
            "not torch.nn.Linear's (out, in), so use x @ w_q, not x @ w_q.T."] = (attention.merge_heads(ot) @ w_o.T, wt)
    if mask is not None:
        o, w = attention.scaled_dot_product_attention(q, k, v, None)
        results["the mask was not passed on: the tokens look at the future."] = (attention.merge_heads(o) @ w_o, w)
    return {m: (o.double().numpy(), w.double().numpy()) for m, (o, w) in results.items()}


def _compare_mha(args, got) -> None:
    x, w_q, w_k, w_v, w_o, n_heads, mask = args
    out, weights = got
    dbl = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    want_out, want_w = (t.double().numpy() for t in attention.multi_head_attention(*dbl))
    what = f"for x of shape {tuple(x.shape)} and n_heads={n_heads}"
    mistakes = _mha_mistakes(*dbl)
    compare_arrays(out, want_out, "multi_head_attention", what=what + ", the output",
                   mistakes={m: o for m, (o, _) in mistakes.items()})
    compare_arrays(weights, want_w, "multi_head_attention", what=what + ", the weights (batch, n_heads, seq, seq)",
                   mistakes={m: w for m, (_, w) in mistakes.items()})


check_multi_head_attention = register(Check(
    name="multi_head_attention", reference=attention.multi_head_attention, cases=_mha_cases,
    output=as_output_and_weights, compare=_compare_mha,
    forbidden=TORCH_ATTENTION,
    passed=f"multi_head_attention matches the reference (tolerance {ATOL})."))


# --- finding the name mover --------------------------------------------------------------------------

def _name_mover_cases(seeds=(1, 3, 12, 36), n_prompts: int = 8, n_layers: int = 2, n_heads: int = 4):
    """(attention, io_pos, s_pos) from `ioi.head_patterns`, one case per seed (seeds 12 and 36: averaging the weights
    of every query position, not the last one's, picks another head; seed 36: so does reading the first sentence
    alone)."""
    cases = []
    for seed in seeds:
        h = ioi.head_patterns(seed, n_prompts, n_layers, n_heads)
        # the heads shuffled and the weights jittered by the check's own generator (not in the grading kernel):
        # a case cannot be looked up among head_patterns' outputs to read which head was planted where
        gen = torch.Generator().manual_seed(7919 * (seed + 1))
        order = torch.randperm(n_layers * n_heads, generator=gen)
        attn = h["attention"].flatten(1, 2)[:, order].unflatten(1, (n_layers, n_heads))
        attn = attn * torch.exp(0.05 * torch.randn(attn.shape, generator=gen))
        cases.append((attn / attn.sum(-1, keepdim=True), h["io_pos"], h["s_pos"]))
    return cases


@diagnosis
def _name_mover_mistakes(attn, io_pos, s_pos) -> dict[str, list[tuple[int, int]]]:
    """The heads that typical wrong scorings pick, by mistake."""
    n, n_layers, n_heads = attn.shape[:3]
    rows = torch.arange(n)
    last = attn[rows, :, :, -1]                                  # (n, n_layers, n_heads, seq)
    to_io, to_s = last[rows, :, :, io_pos].mean(0), last[rows, :, :, s_pos].mean(0)
    head = lambda score: divmod(int(score.argmax()), n_heads)  # noqa: E731
    column = attn[rows, :, :, :, -1]                             # the wrong axis: how much each position looks at END
    every = attn.mean(3)                                         # every query position's weights, averaged
    flat = int((to_io - to_s).argmax())
    return {"io": [head(to_io)], "first": [head(last[0, :, :, io_pos[0]] - last[0, :, :, s_pos[0]])],
            "subject": [head(to_s - to_io), head(to_s)],
            "column": [head(column[rows, :, :, io_pos].mean(0) - column[rows, :, :, s_pos].mean(0))],
            "every": [head(every[rows, :, :, io_pos].mean(0) - every[rows, :, :, s_pos].mean(0))],
            "flat": [divmod(flat, n_layers), (flat % n_layers, flat // n_layers)]}


def _compare_name_mover(args, got) -> None:
    attn, io_pos, s_pos = args
    want = ioi.name_mover(attn, io_pos, s_pos)
    if got == want:
        return
    n, n_layers, n_heads = attn.shape[:3]
    shape = f"attention of shape {tuple(attn.shape)}"
    if not (0 <= got[0] < n_layers and 0 <= got[1] < n_heads):
        fail(f"`find_name_mover` returned {got}, which is not a head of a model with {n_layers} layers and {n_heads} "
             "heads per layer (layers and heads count from 0).")
    picks = {k: [tuple(h) for h in v] for k, v in _name_mover_mistakes(attn, io_pos, s_pos).items()}
    alone = (f" (Or, if you scored the first sentence alone: average each head's score over all {n} sentences.)"
             if got in picks["first"] else "")
    if got in picks["io"]:
        fail(f"`find_name_mover` returned {got}: that head puts the most weight on the indirect object, but about as "
             "much on the subject; it moves both names and cannot tell which is the answer. Score each head by "
             "(weight on IO) - (weight on S)." + alone)
    if got in picks["first"]:
        fail(f"`find_name_mover` returned {got}, the best head on the first sentence alone: average each head's "
             f"score (weight on IO - weight on S) over all {n} sentences, then take the best head.")
    if got in picks["subject"]:
        fail(f"`find_name_mover` returned {got}, the head that attends to the *subject* (the repeated name); "
             "the name mover attends to the indirect object, the name that appears once.")
    if got in picks["column"]:
        fail(f"`find_name_mover` returned {got}: you read a column of the attention matrix. attention[..., i, j] is "
             "how much query i looks at key j, so the last position's weights are the last *row*, attention[..., -1, :].")
    if got in picks["every"]:
        fail(f"`find_name_mover` returned {got}: you averaged the weights of every query position. Only the last "
             "position ('to') predicts the next name: read its row, attention[..., -1, :], as the exercise says.")
    if got in picks["flat"]:
        fail(f"`find_name_mover` returned {got}: the flat index of the best head was turned into (layer, head) the "
             f"wrong way. With {n_heads} heads per layer, flat index i is layer i // n_heads, head i % n_heads.")
    fail(f"`find_name_mover` returned {got} for {shape}, expected {want}.")


check_find_name_mover = register(Check(
    name="find_name_mover", reference=ioi.name_mover, cases=_name_mover_cases,
    output=as_head, compare=_compare_name_mover, passed="find_name_mover finds the head that moves the right name."))


# --- the name mover of the trained model, graded by effect ----------------------------------------------------

SHARE = 0.5  # the chosen head's ablation must cost at least this share of what the costliest single head's costs


def _in_model_cases(seeds=(7,), n: int = 24):
    """(attention, io_pos, s_pos, end) of chapter 03's trained model on n sentences of every template, padded
    (`ioi.toy_attention`), one case per seed. On seed 7, reading the last row instead of each sentence's "to"
    (padding for most of them), scoring the weight on the IO alone and averaging every query position each pick
    another head."""
    cases = []
    for seed in seeds:
        toy = ioi.toy_attention(n, seed)
        cases.append((toy["attention"], toy["io_pos"], toy["s_pos"], toy["end"]))
    return cases


def _compare_in_model(args, got) -> None:
    attn, io_pos, s_pos, end = args
    n, n_layers, n_heads = attn.shape[:3]
    if not (0 <= got[0] < n_layers and 0 <= got[1] < n_heads):
        fail(f"`find_name_mover_in_model` returned {got}, which is not a head of the trained model: it has "
             f"{n_layers} layers of {n_heads} heads (counted from 0).")
    effects = ioi.toy_head_effects()
    drop = effects["drop"]                                       # (n_layers, n_heads): what each head's ablation costs
    mine, best = float(drop[got]), float(drop.max())
    if mine >= SHARE * best:
        return
    said = (f"`find_name_mover_in_model` returned head {got[0]}.{got[1]}, but switching it off lowers the trained "
            f"model's logit difference logit(IO) - logit(S) only by {mine:.2f} (from {effects['logit_diff']:.2f}), "
            f"while one of its heads costs {best:.2f} when switched off: the name mover must cost at least "
            f"{SHARE:.0%} of that.")
    sentences = torch.arange(n)
    head = lambda score: divmod(int(score.argmax()), n_heads)  # noqa: E731
    weights_to = lambda rows, pos: rows[sentences, :, :, pos].mean(0)  # noqa: E731  (n_layers, n_heads)
    at_end = attn[sentences, :, :, end]                          # (n, n_layers, n_heads, seq): each sentence's "to"
    at_last = attn[:, :, :, -1]
    if got == head(weights_to(at_last, io_pos) - weights_to(at_last, s_pos)):
        fail(f"{said} You read the last row of every sentence, attention[..., -1, :]. These sentences have different "
             "lengths and are padded, so the last position is the final \"to\" only for the longest ones: read row "
             "end[p] of sentence p.")
    if got == head(weights_to(at_end, io_pos)):
        fail(f"{said} That head gives the indirect object the most weight, but about as much to the subject: "
             "score each head by (weight on IO) - (weight on S).")
    if got in (head(weights_to(at_end, s_pos)), head(weights_to(at_end, s_pos) - weights_to(at_end, io_pos))):
        fail(f"{said} That head attends to the *subject*; the name mover attends to the indirect object.")
    every = attn.mean(3)                                         # every query position's weights, averaged
    if got == head(weights_to(every, io_pos) - weights_to(every, s_pos)):
        fail(f"{said} You averaged the weights of every query position; only each sentence's final \"to\" "
             "predicts the name: read row end[p].")
    fail(f"{said} Score each head by its weight on the IO minus its weight on S, read in row end[p] of each "
         "sentence p and averaged over the sentences, and return the best (layer, head).")


check_find_name_mover_in_model = register(Check(
    name="find_name_mover_in_model", reference=ioi.name_mover, cases=_in_model_cases,
    output=as_head, compare=_compare_in_model,
    passed=f"find_name_mover_in_model finds the trained model's name mover: switching it off costs at least "
           f"{SHARE:.0%} of what the costliest head costs."))
