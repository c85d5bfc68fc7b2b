"""The reference code of chapter 04_ffn_memory: the FFN as keys and values, hooks, attribution, the facts model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from llmcourse import facts, ffn, gpt


def mlp(d_model=6, d_ff=10, seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))


def test_ffn_is_torchs_mlp_and_the_sum_of_its_memories():
    layer = mlp()
    W1, b1, W2, b2 = ffn.linear_weights(layer)
    x = torch.randn(3, 4, 6)
    assert torch.allclose(ffn.ffn(x, W1, b1, W2, b2), layer(x), atol=1e-6)
    parts = ffn.weighted_values(ffn.key_activations(x, W1, b1), W2)      # (3, 4, 10, 6)
    assert parts.shape == (3, 4, 10, 6)
    assert torch.allclose(parts.sum(-2) + b2, layer(x), atol=1e-6)


def test_promoted_tokens_are_the_largest_logits_in_order():
    value, unembedding = torch.randn(5), torch.randn(12, 5)
    logits = unembedding @ value
    assert ffn.promoted_tokens(value, unembedding, 4) == logits.argsort(descending=True)[:4].tolist()


def test_ablate_memories_copies_and_zeroes_the_last_axis():
    a = torch.rand(2, 3, 8) + 1
    out = ffn.ablate_memories(a, [1, 6])
    assert (out[..., [1, 6]] == 0).all() and (out[..., [0, 2, 3, 4, 5, 7]] == a[..., [0, 2, 3, 4, 5, 7]]).all()
    assert (a > 0).all()                                                 # the input is untouched


def test_recording_and_ablating_hooks_come_off():
    layer = mlp()
    x = torch.randn(2, 6)
    W1, b1, W2, b2 = ffn.linear_weights(layer)
    with ffn.recording([layer[2]]) as records:
        before = layer(x)
    assert torch.allclose(records[0], ffn.key_activations(x, W1, b1))
    with ffn.ablating([layer[2]], [(0, i) for i in range(10)]):
        assert torch.allclose(layer(x), b2.expand(2, 6))                 # every memory off: only b2 is left
    assert torch.allclose(layer(x), before) and not layer[2]._forward_pre_hooks


def test_attribution_of_a_last_layer_is_each_memorys_contribution():
    """For an FFN read straight into the logits, activation x gradient = a_i (W2[i] . (u_answer - mean u))."""
    layer, unembedding = mlp(), torch.randn(9, 6)
    x = torch.randn(1, 3, 6)
    answer = torch.tensor([4])
    scores = ffn.memory_attribution(lambda: (x + layer(x)) @ unembedding.T, [layer[2]], answer)
    W1, b1, W2, b2 = ffn.linear_weights(layer)
    a = ffn.key_activations(x[0, -1], W1, b1)
    want = a * (W2 @ (unembedding[4] - unembedding.mean(0)))
    assert scores.shape == (1, 10) and torch.allclose(scores[0], want, atol=1e-5)
    assert ffn.top_memories(scores, 2) == [(0, i) for i in want.topk(2).indices.tolist()]


def test_layer_parameters_match_torch_and_gpt3():
    layer = nn.Sequential(nn.Linear(768, 3072), nn.Linear(3072, 768))
    assert ffn.layer_parameters(768, 3072)["ffn"] == sum(p.numel() for p in layer.parameters())
    assert ffn.layer_parameters(768, 3072)["attention"] == 4 * (768 * 768 + 768)
    gpt3 = ffn.layer_parameters(12288, 49152)
    assert round(96 * gpt3["ffn"] / 1e9) == 116 and round(gpt3["ffn"] / 1e8) == 12   # the explainer's figures
    assert ffn.layer_parameters(576, 1536, kv_dim=192, gated=True, bias=False) == {"attention": 884_736,
                                                                                  "ffn": 3 * 576 * 1536}


@pytest.mark.parametrize("seed", range(6))
def test_planted_memories_store_each_fact_in_its_memories(seed):
    m = ffn.planted_memories(seed)
    for s, answer in enumerate(m["answers"]):
        x = m["embedding"][s]
        found = ffn.fact_memories(x, m["W1"], m["b1"], m["W2"], m["unembedding"], answer, 3)
        assert sorted(found) == m["stored"][s]
        args = (x, m["W1"], m["b1"], m["W2"], m["b2"], m["unembedding"], answer)
        assert ffn.answer_probability(*args, ablated=found) < 0.25 * ffn.answer_probability(*args)


def test_facts_text_and_prompts():
    assert len(set(facts.VOCAB)) == len(facts.VOCAB)
    inputs, targets = facts.training_batch(4, seed=0)
    assert inputs.shape == targets.shape == (4, facts.SEQ_LEN - 1) and (inputs[:, 0] == facts.BOS).all()
    p = facts.fact_prompts("capital", ["Poland", "Japan"], context=True)
    words = [facts.VOCAB[t] for t in p["tokens"][0]]
    assert " ".join(words[1:]) == "Warsaw is the capital of Poland . The capital of Poland is"
    assert [facts.VOCAB[t] for t in p["answers"]] == ["Warsaw", "Tokyo"]
    inv = facts.invented_prompts(5, seed=2)
    assert all(int(a) in row.tolist() for row, a in zip(inv["tokens"], inv["answers"]))
    tokens, mask = facts.filler_text(10)
    assert mask.shape == (10, tokens.shape[1] - 1) and mask.any() and not mask[:, :2].any()


def test_short_facts_training_and_erasure():
    result = facts.train(steps=40, batch_size=16, progress=False)
    assert sum(result["losses"][-5:]) < sum(result["losses"][:5])
    model = facts.trained_model(result)
    assert isinstance(model, gpt.TinyGPT) and isinstance(model.blocks[0].mlp[1], nn.ReLU)
    scores = facts.fact_attribution(model, "Poland")
    assert scores.shape == (2, 512) and torch.isfinite(scores).all()
    result = facts.erasure(model, "Poland", ffn.top_memories(scores, 10))
    assert set(result) == {"p", "answered", "p in context", "answered in context", "other capitals", "languages",
                           "filler"}
