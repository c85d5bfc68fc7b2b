"""Graded checks of exercise 08_your_gpt: SmolLM2's parts written by the student, then the whole model.

Explained in chapter 08_your_gpt; each check compares with `llmcourse.llama` on seeded inputs and names the typical
mistakes: RMSNorm with the mean subtracted (that is LayerNorm), RoPE rotating interleaved pairs instead of the two
halves, rotating the wrong way or forgetting the offset of cached positions, key/value heads tiled instead of
repeated in place, no causal mask, SiLU on the wrong branch of SwiGLU, RoPE applied to the values. The real
weights' check compares the student's SmolLM2 with transformers' own forward (`llama.hf_logits`), computed where
the student's code cannot reach it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from llmcourse import llama
from llmcourse.checks.core import (ATOL, RTOL, Check, as_float_array, compare_arrays, fail, from_json_dict,
                                   register)

# --- RMSNorm --------------------------------------------------------------------------------------------------


def _rms_cases(seed: int = 0, shapes=((5, 8), (2, 3, 16), (1, 6)), eps=(1e-5, 1e-6, 1e-5)):
    """(x (..., d), weight (d,), eps): inputs with a mean far from 0, so that subtracting it shows."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=gen) * 2 + 1.5, 1 + 0.5 * torch.randn(shape[-1], generator=gen), e)
            for shape, e in zip(shapes, eps)]


def _compare_rms(args, got) -> None:
    x, weight, eps = args
    x, weight = x.double(), weight.double()
    centred = x - x.mean(-1, keepdim=True)
    compare_arrays(got, llama.rms_norm(x, weight, eps).numpy(), "rms_norm", mistakes={
        "the mean is subtracted first: that is LayerNorm. RMSNorm only divides by the root mean square, "
        "sqrt(mean(x**2) + eps), and multiplies by the weight (no mean, no bias).":
            llama.rms_norm(centred, weight, eps).numpy(),
        "the weight is missing: multiply the normalised x by `weight` (one gain per feature).":
            llama.rms_norm(x, torch.ones_like(weight), eps).numpy(),
        "the variance is used in place of the mean square: RMSNorm divides by sqrt(mean(x**2) + eps), "
        "with no mean taken away.": (x / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight).numpy()})


check_rms_norm = register(Check(
    name="rms_norm", reference=llama.rms_norm, cases=_rms_cases, output=as_float_array, compare=_compare_rms,
    passed=f"rms_norm divides by the root mean square and scales (tolerance {ATOL} + {RTOL} relative)."))


# --- RoPE -----------------------------------------------------------------------------------------------------


def _rope_cases(seed: int = 0, shapes=((2, 5, 8), (3, 4, 16), (1, 1, 4)), starts=(0, 7, 30),
                thetas=(10000.0, 100.0, 10000.0)):
    """(x (heads, seq, d_head), start, theta)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=gen), s, t) for shape, s, t in zip(shapes, starts, thetas)]


def _pairs_interleaved(x, start, theta):
    """RoPE on neighbouring coordinates (0, 1), (2, 3), ...: the reference on x's coordinates reordered."""
    d = x.shape[-1]
    order = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
    out = torch.empty_like(x)
    out[..., order] = llama.rope(x[..., order], start, theta)
    return out


def _backwards(x, start, theta):
    """Rotation by minus the angle: the reference on x with its second half negated, negated back."""
    half = x.shape[-1] // 2
    sign = torch.cat([torch.ones(half, dtype=x.dtype), -torch.ones(x.shape[-1] - half, dtype=x.dtype)])
    return llama.rope(x * sign, start, theta) * sign


def _compare_rope(args, got) -> None:
    x, start, theta = args
    x = x.double()
    mistakes = {
        "neighbouring coordinates (0, 1), (2, 3), ... are rotated together; SmolLM2 (and transformers' Llama) "
        "pairs coordinate i of the first half with coordinate i of the second half (i and i + d_head/2).":
            _pairs_interleaved(x, start, theta).numpy(),
        "the rotation goes the wrong way: the first half becomes x1 cos - x2 sin and the second x2 cos + x1 sin.":
            _backwards(x, start, theta).numpy(),
        "the frequencies are reversed: pair i turns by theta ** (-2i / d_head), so pair 0 turns fastest (one "
        "radian per position).": _reversed_freqs(x, start, theta),
    }
    if start:
        mistakes["the positions start at 0: the tokens are at positions start, start + 1, ... (a cache holds the "
                 "earlier ones)."] = llama.rope(x, 0, theta).numpy()
    compare_arrays(got, llama.rope(x, start, theta).numpy(), "rope",
                   what=f"for x of shape {tuple(x.shape)}, start = {start}, theta = {theta:g}", mistakes=mistakes)


def _reversed_freqs(x, start, theta) -> np.ndarray:
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half - 1, -1, -1, dtype=torch.float64) * 2 / x.shape[-1])
    angle = torch.arange(start, start + x.shape[1], dtype=torch.float64)[:, None] * freqs
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], -1).numpy()


check_rope = register(Check(
    name="rope", reference=llama.rope, cases=_rope_cases, output=as_float_array, compare=_compare_rope,
    passed="rope rotates each pair of coordinates by its position's angle."))


# --- grouped-query attention ----------------------------------------------------------------------------------


def _gqa_cases(seed: int = 0, shapes=((4, 2, 5, 5, 8), (6, 2, 3, 7, 4), (3, 3, 4, 4, 8), (4, 1, 1, 6, 8))):
    """(q (n_heads, n, d_head), k, v (n_kv_heads, t, d_head)) for each (n_heads, n_kv_heads, n, t, d_head)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(h, n, d, generator=gen), torch.randn(kv, t, d, generator=gen),
             torch.randn(kv, t, d, generator=gen)) for h, kv, n, t, d in shapes]


def _attend(q, k_heads, v_heads, allowed) -> np.ndarray:
    """softmax over the allowed keys of q.k / sqrt(d), times v: k_heads[h] is the key head query head h reads."""
    s = torch.einsum("hnd,htd->hnt", q, k_heads) / q.shape[-1] ** 0.5
    s = torch.where(allowed, s, torch.tensor(float("-inf"), dtype=s.dtype))
    return torch.einsum("hnt,htd->hnd", torch.softmax(s, -1), v_heads).numpy()


def _compare_gqa(args, got) -> None:
    q, k, v = (a.double() for a in args)
    h, n, kv, t = q.shape[0], q.shape[1], k.shape[0], k.shape[1]
    group = h // kv
    in_place = [j // group for j in range(h)]
    tiled = [j % kv for j in range(h)]
    late = torch.arange(t)[None, :] <= torch.arange(t - n, t)[:, None]
    mistakes = {"every key is visible: apply the causal mask (query i, at position t - n + i, may not see the keys "
                "after it).": _attend(q, k[in_place], v[in_place], torch.ones(n, t, dtype=torch.bool))}
    if t > n:
        mistakes["the mask does not account for the cached keys: with t keys and n queries, query i is at position "
                 "t - n + i and sees keys 0 .. t - n + i."] = _attend(
                     q, k[in_place], v[in_place], torch.arange(t)[None, :] <= torch.arange(n)[:, None])
    if kv > 1 and group > 1:
        mistakes["the key/value heads are tiled (head order 0, 1, 0, 1, ...): query head j uses key/value head "
                 "j // (n_heads // n_kv_heads), each repeated in place (torch.repeat_interleave, not "
                 ".repeat)."] = _attend(q, k[tiled], v[tiled], late)
    compare_arrays(got, llama.gqa_attention(q, k, v).numpy(), "gqa_attention", mistakes=mistakes,
                   what=f"for {h} query heads and {kv} key/value heads, {n} queries and {t} keys")


check_gqa_attention = register(Check(
    name="gqa_attention", reference=llama.gqa_attention, cases=_gqa_cases, output=as_float_array,
    compare=_compare_gqa, passed="gqa_attention shares each key/value head among its group of query heads.",
    crash_hint="The keys and values have fewer heads than the queries: repeat each key/value head "
               "n_heads // n_kv_heads times along the head axis before the scores (torch.repeat_interleave).",
    forbidden=("torch.nn.functional.scaled_dot_product_attention",)))


# --- SwiGLU ---------------------------------------------------------------------------------------------------


def _swiglu_cases(seed: int = 0, shapes=((5, 8, 12), (3, 16, 40), (1, 4, 6))):
    """(x (n, d), w_gate (d_ff, d), w_up (d_ff, d), w_down (d, d_ff))."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, d, generator=gen), torch.randn(f, d, generator=gen) / d ** 0.5,
             torch.randn(f, d, generator=gen) / d ** 0.5, torch.randn(d, f, generator=gen) / f ** 0.5)
            for n, d, f in shapes]


def _compare_swiglu(args, got) -> None:
    x, gate, up, down = (a.double() for a in args)
    plain = ((x @ gate.T) * (x @ up.T)) @ down.T
    gelu = (torch.nn.functional.gelu(x @ gate.T) * (x @ up.T)) @ down.T
    compare_arrays(got, llama.swiglu(x, gate, up, down).numpy(), "swiglu", mistakes={
        "SiLU is on the wrong branch: it goes on the gate, SiLU(x W_gate^T), which then multiplies x W_up^T.":
            llama.swiglu(x, up, gate, down).numpy(),
        "the SiLU is missing: the gate is SiLU(x W_gate^T) (x times its sigmoid), not x W_gate^T.": plain.numpy(),
        "the gate uses GELU; SwiGLU's gate is SiLU (torch.nn.functional.silu).": gelu.numpy()})


check_swiglu = register(Check(
    name="swiglu", reference=llama.swiglu, cases=_swiglu_cases, output=as_float_array, compare=_compare_swiglu,
    passed="swiglu gates the up-projection with SiLU of the gate-projection."))


# --- the whole forward pass on small random models ------------------------------------------------------------


def tiny_llama(seed: int, vocab: int = 40, d: int = 24, n_heads: int = 4, n_kv_heads: int = 2, d_ff: int = 40,
               n_layers: int = 2, theta: float = 500.0) -> tuple[dict, dict]:
    """A small random Llama-style model as (state dict, config), with transformers' names and norms' weights
    away from 1 (so that a forgotten one shows); the lm_head is tied to the embedding."""
    gen = torch.Generator().manual_seed(seed)
    dh = d // n_heads
    state = {"model.embed_tokens.weight": torch.randn(vocab, d, generator=gen),
             "model.norm.weight": 1 + 0.3 * torch.randn(d, generator=gen)}
    shapes = {"self_attn.q_proj": (d, d), "self_attn.k_proj": (n_kv_heads * dh, d),
              "self_attn.v_proj": (n_kv_heads * dh, d), "self_attn.o_proj": (d, d), "mlp.gate_proj": (d_ff, d),
              "mlp.up_proj": (d_ff, d), "mlp.down_proj": (d, d_ff)}
    for layer in range(n_layers):
        for name in ("input_layernorm", "post_attention_layernorm"):
            state[f"model.layers.{layer}.{name}.weight"] = 1 + 0.3 * torch.randn(d, generator=gen)
        for name, (n_out, n_in) in shapes.items():
            state[f"model.layers.{layer}.{name}.weight"] = torch.randn(n_out, n_in, generator=gen) / n_in ** 0.5
    config = {"n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "rope_theta": theta,
              "eps": 1e-5, "vocab_size": vocab}
    return state, config


def _forward_cases(seed: int = 0, models=((6, 0), (4, 5), (1, 9))):
    """(state, config, tokens, start, cache) per (n new tokens, start): the cache of `start` earlier tokens is
    what the reference computes for them."""
    cases = []
    for i, (n, start) in enumerate(models):
        state, config = tiny_llama(seed + i, n_kv_heads=(2, 1, 4)[i % 3])
        gen = torch.Generator().manual_seed(seed + 100 + i)
        tokens = torch.randint(0, config["vocab_size"], (start + n,), generator=gen)
        cache = llama.llama_forward(state, config, tokens[:start])[1] if start else None
        cases.append((state, config, tokens[start:], start, cache))
    return cases


def _as_forward(value: Any, name: str):
    """(logits, [(keys, values) per layer]) -> [logits, [[keys, values], ...]] as float arrays."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], (tuple, list))):
        fail(f"`{name}` should return (logits, new), new being one (keys, values) pair per layer, as "
             f"`step` does in exercise 05; it returned a {type(value).__name__}.")
    pairs = []
    for pair in value[1]:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            fail(f"`{name}`: each entry of `new` should be a pair (keys, values) of the new tokens.")
        pairs.append([as_float_array(pair[0], name), as_float_array(pair[1], name)])
    return [as_float_array(value[0], name), pairs]


def _compare_forward(args, got) -> None:
    state, config, tokens, start, cache = args
    state = {k: v.double() for k, v in state.items()}
    cache = None if cache is None else [(k.double(), v.double()) for k, v in cache]
    logits, new = llama.llama_forward(state, config, tokens, start, cache)
    what = f"(tokens {tokens.tolist()} at positions from {start}, {config['n_kv_heads']} key/value heads)"
    if len(got[1]) != len(new):
        fail(f"`llama_forward` returned {len(got[1])} (keys, values) pairs for a model of {len(new)} layers {what}.")
    for layer, ((k, v), (want_k, want_v)) in enumerate(zip(got[1], new)):
        rotated_v = llama.rope(want_v, start, config["rope_theta"]).numpy()
        compare_arrays(k, want_k.numpy(), "llama_forward", what=f"keys of layer {layer} {what}", mistakes={
            "the keys are not rotated: the cache holds the keys after RoPE (each position's rotation is applied once, "
            "when its token is computed).": _backwards(want_k, start, config["rope_theta"]).numpy()})
        compare_arrays(v, want_v.numpy(), "llama_forward", what=f"values of layer {layer} {what}", mistakes={
            "RoPE is applied to the values: only queries and keys are rotated (their dot product then depends on "
            "the distance between positions); the values stay as they are.": rotated_v})
    compare_arrays(got[0], logits.numpy(), "llama_forward", what=f"logits {what}")


check_llama_forward = register(Check(
    name="llama_forward", reference=llama.llama_forward, cases=_forward_cases, output=_as_forward,
    compare=_compare_forward, passed="llama_forward runs a Llama-style model, with a KV cache, from its state dict.",
    crash_hint="Weights are stored (out, in): a layer computes x @ W.T. q has n_heads heads, k and v n_kv_heads.",
    forbidden=("torch.nn.functional.scaled_dot_product_attention",)))


# --- SmolLM2's real weights against transformers -----------------------------------------------------------------

LOGIT_ATOL = 1e-3  # float32: the student's model and transformers' differ by round-off only (about 4e-5 here)
EVERY = 193        # the logits compared besides each position's top ones: token ids 0, 193, 386, ...


def _smollm2_cases(prompts=("The capital of France is", "Shakespeare wrote")):
    """(token ids (n,)) of each prompt, SmolLM2's tokenizer."""
    return [(torch.tensor(llama.encode(p)),) for p in prompts]


def _as_smollm2(value: Any, name: str) -> dict:
    """The logits (n, vocab) cut to what the grader compares: each position's top token and its logit, the
    logits of every EVERY-th token id, and the vocabulary size."""
    value = from_json_dict(value)
    if isinstance(value, dict):  # read back from the kernel's record
        return {"vocab": int(value["vocab"]), "top": [int(t) for t in value["top"]],
                "top_logit": np.array(value["top_logit"], dtype=np.float64),
                "sampled": np.array(value["sampled"], dtype=np.float64)}
    logits = as_float_array(value, name)
    if logits.ndim != 2:
        fail(f"`{name}` should return logits of shape (n_tokens, vocab), but they have shape {logits.shape}.")
    top = logits.argmax(-1)
    return {"vocab": logits.shape[1], "top": top.tolist(), "top_logit": logits[np.arange(len(top)), top],
            "sampled": logits[:, ::EVERY]}


def _compare_smollm2(args, got) -> None:
    (tokens,) = args
    want = llama.hf_logits(tokens.tolist()).double().numpy()     # transformers' SmolLM2, float32
    n, vocab = want.shape
    if got["vocab"] != vocab or len(got["top"]) != n:
        fail(f"`smollm2_logits` returned logits of shape ({len(got['top'])}, {got['vocab']}) for {n} tokens; "
             f"expected ({n}, {vocab}).")
    if np.isnan(got["sampled"]).any() or np.isnan(got["top_logit"]).any():
        fail("`smollm2_logits` returned NaN logits.")
    for i, token in enumerate(got["top"]):
        if want[i, token] < want[i].max() - LOGIT_ATOL:
            fail(f"at position {i} your SmolLM2's most likely next token is {token}, transformers' is "
                 f"{int(want[i].argmax())} (token ids {tokens.tolist()}): the models differ.")
    diff = np.abs(np.concatenate([got["sampled"] - want[:, ::EVERY],
                                  (got["top_logit"] - want[np.arange(n), got["top"]])[:, None]], 1))
    if diff.max() > LOGIT_ATOL:
        i = np.unravel_index(diff.argmax(), diff.shape)
        fail(f"your SmolLM2's logits differ from transformers' by up to {diff.max():.3g} (position {i[0]}); "
             f"the tolerance is {LOGIT_ATOL} (float32 round-off). The top tokens agree, so look for a small "
             "difference: RMSNorm's eps, RoPE's theta, the final norm.")


check_smollm2_logits = register(Check(
    name="smollm2_logits", reference=llama.smollm2_logits, cases=_smollm2_cases, output=_as_smollm2,
    compare=_compare_smollm2,
    passed=f"your SmolLM2 gives transformers' logits (within {LOGIT_ATOL}) and top tokens at every position."))
