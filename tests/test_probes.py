"""The conclusion's false-belief scoring: p(answer | prompt) for candidate continuations of SmolLM2."""
from __future__ import annotations

import math

import pytest
import torch

from llmcourse import data, probes


@pytest.fixture(scope="module")
def smol():
    return data.smollm2()


def test_one_token_answer_is_the_next_token_probability(smol):
    model, tokenizer = smol
    prompt = "The capital of Poland is"
    warsaw, paris = probes.answer_probs(model, tokenizer, prompt, [" Warsaw", " Paris"])
    top = dict(probes.next_tokens(model, tokenizer, prompt, 5))
    assert abs(warsaw - top[" Warsaw"]) < 1e-5, (warsaw, top)
    assert warsaw > 10 * paris, "SmolLM2 should prefer Warsaw to Paris as Poland's capital"


def test_many_token_answer_follows_the_chain_rule(smol):
    model, tokenizer = smol
    prompt, answer = "Sam opened the bag. It was full of", " strawberry jam"
    tail = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert len(tail) > 1, "the test needs an answer of several tokens"
    by_hand, ids = 0.0, tokenizer(prompt)["input_ids"]
    for token in tail:                                   # one forward pass per token, as generation does
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        by_hand += float(torch.log_softmax(logits, -1)[token])
        ids = ids + [token]
    assert math.isclose(probes.continuation_logprob(model, tokenizer, prompt, answer), by_hand, abs_tol=1e-3)
    (p,) = probes.answer_probs(model, tokenizer, prompt, [answer])
    assert math.isclose(p, math.exp(by_hand), rel_tol=1e-3)


# --- causal tracing and head ablation, on a tiny random Llama (fast) and on SmolLM2's cached results ----------

@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def _restored_by_hand(model, clean, corrupted, target, module, layer_module_clean, position):
    """p(target) of the corrupted runs with `module`'s output at `position` set to the clean run's."""
    def put(m, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        out[:, position] = layer_module_clean[position]
        return output

    handle = module.register_forward_hook(put)
    try:
        with torch.no_grad():
            return torch.softmax(model(corrupted).logits[:, -1], -1)[:, target].mean().item()
    finally:
        handle.remove()


@pytest.mark.parametrize("kind", probes.TRACE_KINDS)
def test_causal_trace_equals_restoring_one_output_by_hand(tiny_llama, kind):
    """Position 3 corrupted two ways: every (layer, position) of the trace is the corrupted runs' p(target) with that
    one output put back by a hook, positions before 3 included (there it must not change anything); the last
    block's output at the last position gives back the clean probability exactly."""
    clean = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    corrupted = clean.repeat(2, 1)
    corrupted[:, 3] = torch.tensor([20, 30])
    trace = probes.causal_trace(tiny_llama, clean, corrupted, target=12, kind=kind)
    assert trace["restored"].shape == (4, 7)
    assert trace["clean"] != pytest.approx(trace["corrupted"], rel=1e-3), "the corruption must matter for this test"
    modules = {"hidden": list(tiny_llama.model.layers), "mlp": [l.mlp for l in tiny_llama.model.layers],
               "attn": [l.self_attn for l in tiny_llama.model.layers]}[kind]
    for layer, module in enumerate(modules):
        kept = []
        handle = module.register_forward_hook(
            lambda m, i, o: kept.append((o[0] if isinstance(o, tuple) else o)[0].clone()))
        with torch.no_grad():
            tiny_llama(clean)
        handle.remove()
        for position in range(7):
            by_hand = _restored_by_hand(tiny_llama, clean, corrupted, 12, module, kept[0], position)
            assert trace["restored"][layer, position].item() == pytest.approx(by_hand, rel=1e-4, abs=1e-7), \
                (kind, layer, position)
    if kind == "hidden":
        assert trace["restored"][-1, -1].item() == pytest.approx(trace["clean"], rel=1e-5)
    wide = probes.causal_trace(tiny_llama, clean, corrupted, target=12, kind=kind, window=3)
    assert not torch.allclose(wide["restored"][:, 3:], trace["restored"][:, 3:]), "window must widen the restore"


def test_ablating_heads_zero_and_mean(tiny_llama):
    """Zeroing every head of a block silences its attention; a one-token text's mean is its own output."""
    tokens = torch.tensor([[3, 4, 5, 6]])
    seen = []
    handle = tiny_llama.model.layers[1].self_attn.register_forward_hook(lambda m, i, o: seen.append(o[0]))
    try:
        with probes.ablating_heads(tiny_llama, [(1, h) for h in range(4)]):
            ablated = tiny_llama(tokens).logits
    finally:
        handle.remove()
    assert seen[0].abs().max() == 0
    assert not torch.allclose(ablated, tiny_llama(tokens).logits)
    with probes.ablating_heads(tiny_llama, [(1, 2)]):                 # one head: the others still write
        one = tiny_llama(tokens).logits
    assert not torch.allclose(one, ablated)
    single = tokens[:, :1]
    means = probes.head_means(tiny_llama, [single])
    assert means.shape == (4, 4, 8)
    intact = tiny_llama(single).logits
    with probes.ablating_heads(tiny_llama, [(0, 1), (2, 3)], means):
        assert torch.allclose(tiny_llama(single).logits, intact, atol=1e-5)
    with probes.ablating_heads(tiny_llama, [(0, 1), (2, 3)], means + 1):
        assert not torch.allclose(tiny_llama(single).logits, intact, atol=1e-5)
