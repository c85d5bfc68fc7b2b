"""Graded checks of exercise 08_your_gpt: SmolLM2's parts written by the student, then the whole model.

Explained in chapter 08_your_gpt; each check compares with `llmcourse.llama` on seeded inputs and names the typical
mistakes: RMSNorm with the mean subtracted (that is LayerNorm), RoPE rotating interleaved pairs instead of the two
halves, rotating the wrong way or forgetting the offset of cached positions, key/value heads tiled instead of
repeated in place, no causal mask, SiLU on the wrong branch of SwiGLU, RoPE applied to the values. The real
weights' check compares the student's SmolLM2 with transformers' own forward (`llama.hf_logits`), computed where
the student's code cannot reach it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from llmcourse import llama, train, yourgpt
from llmcourse.checks.core import (ATOL, RTOL, Check, as_float_array, compare_arrays, diagnosis, fail, from_json_dict,
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


# --- training your own GPT: AdamW, the batched forward pass, the trained weights -------------------------------


def _adamw_cases(seed: int = 0, ts=(1, 3, 200), decays=(0.1, 0.5, 0.01)):
    """(param, grad, m, v, t, lr, weight_decay, beta1, beta2, eps)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t, wd in zip(ts, decays):
        p, g = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
        m = torch.zeros(3, 4) if t == 1 else torch.randn(3, 4, generator=gen) * 0.1
        v = torch.zeros(3, 4) if t == 1 else torch.rand(3, 4, generator=gen) * 0.1
        out.append((p, g, m, v, t, 0.05, wd, 0.9, 0.99, 1e-8))
    return out


def _compare_adamw(args, got) -> None:
    args = tuple(a.double() if isinstance(a, torch.Tensor) else a for a in args)
    p, g, m, v, t, lr, wd, b1, b2, eps = args
    want = [w.numpy() for w in yourgpt.adamw_step(*args)]
    if len(got) != 3:
        fail(f"`adamw_step` should return 3 tensors (param, m, v), got {len(got)}.")
    coupled = [w.numpy() for w in train.adam_step(p, g + wd * p, m, v, t, lr, b1, b2, eps)]
    unscaled = [w.numpy() for w in train.adam_step(p * (1 - wd), g, m, v, t, lr, b1, b2, eps)]
    plain = [w.numpy() for w in train.adam_step(p, g, m, v, t, lr, b1, b2, eps)]
    mistakes = {
        "the weight decay is added to the gradient (Adam with L2 regularisation): AdamW decouples it, shrinking the "
        "parameter by lr * weight_decay itself, outside Adam's moments.": coupled,
        "the decay is not scaled by the learning rate: the parameter shrinks by a factor 1 − lr * weight_decay.":
            unscaled,
        "there is no weight decay: shrink the parameter by the factor 1 − lr * weight_decay, then take Adam's "
        "step (your adam_step from exercise 06).": plain}
    for i, name in enumerate(["param", "m", "v"]):
        compare_arrays(got[i], want[i], "adamw_step", what=f"({name} at step t = {t}, weight_decay = {wd})",
                       mistakes={msg: w[i] for msg, w in mistakes.items()
                                 if all(w[j].shape == got[j].shape and np.allclose(got[j], w[j], atol=ATOL, rtol=RTOL)
                                        for j in range(3))})


def _as_arrays(value: Any, name: str) -> list[np.ndarray]:
    if not isinstance(value, (tuple, list)) or not value:
        fail(f"`{name}` should return a tuple of torch tensors (param, m, v), but it returned a "
             f"{type(value).__name__}.")
    return [as_float_array(v, name) for v in value]


check_adamw_step = register(Check(
    name="adamw_step", reference=yourgpt.adamw_step, cases=_adamw_cases, output=_as_arrays, compare=_compare_adamw,
    passed="adamw_step shrinks the parameter by lr * weight_decay, then takes Adam's step."))


def _random_gpt(seed: int, vocab: int, n_ctx: int, d: int, n_layers: int) -> dict:
    """A GPT's weights with values far from an initialisation's (so that a forgotten part shows), no gradients."""
    gen = torch.Generator().manual_seed(seed)
    params = yourgpt.init_gpt(vocab, n_ctx, d, n_layers, seed)

    def noise(t):
        if t.dim() == 2:
            return torch.randn(t.shape, generator=gen) / t.shape[0] ** 0.5
        return (1 if bool((t == 1).all()) else 0) + 0.3 * torch.randn(t.shape, generator=gen)
    out = {k: noise(params[k].detach()) for k in ("ln_g", "ln_b")}
    out["tok"], out["pos"] = torch.randn(vocab, d, generator=gen), torch.randn(n_ctx, d, generator=gen)
    out["blocks"] = [{n: noise(t.detach()) for n, t in b.items()} for b in params["blocks"]]
    return out


def _gpt_cases(seed: int = 0, shapes=((2, 5, 11, 16, 2, 2), (3, 7, 20, 12, 1, 3), (1, 1, 9, 8, 2, 4))):
    """(params, tokens (batch, seq), n_heads) for each (batch, seq, vocab, d_model, n_layers, n_heads)."""
    cases = []
    for i, (b, s, vocab, d, layers, heads) in enumerate(shapes):
        gen = torch.Generator().manual_seed(seed + 50 + i)
        cases.append((_random_gpt(seed + i, vocab, s + 3, d, layers), torch.randint(0, vocab, (b, s), generator=gen),
                      heads))
    return cases


@diagnosis
def _gpt_variant(params: dict, tokens: torch.Tensor, n_heads: int, causal: bool = True, positions: bool = True,
                 final_norm: bool = True) -> np.ndarray:
    """The GPT's logits (float64), or a mistake's: no causal mask, no positions, no final LayerNorm."""
    params = {k: ([{n: t.double() for n, t in b.items()} for b in v] if k == "blocks" else v.double())
              for k, v in params.items()}
    seq = tokens.shape[1]
    x = params["tok"][tokens] + (params["pos"][:seq] if positions else 0)
    for p in params["blocks"]:
        d = x.shape[-1]
        a = torch.nn.functional.layer_norm(x, (d,), p["ln1_g"], p["ln1_b"], eps=1e-5)
        q, k, v = ((a @ p[f"W{n}"] + p[f"b{n}"]).unflatten(-1, (n_heads, -1)).transpose(1, 2) for n in "qkv")
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if causal:
            scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
        x = x + (torch.softmax(scores, -1) @ v).transpose(1, 2).flatten(2) @ p["Wo"] + p["bo"]
        m = torch.nn.functional.layer_norm(x, (d,), p["ln2_g"], p["ln2_b"], eps=1e-5)
        x = x + torch.nn.functional.gelu(m @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    if final_norm:
        x = torch.nn.functional.layer_norm(x, (x.shape[-1],), params["ln_g"], params["ln_b"], eps=1e-5)
    return (x @ params["tok"].T).numpy()


def _compare_gpt(args, got) -> None:
    params, tokens, n_heads = args
    what = f"for tokens of shape {tuple(tokens.shape)}, {len(params['blocks'])} blocks, {n_heads} heads"
    compare_arrays(got, _gpt_variant(params, tokens, n_heads), "gpt_logits", what=what, mistakes={
        "every position sees the later ones: the causal mask is missing (in training the model would read the "
        "very character it is asked to predict).": _gpt_variant(params, tokens, n_heads, causal=False),
        "the position embeddings are missing: add params['pos'][:seq] to the token embeddings.":
            _gpt_variant(params, tokens, n_heads, positions=False),
        "the final LayerNorm is missing: normalise with params['ln_g'], params['ln_b'] before the output layer.":
            _gpt_variant(params, tokens, n_heads, final_norm=False)})


check_gpt_logits = register(Check(
    name="gpt_logits", reference=yourgpt.gpt_logits, cases=_gpt_cases, output=as_float_array, compare=_compare_gpt,
    passed="gpt_logits runs your GPT on a batch: embeddings, positions, causal blocks, LayerNorm, tied output.",
    crash_hint="tokens is (batch, seq); block_forward takes one sequence (seq, d_model): run it on each sequence, "
               "or on the whole batch with torch.func.vmap(block_forward, in_dims=(0, None, None)).",
    forbidden=("torch.nn.functional.scaled_dot_product_attention",)))


# --- the trained GPT, judged on held-out text ------------------------------------------------------------------

VAL_BAR = 2.0       # nats per character on the held-out windows (nanoGPT's CPU recipe reaches 1.89 at 2,000 steps)
REPORT_TOL = 5e-4   # the student's reported loss against the grader's, on the same windows (float32 round-off)
N_HEADS = yourgpt.SIZES["n_heads"]
CONTEXT = yourgpt.SIZES["n_ctx"]


def _trained_cases(steps: int = yourgpt.STEPS, seed: int = 0):
    """(steps, seed): the training budget and the seed of the student's `train_gpt`."""
    return [(steps, seed)]


def _as_trained(value: Any, name: str) -> list:
    """(params, val_loss) -> [val_loss, [[name, array], ...]] with names tok, pos, blocks.<i>.<name>, ln_g, ln_b."""
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)
            and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in value[1])):
        return [float(value[0]), [[k, np.array(a, dtype=np.float64)] for k, a in value[1]]]   # read back
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], dict)):
        fail(f"`{name}` should return (params, val_loss): your trained weights, a dict like init_gpt's, and the "
             f"validation loss you measured (a float); it returned a {type(value).__name__}.")
    params, val = value
    if isinstance(val, torch.Tensor) and val.numel() == 1:
        val = val.item()
    if not isinstance(val, (int, float)) or isinstance(val, bool):
        fail(f"`{name}`: the second value should be the validation loss (a float), not a {type(val).__name__}.")
    missing = [k for k in ("tok", "pos", "blocks", "ln_g", "ln_b") if k not in params]
    if missing or not isinstance(params["blocks"], (list, tuple)):
        fail(f"`{name}`: the weights should be a dict with tok, pos, blocks (a list), ln_g and ln_b, as init_gpt "
             f"makes them; missing: {', '.join(missing) or 'blocks as a list'}.")
    flat = [[k, as_float_array(params[k], name)] for k in ("tok", "pos", "ln_g", "ln_b")]
    for i, block in enumerate(params["blocks"]):
        if not isinstance(block, dict) or set(yourgpt.BLOCK_NAMES) - set(block):
            fail(f"`{name}`: block {i} should be a dict with exercise 05's names ({', '.join(yourgpt.BLOCK_NAMES)}).")
        flat += [[f"blocks.{i}.{n}", as_float_array(block[n], name)] for n in yourgpt.BLOCK_NAMES]
    return [float(val), flat]


def _unflatten(flat: list) -> dict:
    named = {k: torch.tensor(a, dtype=torch.float32) for k, a in flat}
    n_layers = len({k.split(".")[1] for k in named if k.startswith("blocks.")})
    return {"tok": named["tok"], "pos": named["pos"], "ln_g": named["ln_g"], "ln_b": named["ln_b"],
            "blocks": [{n: named[f"blocks.{i}.{n}"] for n in yourgpt.BLOCK_NAMES} for i in range(n_layers)]}


_CHARS: list = []


def _chars() -> train.CharData:
    """The plays as characters (read once per process)."""
    if not _CHARS:
        _CHARS.append(train.char_data(train.shakespeare_plays()))
    return _CHARS[0]


def _shapes_message(params: dict, vocab: int) -> str | None:
    d = params["tok"].shape[1] if params["tok"].ndim == 2 else 0
    if params["tok"].shape != (vocab, d) or d == 0 or d % N_HEADS:
        return (f"the token embedding has shape {tuple(params['tok'].shape)}; expected ({vocab}, d_model) with "
                f"d_model a multiple of {N_HEADS} (the plays' {vocab} characters).")
    if params["pos"].ndim != 2 or params["pos"].shape[1] != d or params["pos"].shape[0] < CONTEXT:
        return f"the position embedding has shape {tuple(params['pos'].shape)}; expected ({CONTEXT}, {d})."
    want = {"ln1_g": (d,), "ln1_b": (d,), "ln2_g": (d,), "ln2_b": (d,), "Wq": (d, d), "Wk": (d, d), "Wv": (d, d),
            "Wo": (d, d), "bq": (d,), "bk": (d,), "bv": (d,), "bo": (d,), "W1": (d, 4 * d), "b1": (4 * d,),
            "W2": (4 * d, d), "b2": (d,)}
    for i, block in enumerate(params["blocks"]):
        for n, shape in want.items():
            if tuple(block[n].shape) != shape:
                return f"block {i}'s {n} has shape {tuple(block[n].shape)}; expected {shape}."
    if not params["blocks"] or params["ln_g"].shape != (d,) or params["ln_b"].shape != (d,):
        return "the model needs at least one block and a final LayerNorm (ln_g, ln_b) of d_model numbers each."
    return None


def _losses(params: dict) -> dict[str, float]:
    """The model's loss on the held-out windows (with the causal mask: the reference architecture), and what tells
    the mistakes apart: without the mask, and on the training text's first windows."""
    chars = _chars()
    masked = lambda x: yourgpt.gpt_logits(params, x, N_HEADS)  # noqa: E731
    return {"val": yourgpt.window_loss(masked, chars.val, CONTEXT), "train": yourgpt.window_loss(masked, chars.train,
                                                                                                CONTEXT)}


@diagnosis
def _unmasked_val(params: dict) -> float:
    unmasked = lambda x: torch.from_numpy(_gpt_variant(params, x, N_HEADS, causal=False))  # noqa: E731
    return yourgpt.window_loss(unmasked, _chars().val, CONTEXT)


def _compare_trained(args, got) -> None:
    steps, seed = args
    reported, flat = got
    params = _unflatten(flat)
    chars = _chars()
    shapes = _shapes_message(params, len(chars.chars))
    if shapes:
        fail(f"`train_gpt`: {shapes}")
    if any(not np.isfinite(a).all() for _, a in flat):
        fail("`train_gpt` returned weights with NaN or infinite values: the training diverged (a learning rate "
             "too large? a loss that is not the mean?).")
    losses = _losses(params)
    val = losses["val"]
    if val > VAL_BAR:
        unmasked = _unmasked_val(params)
        if unmasked < val - 0.5:
            fail(f"your model was trained without the causal mask: with it (as every GPT generates, one character "
                 f"after another), its loss on the held-out text is {val:.2f} nats/char, but {unmasked:.2f} if every "
                 f"position may see the later ones (you reported {reported:.2f}). It learnt to read the next "
                 "character instead of predicting it: your gpt_logits must mask the later positions while training.")
        fail(f"your model's loss on the held-out text is {val:.3f} nats per character after {steps} steps; the bar "
             f"is {VAL_BAR} (a uniform guess costs {math.log(len(chars.chars)):.2f}). Check the learning rate and "
             "its schedule, that every parameter is updated, and that the loss goes down while it trains.")
    if not abs(reported - val) <= REPORT_TOL:
        if abs(reported - losses["train"]) <= REPORT_TOL:
            fail(f"the validation loss you report ({reported:.3f}) is your model's loss on the training text; on "
                 f"the held-out text (chars.val) it is {val:.3f}. Measure it on text the model never trained on: "
                 "only that shows what it learnt rather than memorised (a larger model trained for longer scores "
                 "far better on its training text than on new text).")
        fail(f"the validation loss you report ({reported:.3f}) is not your model's: the grader measures {val:.3f} "
             f"on chars.val with window_loss (its first windows of {CONTEXT} characters). Report "
             "window_loss(your model, chars.val, block) for the weights you return.")


def _remark_trained(args, got) -> str:
    """What the grader says of a passing model: its held-out loss and a seeded sample of its text."""
    params = _unflatten(got[1])
    chars = _chars()
    val = _losses(params)["val"]
    text = yourgpt.sample_text(lambda x: yourgpt.gpt_logits(params, x, N_HEADS), chars, "\n", 240, seed=0,
                               n_ctx=CONTEXT)
    return (f"Your GPT's loss on the held-out text: {val:.3f} nats per character (bar {VAL_BAR}).\n"
            f"What it writes (240 characters, temperature 0.8, seed 0):\n{text}")


check_train_gpt = register(Check(
    name="train_gpt", reference=yourgpt.train_gpt, cases=_trained_cases, output=_as_trained,
    compare=_compare_trained, remark=_remark_trained,
    passed=f"your trained GPT's loss on the held-out text is below {VAL_BAR} nats per character, and you measured "
           "it where it counts."))
