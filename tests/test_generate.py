"""Sampling and generation (chapter 05_gpt): distributions, seeds, and the KV cache changing nothing but speed."""
from __future__ import annotations

import torch

from llmcourse import data, generate, gpt, probes

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])


def test_temperature_top_k_top_p():
    p = generate.distribution(LOGITS)
    torch.testing.assert_close(p, torch.softmax(LOGITS.double(), -1))
    cold, hot = generate.distribution(LOGITS, 0.2), generate.distribution(LOGITS, 5.0)
    assert cold[0] > p[0] > hot[0] and abs(float(hot.sum()) - 1) < 1e-12
    assert generate.distribution(LOGITS, 0).tolist() == [1, 0, 0, 0, 0]
    assert (generate.distribution(LOGITS, top_k=2) > 0).tolist() == [True, True, False, False, False]
    # p = (.563, .207, .126, .076, .028): top-p 0.5 keeps the first token only, 0.8 the first three (.896)
    assert (generate.distribution(LOGITS, top_p=0.5) > 0).sum() == 1
    assert (generate.distribution(LOGITS, top_p=0.8) > 0).sum() == 3
    assert (generate.distribution(LOGITS, top_p=1.0) > 0).sum() == 5


def test_seeded_sampling_repeats():
    draws = lambda seed: [generate.sample(LOGITS, 1.0, generator=g) for g in [torch.Generator().manual_seed(seed)]  # noqa: E731
                          for _ in range(20)]
    assert draws(3) == draws(3) and draws(3) != draws(4)


def test_tiny_cached_equals_uncached():
    model = gpt.tiny_model(0)
    assert generate.greedy_cached(model, [1, 2, 3], 12)[0] == generate.generate(model, [1, 2, 3], 12, 0, cache=False)
    assert generate.greedy_cached(model, [1, 2, 3], 12)[1][1][0].shape == (2, 15, 8)
    seeded = lambda cache: generate.generate(model, [4, 5], 12, 1.5, top_p=0.95, cache=cache,  # noqa: E731
                                             generator=torch.Generator().manual_seed(0))
    assert seeded(True) == seeded(False)


def test_smollm2_cached_equals_uncached_and_lens_ends_at_the_output():
    model, tokenizer = data.smollm2()
    ids = probes.encode(tokenizer, "The capital of Poland is")
    run = lambda cache: generate.generate_hf(model, ids, 8, 0.7, top_k=50, cache=cache,  # noqa: E731
                                             generator=torch.Generator().manual_seed(0))
    assert run(True)["tokens"] == run(False)["tokens"]
    with torch.no_grad():
        last = model(ids).logits[0, -1]
    torch.testing.assert_close(probes.layer_logits(model, ids)[-1], last, atol=1e-3, rtol=1e-4)
    table = probes.lens_table(model, ids)
    assert len(table) == 30 and probes.first_top1(table, table[-1][0][0]) is not None


def test_tiny_logit_lens_ends_at_the_output():
    torch.manual_seed(0)
    model = gpt.TinyGPT(20, 8).eval()
    tokens = torch.randint(0, 20, (1, 8))
    torch.testing.assert_close(probes.layer_logits(model, tokens)[-1], model(tokens)[0, -1].detach())
