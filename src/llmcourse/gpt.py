"""A GPT in miniature, and the loop that trains it to predict the next token.

Written like nanoGPT, with our own `MultiHeadAttention`: token and position embeddings, pre-LayerNorm blocks of
attention and a feed-forward layer (MLP), a final LayerNorm and a linear map to the vocabulary. The chapters'
toy models (03_attention's indirect objects, 04_ffn_memory's capitals) are this model trained on different text.

Explained in chapters 03_attention (attention blocks) and 04_ffn_memory (the feed-forward layer).
"""
from __future__ import annotations

import time
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
