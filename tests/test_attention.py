"""The reference code of chapter 03_attention: attention equals torch's, and the IOI toy is what it says."""
from __future__ import annotations

import math

import pytest
import torch

from llmcourse import attention, ioi

GEN = lambda seed=0: torch.Generator().manual_seed(seed)  # noqa: E731


@pytest.mark.parametrize("shape", [(1, 4, 8), (2, 3, 5, 16), (3, 1, 7)])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_equals_torch(shape, masked):
    gen = GEN(1)
    q, k, v = (torch.randn(*shape, generator=gen) for _ in range(3))
    mask = attention.causal_mask(shape[-2]) if masked else None
    out, weights = attention.scaled_dot_product_attention(q, k, v, mask)
    torch_out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(out, torch_out, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(shape[:-1]), atol=1e-6)
    if masked:
        assert (weights[..., ~mask] == 0).all()


def test_causal_mask_equals_torch_is_causal():
    q, k, v = (torch.randn(2, 6, 4, generator=GEN(2)) for _ in range(3))
    out, _ = attention.scaled_dot_product_attention(q, k, v, attention.causal_mask(6))
    assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)
    assert attention.causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_split_and_merge_heads():
    x = torch.arange(2 * 3 * 8.0).view(2, 3, 8)
    heads = attention.split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 2)
    assert heads[0, 1, 0].tolist() == [2.0, 3.0]  # head 1 gets columns 2..3
    assert torch.equal(attention.merge_heads(heads), x)


@pytest.mark.parametrize("d_model,n_heads", [(8, 2), (12, 3), (16, 1)])
def test_module_equals_torch_multihead_attention(d_model, n_heads):
    torch.manual_seed(0)
    ours = attention.MultiHeadAttention(d_model, n_heads)
    theirs = torch.nn.MultiheadAttention(d_model, n_heads, batch_first=True)
    with torch.no_grad():  # torch stores W_q, W_k, W_v stacked in one (3 d_model, d_model) matrix
        theirs.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        theirs.out_proj.weight.copy_(ours.o.weight)
        theirs.out_proj.bias.copy_(ours.o.bias)
    x = torch.randn(2, 5, d_model, generator=GEN(3))
    mask = attention.causal_mask(5)
    out, weights = ours(x, mask)
    want, want_weights = theirs(x, x, x, attn_mask=~mask, average_attn_weights=False)  # torch: True = blocked here
    assert torch.allclose(out, want, atol=1e-5)
    assert torch.allclose(weights, want_weights, atol=1e-6)


def test_functional_equals_module_without_bias():
    torch.manual_seed(1)
    module = attention.MultiHeadAttention(12, 3, bias=False)
    x = torch.randn(2, 4, 12, generator=GEN(4))
    out, weights = module(x, attention.causal_mask(4))
    w = [layer.weight.T for layer in (module.q, module.k, module.v, module.o)]  # Linear computes x @ W^T
    out2, weights2 = attention.multi_head_attention(x, *w, 3, attention.causal_mask(4))
    assert torch.allclose(out, out2, atol=1e-6) and torch.allclose(weights, weights2)


def test_counts_of_the_sources_models():
    assert attention.count_heads(12, 12) == 144            # GPT-2 small
    assert attention.count_heads(96, 96) == 9_216          # GPT-3 175B
    assert 768 // 12 == 64 and math.sqrt(64) == 8
    assert attention.attention_parameters(768) == 2_362_368


def test_ioi_prompts_mark_the_names():
    p = ioi.ioi_prompts(50, seed=3)
    rows = torch.arange(50)
    assert (p["tokens"][rows, p["io_pos"]] == p["io"]).all()
    assert (p["tokens"][rows, p["s1_pos"]] == p["s"]).all() and (p["tokens"][rows, p["s2_pos"]] == p["s"]).all()
    assert (p["tokens"][rows, p["end"]] == ioi.ID["to"]).all()
    assert (p["tokens"][rows, p["end"] + 1] == p["io"]).all()
    assert (p["io"] != p["s"]).all()


def test_training_batch_targets_only_the_answer_and_the_copies():
    inputs, targets = ioi.training_batch(8, seed=0, induction=0.25)
    assert inputs.shape == targets.shape == (8, ioi.SEQ_LEN - 1)
    assert ((targets[:6] != ioi.PAD).sum(1) == 1).all()     # one target per IOI sentence: the answer
    assert ((targets[6:] != ioi.PAD).sum(1) >= 8).all()     # every token of a repeated sequence is a target
    rep = ioi.repeated_sequences(3, seed=1, length=5)
    assert torch.equal(rep[:, 1:6], rep[:, 6:11]) and (rep[:, 11:] == ioi.PAD).all()


def test_ablation_hook_zeroes_one_head():
    torch.manual_seed(0)
    model = ioi.TinyTransformer(n_layers=1, n_heads=2, d_model=8).eval()
    tokens = ioi.ioi_prompts(3)["tokens"]
    base = model(tokens)
    model.ablated = {(0, 1)}
    assert not torch.allclose(model(tokens), base)
    model.ablated = set()
    assert torch.allclose(model(tokens), base)


def test_short_training_learns_something():
    result = ioi.train(n_layers=1, n_heads=2, d_model=16, steps=60, batch_size=32, lr=1e-2, progress=False)
    losses = result["losses"]
    assert sum(losses[-10:]) < sum(losses[:10])
    model = ioi.trained_model(result)
    assert ioi.evaluate(model, ioi.ioi_prompts(20))["accuracy"] >= 0.0


@pytest.mark.parametrize("seed", range(6))
def test_head_patterns_plant_one_name_mover(seed):
    h = ioi.head_patterns(seed, n_prompts=6, n_layers=2, n_heads=4)
    assert h["attention"].shape[:3] == (6, 2, 4)
    assert torch.allclose(h["attention"].sum(-1), torch.ones(h["attention"].shape[:-1]))
    assert "roles" not in h                          # the planted heads are the exercise's answer (issue 27.4)
    first = torch.randperm(8, generator=torch.Generator().manual_seed(seed))[0]   # the role placement's first pick
    assert ioi.name_mover(h["attention"], h["io_pos"], h["s_pos"]) == divmod(int(first), 4)
