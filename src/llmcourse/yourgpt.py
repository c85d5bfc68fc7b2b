"""Your own GPT, trained: a GPT-2-style model held as plain weights (exercise 05's blocks), its batched forward
pass, AdamW's step, and the held-out loss that grades it.

The model is a dict: "tok" (V, d_model) token embedding, "pos" (n_ctx, d_model) learned positions, "blocks" a
list of exercise 05's block dicts (`gpt.block_forward`'s names, matrices as x @ W + b), "ln_g", "ln_b" the final
LayerNorm; the output layer is the token embedding transposed (tied). Exercise 08 trains one on Shakespeare's
plays; the grader loads the recorded weights into `gpt_logits` and measures `window_loss` on held-out text.

Explained in chapter 08_your_gpt.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from llmcourse import gpt, train

SIZES = {"d_model": 128, "n_layers": 2, "n_heads": 4, "n_ctx": 32}   # the model exercise 08 trains
BATCH = 32         # windows of n_ctx characters per step
STEPS = 650        # the training budget: about 35 s of one core
LR, MIN_LR, WARMUP, WEIGHT_DECAY = 6e-3, 6e-4, 50, 0.1
BLOCK_NAMES = ("ln1_g", "ln1_b", "Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo", "ln2_g", "ln2_b",
               "W1", "b1", "W2", "b2")


def init_gpt(vocab_size: int, n_ctx: int, d_model: int, n_layers: int, seed: int) -> dict:
    """A GPT's weights initialised like GPT-2 (normal, std 0.02; the two matrices that write into the residual
    stream, Wo and W2, scaled by 1/sqrt(2 n_layers); biases 0, LayerNorm gains 1), each a leaf tensor that
    requires its gradient. d_ff = 4 d_model. Explained in chapter 08_your_gpt."""
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape, std=0.02):
        return torch.randn(*shape, generator=gen) * std

    d, f = d_model, 4 * d_model
    deep = 0.02 / math.sqrt(2 * n_layers)
    blocks = [{"ln1_g": torch.ones(d), "ln1_b": torch.zeros(d),
               "Wq": normal(d, d), "bq": torch.zeros(d), "Wk": normal(d, d), "bk": torch.zeros(d),
               "Wv": normal(d, d), "bv": torch.zeros(d), "Wo": normal(d, d, std=deep), "bo": torch.zeros(d),
               "ln2_g": torch.ones(d), "ln2_b": torch.zeros(d),
               "W1": normal(d, f), "b1": torch.zeros(f), "W2": normal(f, d, std=deep), "b2": torch.zeros(d)}
              for _ in range(n_layers)]
    params = {"tok": normal(vocab_size, d), "pos": normal(n_ctx, d), "blocks": blocks,
              "ln_g": torch.ones(d), "ln_b": torch.zeros(d)}
    for p in tensors(params):
        p.requires_grad_()
    return params


def tensors(params: dict) -> list[torch.Tensor]:
    """Every tensor of a GPT's weights dict, in a fixed order (embeddings, blocks, final LayerNorm)."""
    return [params["tok"], params["pos"], *(b[n] for b in params["blocks"] for n in BLOCK_NAMES),
            params["ln_g"], params["ln_b"]]


def gpt_logits(params: dict, tokens: torch.Tensor, n_heads: int) -> torch.Tensor:
    """tokens (batch, seq) -> logits (batch, seq, V): embeddings plus positions, exercise 05's causal blocks
    (one sequence each, run on the batch by torch.func.vmap), the final LayerNorm, the tied output layer.
    Explained in chapter 08_your_gpt."""
    x = params["tok"][tokens] + params["pos"][: tokens.shape[1]]          # (batch, seq, d_model)
    block = torch.func.vmap(gpt.block_forward, in_dims=(0, None, None))
    for p in params["blocks"]:
        x = block(x, p, n_heads)
    x = nn.functional.layer_norm(x, (x.shape[-1],), params["ln_g"], params["ln_b"], eps=1e-5)
    return x @ params["tok"].T                                            # (batch, seq, V)


def adamw_step(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int, lr: float,
               weight_decay: float, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW step (Loshchilov & Hutter 2019): the parameter shrunk by lr * weight_decay, decoupled from the
    gradient's moments, then exercise 06's Adam step. Returns (param, m, v). Explained in chapter 08_your_gpt."""
    return train.adam_step(param * (1 - lr * weight_decay), grad, m, v, t, lr, beta1, beta2, eps)


@torch.no_grad()
def window_loss(logits_fn, ids: torch.Tensor, block: int, n_windows: int = 1000) -> float:
    """Mean next-character loss (nats) of `logits_fn` ((batch, seq) ids -> (batch, seq, V) logits) on `n_windows`
    windows of `block` characters spread evenly over `ids` (the same ones every time), each window predicting
    itself shifted by one character. Explained in chapter 08_your_gpt."""
    starts = torch.linspace(0, len(ids) - block - 1, n_windows).long()   # (n_windows,)
    rows = starts[:, None] + torch.arange(block)                          # (n_windows, block)
    logits = logits_fn(ids[rows])                                         # (n, block, V)
    return float(nn.functional.cross_entropy(logits.flatten(0, 1).double(), ids[rows + 1].flatten()))


def learning_rate(step: int, steps: int) -> float:
    """LR after a linear warm-up of WARMUP steps, then a cosine decay to MIN_LR at `steps` (step = 0, 1, ...)."""
    return train.learning_rate(step, train.TrainConfig(iters=steps, lr=LR, min_lr=MIN_LR, warmup=WARMUP))


def train_gpt(steps: int, seed: int) -> tuple[dict, float]:
    """A GPT of SIZES trained on the plays' characters for `steps` AdamW steps of BATCH windows, seeded: returns
    (its weights, its loss on the held-out windows). Explained in chapter 08_your_gpt."""
    chars = train.char_data(train.shakespeare_plays())
    params = init_gpt(len(chars.chars), SIZES["n_ctx"], SIZES["d_model"], SIZES["n_layers"], seed)
    weights = tensors(params)
    m, v = [torch.zeros_like(p) for p in weights], [torch.zeros_like(p) for p in weights]
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x, y = train.get_batch(chars.train, SIZES["n_ctx"], BATCH, gen)            # (BATCH, n_ctx) each
        logits = gpt_logits(params, x, SIZES["n_heads"])                             # (BATCH, n_ctx, V)
        loss = train.cross_entropy(logits.flatten(0, 1), y.flatten())
        grads = torch.autograd.grad(loss, weights)
        lr = learning_rate(step, steps)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(weights, grads)):
                decay = WEIGHT_DECAY if p.dim() == 2 else 0.0                       # matrices only
                new, m[i], v[i] = adamw_step(p, g, m[i], v[i], step + 1, lr, decay, 0.9, 0.99)
                p.copy_(new)
    val = window_loss(lambda t: gpt_logits(params, t, SIZES["n_heads"]), chars.val, SIZES["n_ctx"])
    return params, val


@torch.no_grad()
def sample_text(logits_fn, chars: train.CharData, prompt: str, n: int, seed: int, n_ctx: int,
                temperature: float = 0.8) -> str:
    """`n` characters drawn after `prompt` from `logits_fn` ((1, seq) ids -> (1, seq, V)), seeded, with the last
    `n_ctx` characters as context. Explained in chapter 08_your_gpt."""
    gen = torch.Generator().manual_seed(seed)
    ids = chars.encode(prompt)
    for _ in range(n):
        logits = logits_fn(torch.tensor([ids[-n_ctx:]]))[0, -1]
        ids.append(int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)))
    return chars.decode(ids[len(chars.encode(prompt)):])


def trained(steps: int = STEPS, seed: int = 0) -> dict:
    """`train_gpt(steps, seed)` with its cost, for the book: {"params", "val_loss", "cpu_seconds", "n_params"}.
    Call it through `data.cached`. Explained in chapter 08_your_gpt."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                              # one core, as when graded
    start = time.process_time()
    params, val = train_gpt(steps, seed)
    seconds = time.process_time() - start
    torch.set_num_threads(threads)
    params = {k: [{n: t.detach() for n, t in b.items()} for b in v] if k == "blocks" else v.detach()
              for k, v in params.items()}
    return {"params": params, "val_loss": val, "cpu_seconds": seconds,
            "n_params": sum(p.numel() for p in tensors(params))}
