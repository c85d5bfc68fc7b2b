"""Graded checks of exercise 04_ffn_memory: the FFN, its keys and values, promoted tokens, ablation, finding a fact.

Explained in chapter 04_ffn_memory; each check compares with `llmcourse.ffn` on seeded inputs and names the
typical mistakes: a bias forgotten, a matrix used the wrong way round (W1 is (d_model, d_ff): x @ W1), the
activation applied after W2, memories zeroed along the wrong axis, memories chosen by activation or by value alone.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from llmcourse import facts, ffn
from llmcourse.checks.core import ATOL, Check, as_float_array, as_int_list, compare_arrays, diagnosis, fail, register

# --- shared inputs -----------------------------------------------------------------------------------------


def _weights(gen: torch.Generator, d_model: int, d_ff: int) -> tuple[torch.Tensor, ...]:
    """W1 (d_model, d_ff), b1 (d_ff,), W2 (d_ff, d_model), b2 (d_model,): about half the memories fire."""
    W1 = torch.randn(d_model, d_ff, generator=gen) / d_model ** 0.5
    b1 = torch.randn(d_ff, generator=gen) * 0.5
    W2 = torch.randn(d_ff, d_model, generator=gen) / d_ff ** 0.5
    b2 = torch.randn(d_model, generator=gen) * 0.5
    return W1, b1, W2, b2


def _describe(x: torch.Tensor, W1: torch.Tensor) -> str:
    return f"for x of shape {tuple(x.shape)} and W1 of shape {tuple(W1.shape)}"


TORCH_LINEAR = ("torch.nn.Linear.forward",)  # a layer of torch's that does the multiplication: using it scores 0

ORIENTATION = ("W1 has shape (d_model, d_ff) and W2 (d_ff, d_model): compute x @ W1 and then @ W2, as in the formula "
               "ReLU(x W1 + b1) W2 + b2. (torch.nn.Linear stores its weight the other way round, (out, in), which is "
               "why its code says x @ weight.T; here the matrices are given in the formula's orientation.)")


# --- the FFN -----------------------------------------------------------------------------------------------

def _ffn_cases(seed: int = 0, shapes=((2, 3, 8, 20), (5, 4, 12), (1, 6, 16))):
    """(x, W1, b1, W2, b2) for each (*batch, d_model, d_ff). d_model != d_ff, so that a matrix used the wrong way
    round is a shape error that says so (`crash_hint`); with square matrices (a hidden case) it is a wrong number,
    which the mistakes below name."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for *batch, d_model, d_ff in shapes:
        cases.append((torch.randn(*batch, d_model, generator=gen), *_weights(gen, d_model, d_ff)))
    return cases


@diagnosis
def _ffn_mistakes(x, W1, b1, W2, b2) -> dict[str, torch.Tensor]:
    relu = torch.relu
    wrong = {
        "the bias b1 is missing: the keys are matched as x @ W1 + b1, before the ReLU.": relu(x @ W1) @ W2 + b2,
        "the bias b2 is missing: add b2 after multiplying by W2.": relu(x @ W1 + b1) @ W2,
        "the ReLU is applied after W2: it belongs between the two matrices, ReLU(x @ W1 + b1) @ W2 + b2, so that "
        "each memory's activation is zero or positive (the output itself may be negative).":
            relu((x @ W1 + b1) @ W2 + b2),
        "the ReLU is missing: without it the two matrices collapse into one linear map, and a memory could fire "
        "negatively. Apply torch.relu to x @ W1 + b1.": (x @ W1 + b1) @ W2 + b2,
        "use the ReLU of the formula, not GELU.": torch.nn.functional.gelu(x @ W1 + b1) @ W2 + b2,
    }
    if W1.shape[0] == W1.shape[1]:
        wrong[ORIENTATION] = relu(x @ W1.T + b1) @ W2.T + b2
        wrong["W1 is used the wrong way round: " + ORIENTATION] = relu(x @ W1.T + b1) @ W2 + b2
        wrong["W2 is used the wrong way round: " + ORIENTATION] = relu(x @ W1 + b1) @ W2.T + b2
    return wrong


def _compare_ffn(args, got) -> None:
    dbl = tuple(a.double() for a in args)
    want = ffn.ffn(*dbl).numpy()
    compare_arrays(got, want, "ffn", what=_describe(*args[:2]),
                   mistakes={m: w.numpy() for m, w in _ffn_mistakes(*dbl).items()})


SHAPES_HINT = ("Check the shapes: x is (..., d_model), W1 (d_model, d_ff), b1 (d_ff,), W2 (d_ff, d_model), b2 (d_model,). "
               "A matrix used the wrong way round (W1.T, W2.T) or multiplied in the wrong order gives this error.")

check_ffn = register(Check(
    name="ffn", reference=ffn.ffn, cases=_ffn_cases, output=as_float_array, compare=_compare_ffn,
    forbidden=TORCH_LINEAR,
    crash_hint=SHAPES_HINT + " " + ORIENTATION,
    passed=f"ffn computes ReLU(x W1 + b1) W2 + b2 (tolerance {ATOL})."))


# --- keys --------------------------------------------------------------------------------------------------

def _key_cases(seed: int = 0, shapes=((2, 3, 8, 20), (5, 4, 12))):
    return [case[:3] for case in _ffn_cases(seed, shapes)]


def _compare_keys(args, got) -> None:
    x, W1, b1 = (a.double() for a in args)
    mistakes = {"the bias b1 is missing: compute ReLU(x @ W1 + b1).": torch.relu(x @ W1),
                "the ReLU is missing: a key that does not match (a negative score) must give activation 0.": x @ W1 + b1}
    if W1.shape[0] == W1.shape[1]:
        mistakes["W1 is used the wrong way round: memory i's key is *column* i of W1, (d_model, d_ff), so the "
                 "activations are x @ W1 (one number per column)."] = torch.relu(x @ W1.T + b1)
    compare_arrays(got, ffn.key_activations(x, W1, b1).numpy(), "key_activations", what=_describe(x, W1),
                   mistakes={m: w.numpy() for m, w in mistakes.items()})


check_key_activations = register(Check(
    name="key_activations", reference=ffn.key_activations, cases=_key_cases, output=as_float_array,
    forbidden=TORCH_LINEAR,
    crash_hint="Check the shapes: x is (..., d_model) and W1 (d_model, d_ff), whose *columns* are the keys: x @ W1 "
               "gives one number per memory (W1 used the wrong way round, W1.T, gives this error).",
    compare=_compare_keys, passed="key_activations gives one number per memory: how well x matches its key."))


# --- weighted values ---------------------------------------------------------------------------------------

def _values_cases(seed: int = 0, shapes=((3, 10, 6), (12, 4), (2, 2, 6, 5))):
    """(activations, W2): activations (*batch, d_ff) from a ReLU (zeros included), W2 (d_ff, d_model)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.relu(torch.randn(*batch, d_ff, generator=gen)), torch.randn(d_ff, d_model, generator=gen))
            for *batch, d_ff, d_model in shapes]


def _compare_values(args, got) -> None:
    a, W2 = (t.double() for t in args)
    want = ffn.weighted_values(a, W2).numpy()
    what = f"for activations of shape {tuple(a.shape)} and W2 of shape {tuple(W2.shape)}"
    if got.shape == want.shape[:-2] + want.shape[-1:]:
        fail(f"`weighted_values` {what} returned shape {got.shape}: that is already the sum over the memories "
             f"(activations @ W2). Keep each memory's contribution separate: shape {want.shape}, one row per memory.")
    mistakes = {}
    if W2.shape[0] == W2.shape[1]:
        mistakes["memory i's value is *row* i of W2 (d_ff, d_model): scale row i by activation i, "
                 "activations[..., :, None] * W2."] = (a[..., None, :] * W2).numpy()
        mistakes["W2 is used the wrong way round: the values are the rows of W2, (d_ff, d_model)."] = \
            (a[..., :, None] * W2.T).numpy()
    compare_arrays(got, want, "weighted_values", what=what, mistakes=mistakes)


check_weighted_values = register(Check(
    name="weighted_values", reference=ffn.weighted_values, cases=_values_cases, output=as_float_array,
    crash_hint="Check the shapes: activations are (..., d_ff) and W2 (d_ff, d_model), memory i's value is *row* i of "
               "W2. Give the activations an axis of size 1 at the end, (..., d_ff, 1), so that row i of W2 is scaled "
               "by activation i.",
    compare=_compare_values, passed="weighted_values splits the FFN's output into one vector per memory."))


# --- promoted tokens ---------------------------------------------------------------------------------------

def _promoted_cases(seed: int = 0, ks=(3, 1, 5), vocab: int = 30, d_model: int = 8):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(d_model, generator=gen), torch.randn(vocab, d_model, generator=gen), k) for k in ks]


def _compare_promoted(args, got) -> None:
    value, unembedding, k = args
    logits = unembedding.double() @ value.double()
    want = ffn.promoted_tokens(value.double(), unembedding.double(), k)
    if got == want:
        return
    if len(got) != k:
        fail(f"`promoted_tokens(value, unembedding, k={k})` returned {len(got)} token ids, expected {k}.")
    if got == torch.topk(-logits, k).indices.tolist() or set(got) == set(torch.topk(-logits, k).indices.tolist()):
        fail(f"`promoted_tokens` returned the {k} tokens the value pushes *down* (the smallest of unembedding @ value); "
             "take the largest: torch.topk(logits, k).")
    if set(got) == set(want):
        fail(f"`promoted_tokens` returned the right tokens in the wrong order: {got}; put the most promoted first, "
             f"{want}.")
    fail(f"`promoted_tokens` returned {got}, expected {want}: each token's logit changes by unembedding[token] . value, "
         "so compute unembedding @ value (vocab,) and take the k largest.")


check_promoted_tokens = register(Check(
    name="promoted_tokens", reference=ffn.promoted_tokens, cases=_promoted_cases, output=as_int_list,
    compare=_compare_promoted, passed="promoted_tokens reads a value vector through the unembedding."))


# --- ablation ----------------------------------------------------------------------------------------------

def _ablate_cases(seed: int = 0, shapes=((10,), (4, 10), (2, 4, 10)), memories=((2,), (0, 3), (1, 4, 9))):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(*shape, generator=gen) + 0.5, list(chosen)) for shape, chosen in zip(shapes, memories)]


def _as_ablated(value: Any, name: str) -> np.ndarray:
    if value is None:
        fail(f"`{name}` returned None: return the activations with the chosen memories set to zero "
             "(changing the tensor in place and returning nothing loses it when the function is used in a hook).")
    return as_float_array(value, name)


def _compare_ablate(args, got) -> None:
    got, (a_after,) = got
    a, memories = args
    want = ffn.ablate_memories(a.double(), memories).numpy()
    what = f"for activations of shape {tuple(a.shape)} and memories {memories}"
    mistakes = {}
    keep_only = torch.zeros_like(a.double())
    keep_only[..., memories] = a.double()[..., memories]
    mistakes["it keeps the chosen memories and zeroes all the others: ablating means switching the chosen ones "
             "off, activations[..., memories] = 0."] = keep_only.numpy()
    if a.dim() > 1 and max(memories) < a.shape[0]:
        rows = a.double().clone()
        rows[memories] = 0
        mistakes["it zeroes whole rows (positions in the batch); memories are the *last* axis: "
                 "activations[..., memories] = 0."] = rows.numpy()
    compare_arrays(got, want, "ablate_memories", what=what, mistakes=mistakes)
    if not np.array_equal(a_after, a.double().numpy()):
        fail(f"`ablate_memories` {what} returns the right values but changed the caller's activations too: the input "
             "must stay as it was (the model may use it again). Clone first (`activations.clone()`) and zero the "
             "memories in the copy.")


check_ablate_memories = register(Check(
    name="ablate_memories", reference=ffn.ablate_memories, cases=_ablate_cases, output=_as_ablated,
    compare=_compare_ablate, inputs_after=(0,), passed="ablate_memories switches the chosen memories off and leaves the rest."))


# --- finding the memories that store a fact ----------------------------------------------------------------

def _with_suppressors(m: dict, subjects, per_subject: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """W1, W2 of `planted_memories` with, for each subject, `per_subject` of its noise memories turned into
    suppressors: keys that fire on the subject, values that push its answer *down* (real models have such memories
    too). Ranking memories by the size of their effect, whatever its sign, picks them."""
    W1, W2 = m["W1"].clone(), m["W2"].clone()
    stored = {i for memories in m["stored"].values() for i in memories}
    noise = [i for i in range(W1.shape[1]) if i not in stored and float(m["b1"][i]) == -1.0]
    for s in subjects:
        for _ in range(per_subject):
            if not noise:
                break
            i = noise.pop(0)
            W1[:, i] = m["embedding"][s] / 3 * 1.2
            W2[i] = -m["unembedding"][m["answers"][s]] * 0.5
    return W1, W2


def _fact_cases(seeds=(0, 1), subjects=(0, 1, 2), k: int = 3):
    """(x, W1, b1, W2, unembedding, answer, k) from `ffn.planted_memories` with suppressors added: x is a subject's
    direction plus noise."""
    cases = []
    for seed in seeds:
        m = ffn.planted_memories(seed)
        m["W1"], m["W2"] = _with_suppressors(m, subjects)
        gen = torch.Generator().manual_seed(1000 + seed)
        for s in subjects:
            x = m["embedding"][s] + 0.1 * torch.randn(m["embedding"].shape[1], generator=gen)
            cases.append((x, m["W1"], m["b1"], m["W2"], m["unembedding"], m["answers"][s], k))
    return cases


def _compare_fact(args, got) -> None:
    x, W1, b1, W2, unembedding, answer, k = args
    d_ff = W1.shape[1]
    if len(got) != k:
        fail(f"`find_fact_memories` returned {len(got)} memories, expected k = {k}.")
    if len(set(got)) != k or not all(0 <= m < d_ff for m in got):
        fail(f"`find_fact_memories` returned {got}: expected {k} different memory indices between 0 and {d_ff - 1}.")
    b2 = torch.zeros(W2.shape[1])                                # planted_memories has no output bias
    p = lambda ablated=(): ffn.answer_probability(x, W1, b1, W2, b2, unembedding, answer, ablated)  # noqa: E731
    want = ffn.fact_memories(x, W1, b1, W2, unembedding, answer, k)
    before, after, best = p(), p(got), p(want)
    if before - after >= 0.9 * (before - best):
        return
    activations = ffn.key_activations(x, W1, b1)
    alignment = W2 @ unembedding[answer]
    top = lambda score: set(torch.topk(score, k).indices.tolist())  # noqa: E731
    said = (f"ablating memories {sorted(got)} takes p(answer) from {before:.3f} to {after:.3f}, but the right {k} "
            f"memories take it to {best:.3f}")
    if set(got) == top(activations):
        fail(f"`find_fact_memories`: {said}. You chose the memories that fire most on this input, but their values "
             "do not point at the answer: weight each memory's activation by how much its value raises the answer's "
             "logit, activation_i * (W2[i] . unembedding[answer]).")
    if set(got) == top(alignment):
        fail(f"`find_fact_memories`: {said}. You chose the memories whose values point at the answer, but their "
             "keys do not fire on this input (activation 0), so switching them off changes nothing: multiply by the "
             "key activations.")
    if set(got) == top((activations * alignment).abs()) or after > before:
        fail(f"`find_fact_memories`: {said}. You chose memories that push the answer *down* (ranked by the size of "
             "their effect, whatever its sign?): switching them off makes the answer more likely. A memory stores "
             "the fact if it *raises* the answer's logit: take the largest contributions, not the largest in absolute "
             "value.")
    if set(got) == top((x @ W1 + b1) * alignment):
        fail(f"`find_fact_memories`: {said}. You multiplied the *pre-activation* x @ W1 + b1 by the alignment: apply "
             "the ReLU first. A memory whose key does not fire (negative pre-activation) adds nothing, whatever its value.")
    if set(got) == top(-activations * alignment):
        fail(f"`find_fact_memories`: {said}. You took the memories that push the answer *down* most: take the "
             "largest contributions (torch.topk), not the smallest.")
    fail(f"`find_fact_memories`: {said}. Score each memory by its contribution to the answer's logit, "
         "activation_i * (W2[i] . unembedding[answer]), and take the k largest.")


check_find_fact_memories = register(Check(
    name="find_fact_memories", reference=ffn.fact_memories, cases=_fact_cases, output=as_int_list,
    compare=_compare_fact, passed="find_fact_memories finds the memories whose ablation erases the fact."))


# --- the fact's memories in the trained model, graded by effect -----------------------------------------------

FALL = 0.8    # p(answer) must fall by at least this share of what the k largest contributions make it fall
KEEP = 0.9    # while the model still gets this share of the other capitals and of the filler words right


def as_memory_pairs(value: Any, name: str) -> list[tuple[int, int]]:
    """A plain list of (layer, memory) pairs of ints."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in p) for p in value)
    if not ok:
        fail(f"`{name}` should return a list of (layer, memory) pairs of ints, like [(1, 37), (0, 5)], "
             f"but it returned {type(value).__name__}: {value!r:.80}")
    return [(int(a), int(b)) for a, b in value]


def _model_cases(countries=("Poland",), k: int = 20):
    """(inputs, k) with `facts.memory_inputs` of chapter 04's trained model, one case per country."""
    return [(facts.memory_inputs(c), k) for c in countries]


@diagnosis
def _model_mistakes(inputs: dict, k: int) -> dict[str, list[tuple[int, int]]]:
    """The k pairs that typical wrong rankings choose, each under its teaching message."""
    pre = torch.einsum("ld,ldf->lf", inputs["x"].double(), inputs["W1"].double()) + inputs["b1"].double()
    fires = torch.relu(pre)                                                  # (n_layers, d_ff)
    points = torch.einsum("lfd,ld->lf", inputs["W2"].double(), inputs["directions"].double())
    mine = fires * points
    top = lambda score: ffn.top_memories(score, k)  # noqa: E731
    return {
        "You ranked the memories by the size of their contribution, whatever its sign: some of them push the answer "
        "*down*, and switching those off makes it more likely. Take the largest contributions, not the largest in "
        "absolute value.": top(mine.abs()),
        "You took the contributions that push the answer down most: take the largest (torch.topk), not the "
        "smallest.": top(-mine),
        "You chose the memories that fire most, but many of their values do not point at the answer: weight each "
        "activation by W2_l[i] . directions_l.": top(fires),
        "You chose the memories whose values point at the answer, but many of their keys do not fire on this prompt "
        "(activation 0), so switching them off changes nothing: multiply by the key activations.": top(points),
        "You multiplied the *pre-activation* x @ W1 + b1 by the alignment: apply the ReLU first (a memory whose key "
        "does not fire adds nothing).": top(pre * points),
    }


def _check_pairs(got: list[tuple[int, int]], k: int, n_layers: int, d_ff: int) -> None:
    name = "find_memories_in_model"
    if len(got) != k:
        fail(f"`{name}` returned {len(got)} pairs, expected k = {k}.")
    if len(set(got)) != k:
        fail(f"`{name}` returned the same (layer, memory) pair twice: {got!r:.120}")
    if all(0 <= layer < n_layers and 0 <= memory < d_ff for layer, memory in got):
        return
    swapped = (" They look like (memory, layer) pairs: return (layer, memory)."
               if all(0 <= layer < d_ff and 0 <= memory < n_layers for layer, memory in got) else "")
    fail(f"`{name}` returned {got[:3]}..., which are not memories of a model with {n_layers} layers of {d_ff} "
         f"memories (layers count from 0 to {n_layers - 1}, memories from 0 to {d_ff - 1}).{swapped} If you ranked "
         f"the flattened (n_layers, d_ff) scores, flat index i is layer i // d_ff and memory i % d_ff.")


def _compare_model(args, got) -> None:
    inputs, k = args
    n_layers, d_ff = len(inputs["x"]), inputs["W1"].shape[-1]
    _check_pairs(got, k, n_layers, d_ff)
    country = inputs["country"]
    best = sorted(facts.top_fact_memories(inputs, k))
    mistakes = {m: sorted(pairs) for m, pairs in _model_mistakes(inputs, k).items()}
    choices = [[], best] + [c for c in mistakes.values() if c != best]      # one call, so the kit can replay it
    effects = facts.erasure_effects(country, choices)
    mine = sorted(got)
    effect = effects[choices.index(mine)] if mine in choices else facts.erasure_effects(country, [mine])[0]
    intact, reference = effects[0], effects[1]
    fell, needed = intact["p"] - effect["p"], FALL * (intact["p"] - reference["p"])
    if fell >= needed and effect["other capitals"] >= KEEP and effect["filler"] >= KEEP:
        return
    capital = facts.COUNTRIES[country][0]
    said = (f"`find_memories_in_model` for {country}: with your {k} memories switched off, p({capital}) goes from "
            f"{intact['p']:.3f} to {effect['p']:.3f}; the {k} memories of largest contribution take it to "
            f"{reference['p']:.3f}, and yours must achieve at least {FALL:.0%} of that fall.")
    if fell >= needed:
        fail(f"`find_memories_in_model` for {country}: your {k} memories erase {capital}, but the model also "
             f"loses the rest: it now gets {effect['other capitals']:.0%} of the other capitals and "
             f"{effect['filler']:.0%} of the filler words right (at least {KEEP:.0%} of each must stay). Choose the "
             "memories that raise this answer, not the ones that matter everywhere.")
    for message, pairs in mistakes.items():
        if mine == pairs:
            fail(f"{said} {message}")
    fail(f"{said} Score memory i of layer l by its key activation times W2_l[i] . directions_l, and return the k "
         "largest over all the layers as (layer, memory) pairs.")


check_find_memories_in_model = register(Check(
    name="find_memories_in_model", reference=facts.top_fact_memories, cases=_model_cases,
    output=as_memory_pairs, compare=_compare_model,
    passed=f"find_memories_in_model erases the fact in the trained model: p(answer) falls at least {FALL:.0%} as "
           f"far as with the k largest contributions, and at least {KEEP:.0%} of the other capitals and of the "
           "filler words stay right."))
