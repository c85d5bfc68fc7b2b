"""Scaled dot-product attention, the causal mask, and multi-head attention, in a few readable lines.

Explained in chapter 03_attention. Shapes: `batch` sentences, `seq` tokens, `d_model` numbers per token,
`n_heads` heads of `d_head = d_model // n_heads` numbers each. A mask is a boolean tensor whose True entries
mark the (query, key) pairs that may attend, the convention of `torch.nn.functional.scaled_dot_product_attention`.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k)) v, and the attention weights.

    q: (..., seq_q, d_k), k: (..., seq_k, d_k), v: (..., seq_k, d_v), mask: broadcastable to (..., seq_q, seq_k),
    True where a query may look at a key. Returns output (..., seq_q, d_v) and weights (..., seq_q, seq_k),
    each row of weights summing to 1. Explained in chapter 03_attention.
    """
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)          # (..., seq_q, seq_k): how well each query matches each key
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))      # forbidden pairs get weight exp(-inf) = 0
    weights = torch.softmax(scores, dim=-1)                     # over the keys: each query's weights sum to 1
    return weights @ v, weights                                 # (..., seq_q, d_v): weighted mix of the values


def causal_mask(n: int) -> torch.Tensor:
    """(n, n) boolean mask, True on and below the diagonal: token i may look at tokens 0..i, never ahead.

    Explained in chapter 03_attention.
    """
    return torch.tril(torch.ones(n, n, dtype=torch.bool))


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(batch, seq, d_model) -> (batch, n_heads, seq, d_head): head h gets columns h*d_head .. (h+1)*d_head - 1.

    Explained in chapter 03_attention.
    """
    batch, seq, d_model = x.shape
    return x.view(batch, seq, n_heads, d_model // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, n_heads, seq, d_head) -> (batch, seq, n_heads * d_head), the inverse of `split_heads`.

    Explained in chapter 03_attention.
    """
    batch, n_heads, seq, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, seq, n_heads * d_head)


def multi_head_attention(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor,
                         n_heads: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention with n_heads heads from given weights (no biases).

    x: (batch, seq, d_model); w_q, w_k, w_v, w_o: (d_model, d_model), applied as x @ w. Returns the output
    (batch, seq, d_model) and every head's weights (batch, n_heads, seq, seq). Explained in chapter 03_attention.
    """
    q = split_heads(x @ w_q, n_heads)                           # (batch, n_heads, seq, d_head)
    k = split_heads(x @ w_k, n_heads)
    v = split_heads(x @ w_v, n_heads)
    out, weights = scaled_dot_product_attention(q, k, v, mask)  # all heads at once: (batch, n_heads, seq, d_head)
    return merge_heads(out) @ w_o, weights                      # heads side by side, then mixed by w_o


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention as a module: four linear maps around `scaled_dot_product_attention`.

    Same computation as `torch.nn.MultiheadAttention(d_model, n_heads, batch_first=True)` (tested).
    Explained in chapter 03_attention.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be a multiple of n_heads"
        self.n_heads = n_heads
        self.q, self.k, self.v = (nn.Linear(d_model, d_model, bias=bias) for _ in range(3))
        self.o = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (batch, seq, d_model) -> output (batch, seq, d_model), weights (batch, n_heads, seq, seq)."""
        q, k, v = (split_heads(layer(x), self.n_heads) for layer in (self.q, self.k, self.v))
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        return self.o(merge_heads(out)), weights


def count_heads(n_layers: int, n_heads: int) -> int:
    """Attention heads in a model: every layer has n_heads of them. Explained in chapter 03_attention."""
    return n_layers * n_heads


def attention_parameters(d_model: int, bias: bool = True) -> int:
    """Parameters of one multi-head attention layer: W_q, W_k, W_v, W_o (d_model x d_model each) and biases.

    The number of heads does not change it: heads split d_model, they do not add to it.
    Explained in chapter 03_attention.
    """
    return 4 * d_model * d_model + (4 * d_model if bias else 0)
