"""A GPT in miniature, and the loop that trains it to predict the next token.

Written like nanoGPT, with our own `MultiHeadAttention`: token and position embeddings, pre-LayerNorm blocks of
attention and a feed-forward layer (MLP), a final LayerNorm and a linear map to the vocabulary. The chapters'
toy models (03_attention's indirect objects, 04_ffn_memory's capitals) are this model trained on different text.

Chapter 05_gpt adds the model as numbers (configurations of GPT-1/2/3 and SmolLM2, exact parameter counts, FLOPs
per token, KV-cache memory), one block written from its weights, and a forward pass that reads a KV cache.

Explained in chapters 03_attention (attention blocks), 04_ffn_memory (the feed-forward layer) and 05_gpt.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from llmcourse.attention import MultiHeadAttention, causal_mask

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attention(ln(x)), then x + mlp(ln(x)). Keeps the last attention weights.

    The MLP is the feed-forward layer of chapter 04_ffn_memory: Linear(d_model, d_ff), an activation,
    Linear(d_ff, d_model); its hidden layer has one number per "memory".
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, activation: str = "gelu"):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        d_ff = d_ff or 4 * d_model
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), ACTIVATIONS[activation](), nn.Linear(d_ff, d_model))
        self.weights = None  # (batch, n_heads, seq, seq) of the last forward pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, self.weights = self.attn(self.ln1(x), causal_mask(x.shape[1]))
        x = x + out
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Embeddings + positions, n_layers blocks, LayerNorm, a linear map to the vocabulary."""

    def __init__(self, vocab_size: int, seq_len: int, n_layers: int = 2, n_heads: int = 4, d_model: int = 64,
                 d_ff: int | None = None, activation: str = "gelu"):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, activation) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, seq) -> the residual stream before the first block (batch, seq, d_model)."""
        return self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, seq) -> logits (batch, seq, vocabulary)."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    def attention(self) -> torch.Tensor:
        """Attention weights of the last forward pass: (batch, n_layers, n_heads, seq, seq)."""
        return torch.stack([block.weights for block in self.blocks], dim=1)


def train_lm(model: nn.Module, batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]], steps: int, lr: float,
             ignore_index: int, progress: bool = True) -> dict:
    """Next-token training with AdamW and a one-cycle schedule, on `batches(step)` -> (inputs, targets).

    Targets equal to `ignore_index` do not count in the loss. Nothing here draws random numbers: seed torch
    before building the model, and let `batches` seed its own generator. Returns {"state": the trained weights, "losses":
    [loss per step], "seconds": training time}. Explained in chapter 03_attention.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small are fastest on one core (and do not fight other processes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses, start = [], time.perf_counter()
    for step in tqdm(range(steps), desc="training", disable=not progress):
        inputs, targets = batches(step)
        logits = model(inputs)                                   # (batch, seq, vocabulary)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           ignore_index=ignore_index)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    torch.set_num_threads(threads)
    return {"state": model.state_dict(), "losses": losses, "seconds": time.perf_counter() - start}


# --- the whole model as numbers: configurations, parameters, FLOPs, cache (chapter 05_gpt) ------------------

@dataclass(frozen=True)
class GPTConfig:
    """The sizes that decide a GPT's parameter count and cost. Explained in chapter 05_gpt.

    GPT-style by default (learned positions, LayerNorm with bias, biases everywhere, an FFN of two matrices,
    the unembedding tied to the token embedding); the Llama-style fields describe SmolLM2 (rotary positions,
    RMSNorm without bias, a gated FFN of three matrices, fewer key/value heads than query heads).
    """
    vocab_size: int
    n_ctx: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    tied: bool = True            # the LM head reuses the token embedding (else: its own Linear, with a bias if `bias`)
    bias: bool = True            # biases in every Linear and LayerNorm
    n_kv_heads: int | None = None  # grouped-query attention: heads that keys and values have (None: n_heads)
    gated: bool = False          # FFN = down(act(gate(x)) * up(x)): three matrices
    positions: str = "learned"   # "learned" (a table of n_ctx rows) or "rotary" (no parameters)
    norm: str = "layernorm"      # "layernorm" (weight and bias) or "rmsnorm" (weight only)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads


# Published configurations (the papers' tables) and our own models.
CONFIGS = {
    # Radford et al. 2018: 12 layers, 768-d, 12 heads, 3072-d FFN, 512 positions, BPE with 40,000 merges (40,478 tokens).
    "GPT-1": GPTConfig(vocab_size=40478, n_ctx=512, d_model=768, n_layers=12, n_heads=12, d_ff=3072),
    # Radford et al. 2019, Table 2 (layers, d_model); 50,257 tokens, 1,024 positions, d_ff = 4 d_model, 64-d heads.
    "GPT-2 small": GPTConfig(vocab_size=50257, n_ctx=1024, d_model=768, n_layers=12, n_heads=12, d_ff=3072),
    "GPT-2 medium": GPTConfig(vocab_size=50257, n_ctx=1024, d_model=1024, n_layers=24, n_heads=16, d_ff=4096),
    "GPT-2 large": GPTConfig(vocab_size=50257, n_ctx=1024, d_model=1280, n_layers=36, n_heads=20, d_ff=5120),
    "GPT-2 XL": GPTConfig(vocab_size=50257, n_ctx=1024, d_model=1600, n_layers=48, n_heads=25, d_ff=6400),
    # Brown et al. 2020, Table 2.1: 96 layers, 12,288-d, 96 heads of 128, 2,048 positions; GPT-2's tokenizer.
    "GPT-3 175B": GPTConfig(vocab_size=50257, n_ctx=2048, d_model=12288, n_layers=96, n_heads=96, d_ff=49152),
    # SmolLM2-135M's own config.json (Allal et al. 2025): Llama-style.
    "SmolLM2-135M": GPTConfig(vocab_size=49152, n_ctx=8192, d_model=576, n_layers=30, n_heads=9, d_ff=1536,
                              tied=True, bias=False, n_kv_heads=3, gated=True, positions="rotary", norm="rmsnorm"),
    # The worked example's model: 36 layers of 12 heads at 768-d, a 50,000-token vocabulary (its d_ff: 4 x 768).
    "worked example": GPTConfig(vocab_size=50000, n_ctx=1024, d_model=768, n_layers=36, n_heads=12, d_ff=3072),
}

# Totals as published (Radford et al. 2019, Table 2; Brown et al. 2020, Table 2.1; Allal et al. 2025).
PUBLISHED = {"GPT-1": 117e6, "GPT-2 small": 117e6, "GPT-2 medium": 345e6, "GPT-2 large": 762e6,
             "GPT-2 XL": 1542e6, "GPT-3 175B": 175.0e9, "SmolLM2-135M": 135e6}


def tiny_config(model: TinyGPT) -> GPTConfig:
    """The GPTConfig of one of our TinyGPTs (untied head with a bias, LayerNorm, learned positions)."""
    block = model.blocks[0]
    return GPTConfig(vocab_size=model.tok.num_embeddings, n_ctx=model.pos.num_embeddings,
                     d_model=model.tok.embedding_dim, n_layers=len(model.blocks), n_heads=block.attn.n_heads,
                     d_ff=block.mlp[0].out_features, tied=False)


def config_from_hf(hf_config) -> GPTConfig:
    """A transformers LlamaConfig (SmolLM2's) as a GPTConfig."""
    c = hf_config
    return GPTConfig(vocab_size=c.vocab_size, n_ctx=c.max_position_embeddings, d_model=c.hidden_size,
                     n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads, d_ff=c.intermediate_size,
                     tied=c.tie_word_embeddings, bias=False, n_kv_heads=c.num_key_value_heads, gated=True,
                     positions="rotary", norm="rmsnorm")


def _as_config(config) -> GPTConfig:
    return GPTConfig(**config) if isinstance(config, dict) else config


def layer_params(config) -> dict[str, int]:
    """Parameters of one block: {"attention", "ffn", "norms"}."""
    c = _as_config(config)
    d, kv = c.d_model, c.kv_heads * c.d_head
    attention = 2 * d * d + 2 * d * kv + ((d + 2 * kv + d) if c.bias else 0)   # W_q, W_o (d x d); W_k, W_v (d x kv)
    ffn = (3 if c.gated else 2) * d * c.d_ff + ((c.d_ff + d) if c.bias else 0)
    norms = 2 * (2 * d if c.norm == "layernorm" else d)
    return {"attention": attention, "ffn": ffn, "norms": norms}


def count_params(config) -> int:
    """Exact parameter count of a GPT from its configuration (a GPTConfig, or a dict of its fields).

    Token embedding (vocab x d) + learned positions (n_ctx x d) + n_layers blocks + the final norm + the LM head
    (nothing when tied to the embedding). Explained in chapter 05_gpt.
    """
    c = _as_config(config)
    embedding = c.vocab_size * c.d_model + (c.n_ctx * c.d_model if c.positions == "learned" else 0)
    blocks = c.n_layers * sum(layer_params(c).values())
    final_norm = 2 * c.d_model if c.norm == "layernorm" else c.d_model
    head = 0 if c.tied else c.d_model * c.vocab_size + (c.vocab_size if c.bias else 0)
    return embedding + blocks + final_norm + head


def flops_per_token(config, context: int, training: bool = False) -> int:
    """FLOPs to process one token that attends to `context` tokens (one multiply-add = 2 FLOPs).

    Forward: 2 per weight of the blocks and of the LM head (the embedding is a lookup), plus attention's
    scores q.k and weighted sum of values, 2 x 2 x context x (n_heads x d_head) per layer. Training
    (forward + backward) is 3 times that (Kaplan et al. 2020). Explained in chapter 05_gpt.
    """
    c = _as_config(config)
    weights = c.n_layers * sum(layer_params(c).values()) + c.d_model * c.vocab_size
    forward = 2 * weights + 4 * c.n_layers * context * c.n_heads * c.d_head
    return 3 * forward if training else forward


def kv_cache_bytes_per_token(config, bytes_per_number: int = 2) -> int:
    """Memory a KV cache keeps per token: a key and a value per layer, for each key/value head."""
    c = _as_config(config)
    return 2 * c.n_layers * c.kv_heads * c.d_head * bytes_per_number


# --- one block from its weights, and a forward pass with a KV cache (chapter 05_gpt) --------------------------

def _linear(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """An nn.Linear's (W, b) in the formula's orientation: x @ W + b (nn.Linear stores W transposed)."""
    return layer.weight.detach().T.clone(), layer.bias.detach().clone()


def block_params(block: Block) -> dict[str, torch.Tensor]:
    """A `Block`'s weights under the names the exercise uses, matrices as (in, out): x @ W + b."""
    p = {"ln1_g": block.ln1.weight.detach().clone(), "ln1_b": block.ln1.bias.detach().clone(),
         "ln2_g": block.ln2.weight.detach().clone(), "ln2_b": block.ln2.bias.detach().clone()}
    for name, layer in [("q", block.attn.q), ("k", block.attn.k), ("v", block.attn.v), ("o", block.attn.o),
                        ("1", block.mlp[0]), ("2", block.mlp[2])]:
        p[f"W{name}"], p[f"b{name}"] = _linear(layer)
    return p


def block_forward(x: torch.Tensor, params: dict[str, torch.Tensor], n_heads: int) -> torch.Tensor:
    """A pre-LayerNorm block from its weights: x (seq, d_model) -> (seq, d_model), equal to `Block` (GELU, causal).

    h = x + Attention(LN1(x)); out = h + FFN(LN2(h)). Explained in chapter 05_gpt.
    """
    seq, d = x.shape
    ln = lambda t, g, b: nn.functional.layer_norm(t, (d,), g, b, eps=1e-5)  # noqa: E731
    a = ln(x, params["ln1_g"], params["ln1_b"])
    q, k, v = ((a @ params[f"W{n}"] + params[f"b{n}"]).view(seq, n_heads, -1).transpose(0, 1) for n in "qkv")
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5                # (heads, seq, seq)
    scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    heads = torch.softmax(scores, -1) @ v                                # (heads, seq, d_head)
    h = x + heads.transpose(0, 1).reshape(seq, d) @ params["Wo"] + params["bo"]
    m = ln(h, params["ln2_g"], params["ln2_b"])
    return h + nn.functional.gelu(m @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]


def weights(model: TinyGPT) -> dict:
    """A TinyGPT as plain data: its state_dict (tensors) plus "n_heads", what `step` needs."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {**state, "n_heads": model.blocks[0].attn.n_heads}


def n_layers_of(model: dict) -> int:
    """How many blocks a `weights` dict holds."""
    return len({k.split(".")[1] for k in model if k.startswith("blocks.")})


@torch.no_grad()
def step(model: dict, tokens: torch.Tensor, start: int = 0,
         cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None, strict: bool = True):
    """Run a TinyGPT (as `weights(model)`) on new tokens, reading earlier tokens' keys and values from a cache.

    tokens: (n,) ids at positions start, ..., start + n - 1. cache: one (keys, values) per layer, each
    (n_heads, start, d_head), for the tokens before `start` (None when start = 0).
    Returns logits (n, vocab) and, per layer, the (keys, values) of the n new tokens only, (n_heads, n, d_head):
    appending them to the cache is the caller's job. With `strict`, a cache that does not hold exactly the
    `start` earlier positions is refused with a message. A model given as {"step": fn} (chapter 08_your_gpt: your
    SmolLM2) is run by fn(tokens, start, cache), with the same contract. Explained in chapter 05_gpt.
    """
    if strict:
        _check_cache(start, cache)
    if callable(model.get("step")):
        return model["step"](tokens, start, cache)
    n, H = tokens.shape[0], model["n_heads"]
    x = model["tok.weight"][tokens] + model["pos.weight"][start:start + n]   # (n, d_model)
    d = x.shape[1]
    past = 0 if cache is None else cache[0][0].shape[1]
    visible = torch.arange(past + n)[None, :] <= torch.arange(start, start + n)[:, None]   # (n, past + n)
    new = []
    for layer in range(n_layers_of(model)):
        p = lambda name: model[f"blocks.{layer}.{name}"]  # noqa: E731
        a = nn.functional.layer_norm(x, (d,), p("ln1.weight"), p("ln1.bias"), eps=1e-5)
        q, k, v = ((a @ p(f"attn.{m}.weight").T + p(f"attn.{m}.bias")).view(n, H, -1).transpose(0, 1)
                   for m in "qkv")                                        # (H, n, d_head) each
        new.append((k, v))
        if cache is not None:
            k, v = torch.cat([cache[layer][0], k], 1), torch.cat([cache[layer][1], v], 1)  # (H, start + n, d_head)
        scores = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~visible, float("-inf"))
        out = (torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(n, d)
        x = x + out @ p("attn.o.weight").T + p("attn.o.bias")
        m = nn.functional.layer_norm(x, (d,), p("ln2.weight"), p("ln2.bias"), eps=1e-5)
        x = x + nn.functional.gelu(m @ p("mlp.0.weight").T + p("mlp.0.bias")) @ p("mlp.2.weight").T + p("mlp.2.bias")
    x = nn.functional.layer_norm(x, (d,), model["ln.weight"], model["ln.bias"], eps=1e-5)
    return x @ model["head.weight"].T + model["head.bias"], new


def _check_cache(start: int, cache) -> None:
    """`step`'s cache must hold the keys and values of exactly the `start` tokens before the new ones."""
    held = 0 if cache is None else cache[0][0].shape[1]
    if held == start:
        return
    if cache is not None and start == 0:
        raise ValueError(f"step: start = 0 with a cache of {held} positions: the positions are not offset. The "
                         f"new token comes after the {held} cached ones, so pass start = {held} (its position in "
                         "the whole sequence, len(tokens) - 1).")
    if held < start:
        raise ValueError(f"step: the cache holds {held} positions but the new token is at position {start}: the "
                         "cache is not appended to. After each step, append the keys and values it returns "
                         "(torch.cat along axis 1), so that the cache holds every earlier token.")
    raise ValueError(f"step: start = {start} but the cache already holds {held} positions: the new token's "
                     f"position is the number of tokens before it ({held}).")


def append_cache(cache, new):
    """The cache extended by the new tokens' keys and values (along the position axis)."""
    if cache is None:
        return new
    return [(torch.cat([k0, k1], 1), torch.cat([v0, v1], 1)) for (k0, v0), (k1, v1) in zip(cache, new)]


def tiny_model(seed: int = 0, vocab_size: int = 40, seq_len: int = 32, n_layers: int = 2, n_heads: int = 2,
               d_model: int = 16) -> dict:
    """A small random TinyGPT as `weights`: what the exercise generates from (seeded, untrained, larger weights
    than at initialisation so that its greedy choices are clear-cut)."""
    with torch.random.fork_rng():                     # leaves the caller's random state alone
        torch.manual_seed(seed)
        model = TinyGPT(vocab_size, seq_len, n_layers, n_heads, d_model)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
        return weights(model)
