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
