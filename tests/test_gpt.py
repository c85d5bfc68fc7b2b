"""Chapter 05_gpt's reference code: configurations and counts, a block from its weights, the cached forward pass."""
from __future__ import annotations

import pytest
import torch

from llmcourse import gpt


@pytest.mark.parametrize("shape", [dict(vocab_size=50, seq_len=16), dict(vocab_size=7, seq_len=5, n_layers=3, n_heads=2,
                                                                         d_model=8, d_ff=20)])
def test_count_params_equals_a_tiny_gpt(shape):
    model = gpt.TinyGPT(**shape)
    assert gpt.count_params(gpt.tiny_config(model)) == sum(p.numel() for p in model.parameters())


def test_count_params_of_published_configs():
    counts = {name: gpt.count_params(c) for name, c in gpt.CONFIGS.items()}
    assert counts["GPT-2 small"] == 124_439_808            # HF gpt2 (tied head)
    assert counts["GPT-2 XL"] == 1_557_611_200
    assert counts["SmolLM2-135M"] == 134_515_008
    assert abs(counts["GPT-3 175B"] / 175e9 - 1) < 0.01
    as_dict = {k: getattr(gpt.CONFIGS["GPT-1"], k) for k in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads",
                                                          "d_ff", "tied")}
    assert gpt.count_params(as_dict) == counts["GPT-1"]


def test_count_params_equals_smollm2_loaded():
    from llmcourse import data

    model, _ = data.smollm2()
    config = gpt.config_from_hf(model.config)
    assert config == gpt.CONFIGS["SmolLM2-135M"]
    assert gpt.count_params(config) == sum(p.numel() for p in model.parameters())


def test_flops_and_kv_cache():
    c = gpt.CONFIGS["GPT-3 175B"]
    n = gpt.count_params(c) - c.vocab_size * c.d_model - c.n_ctx * c.d_model     # weights used per token, head aside
    assert gpt.flops_per_token(c, 0) == 2 * (n - c.d_model * 2 + c.d_model * c.vocab_size)  # final LN is not a matmul
    assert gpt.flops_per_token(c, 2048) - gpt.flops_per_token(c, 0) == 4 * 96 * 2048 * 12288
    assert gpt.flops_per_token(c, 10, training=True) == 3 * gpt.flops_per_token(c, 10)
    assert gpt.kv_cache_bytes_per_token(c) == 2 * 96 * 12288 * 2
    assert gpt.kv_cache_bytes_per_token(gpt.CONFIGS["SmolLM2-135M"], 4) == 2 * 30 * 3 * 64 * 4


def test_block_forward_equals_block():
    torch.manual_seed(0)
    block = gpt.Block(16, 4)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(1, 9, 16)
    torch.testing.assert_close(gpt.block_forward(x[0], gpt.block_params(block), 4), block(x)[0].detach())


def test_step_with_cache_equals_the_model():
    torch.manual_seed(1)
    model = gpt.TinyGPT(30, 12, n_layers=2, n_heads=2, d_model=16).eval()
    w, tokens = gpt.weights(model), torch.randint(0, 30, (12,))
    full = model(tokens[None])[0].detach()
    logits, kv = gpt.step(w, tokens)
    torch.testing.assert_close(logits, full)
    cache = None
    for i in range(12):                                  # one token at a time, reading the cache
        logits, new = gpt.step(w, tokens[i:i + 1], i, cache)
        cache = gpt.append_cache(cache, new)
        torch.testing.assert_close(logits[0], full[i], atol=1e-5, rtol=1e-4)
    assert cache[0][0].shape == (2, 12, 8)
