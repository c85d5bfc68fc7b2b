"""The graded checks of 04_ffn_memory: mistakes beyond the planted ones, wrong types, shapes and NaN are named.

What every check must do (pass the solution, refuse the reference, name the planted mistakes) is tested
for all exercises in test_checks_all.py.
"""
from __future__ import annotations

import pytest
import torch

from conftest import notebook_namespace
from llmcourse import checks

SOLUTION = notebook_namespace("04_ffn_memory")


def test_wrong_types_and_shapes_are_named():
    with pytest.raises(AssertionError, match="returned None"):
        checks.check_ablate_memories(lambda a, m: None)
    with pytest.raises(AssertionError, match="list of integer token ids"):
        checks.check_promoted_tokens(lambda v, U, k: torch.topk(U @ v, k).values)
    with pytest.raises(AssertionError, match=r"returned shape"):
        checks.check_ffn(lambda x, W1, b1, W2, b2: (torch.relu(x @ W1 + b1) @ W2 + b2).sum(-1))
    with pytest.raises(AssertionError, match="NaN"):
        checks.check_key_activations(lambda x, W1, b1: torch.full((*x.shape[:-1], W1.shape[1]), float("nan")))


def test_more_ffn_mistakes_are_named():
    with pytest.raises(AssertionError, match="the bias b2 is missing"):
        checks.check_ffn(lambda x, W1, b1, W2, b2: torch.relu(x @ W1 + b1) @ W2)
    with pytest.raises(AssertionError, match="the ReLU is missing"):
        checks.check_ffn(lambda x, W1, b1, W2, b2: (x @ W1 + b1) @ W2 + b2)
    with pytest.raises(AssertionError, match="not GELU"):
        checks.check_ffn(lambda x, W1, b1, W2, b2: torch.nn.functional.gelu(x @ W1 + b1) @ W2 + b2)
    square = dict(shapes=((4, 6, 6),))  # with square matrices a transposed one is a wrong value, named
    with pytest.raises(AssertionError, match="W1 is used the wrong way round"):
        checks.check_ffn(lambda x, W1, b1, W2, b2: torch.relu(x @ W1.T + b1) @ W2 + b2, **square)
    with pytest.raises(AssertionError, match="memory i's key is \\*column\\* i of W1"):
        checks.check_key_activations(lambda x, W1, b1: torch.relu(x @ W1.T + b1), **square)
    # the visible cases are rectangular: a transposed matrix is a shape error, and the message says which shapes
    with pytest.raises(AssertionError, match=r"raised RuntimeError(.|\n)*W1 \(d_model, d_ff\)(.|\n)*wrong way round"):
        checks.check_ffn(lambda x, W1, b1, W2, b2: torch.relu(x @ W1.T + b1) @ W2 + b2)
    with pytest.raises(AssertionError, match=r"raised RuntimeError(.|\n)*\*columns\* are the keys"):
        checks.check_key_activations(lambda x, W1, b1: torch.relu(x @ W1.T + b1))
    with pytest.raises(AssertionError, match="the bias b1 is missing"):
        checks.check_key_activations(lambda x, W1, b1: torch.relu(x @ W1))


def test_more_memory_mistakes_are_named():
    square = dict(shapes=((6, 6),))
    with pytest.raises(AssertionError, match="scale row i by activation i"):
        checks.check_weighted_values(lambda a, W2: a[..., None, :] * W2, **square)
    with pytest.raises(AssertionError, match="the values are the rows of W2"):
        checks.check_weighted_values(lambda a, W2: a[..., :, None] * W2.T, **square)
    with pytest.raises(AssertionError, match=r"raised RuntimeError(.|\n)*row i of W2 is scaled by activation i"):
        checks.check_weighted_values(lambda a, W2: a[..., None, :] * W2)
    with pytest.raises(AssertionError, match="in the wrong order"):
        checks.check_promoted_tokens(lambda v, U, k: sorted(torch.topk(U @ v, k).indices.tolist()))
    with pytest.raises(AssertionError, match="zeroes all the others"):
        checks.check_ablate_memories(lambda a, m: a * torch.isin(torch.arange(a.shape[-1]), torch.tensor(m)))


def test_fact_memories_mistakes_are_named():
    def smallest(x, W1, b1, W2, U, answer, k):
        return torch.topk(-torch.relu(x @ W1 + b1) * (W2 @ U[answer]), k).indices.tolist()
    with pytest.raises(AssertionError, match="push the answer \\*down\\*"):
        checks.check_find_fact_memories(smallest)
    with pytest.raises(AssertionError, match="returned 2 memories, expected k = 3"):
        checks.check_find_fact_memories(lambda *args: SOLUTION["find_fact_memories"](*args)[:2])
    with pytest.raises(AssertionError, match="3 different memory indices"):
        checks.check_find_fact_memories(lambda *args: [0, 0, 1])
    with pytest.raises(AssertionError, match="takes p\\(answer\\) from"):
        checks.check_find_fact_memories(lambda *args: [0, 1, 2])


def test_torch_linear_scores_zero():
    def with_linear(x, W1, b1, W2, b2):
        first = torch.nn.Linear(W1.shape[0], W1.shape[1])
        with torch.no_grad():
            first.weight.copy_(W1.T)
            first.bias.copy_(b1)
        return torch.relu(first(x)) @ W2 + b2
    with pytest.raises(AssertionError, match="uses `torch.nn.Linear`"):
        checks.check_ffn(with_linear)
    assert torch.nn.Linear.forward.__name__ == "forward", "restored after the check"


ALTERNATIVES = '''
def ffn(x, W1, b1, W2, b2):
    hidden = torch.einsum("...d,df->...f", x.float(), W1.float()) + b1
    return torch.einsum("...f,fd->...d", hidden.clamp(min=0), W2.float()) + b2

def key_activations(x, W1, b1):
    return torch.maximum(x @ W1 + b1, torch.zeros(()))

def weighted_values(activations, W2):
    return torch.einsum("...f,fd->...fd", activations, W2)

def promoted_tokens(value, unembedding, k):
    return [int(i) for i in (unembedding @ value).argsort(descending=True)[:k]]

def ablate_memories(activations, memories):
    keep = torch.ones(activations.shape[-1])
    keep[list(memories)] = 0
    return activations * keep

def find_fact_memories(x, W1, b1, W2, unembedding, answer, k):
    scores = [float(key_activations(x, W1, b1)[i] * (W2[i] @ unembedding[answer])) for i in range(W1.shape[1])]
    return sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
'''


def test_correct_alternatives_keep_full_marks(capsys):
    """einsum, float32, clamp/maximum, argsort, a mask product, a loop over memories: right answers pass."""
    ns = notebook_namespace("04_ffn_memory")
    exec(ALTERNATIVES, ns)
    calls = [(checks.check_ffn, "ffn", {}), (checks.check_ffn, "ffn", dict(seed=7, shapes=((4, 6, 6), (2, 2, 3, 5, 20), (1, 1, 32)))),
             (checks.check_key_activations, "key_activations", {}), (checks.check_weighted_values, "weighted_values", {}),
             (checks.check_promoted_tokens, "promoted_tokens", dict(seed=5, ks=(2, 7, 1), vocab=50, d_model=12)),
             (checks.check_ablate_memories, "ablate_memories", {}),
             (checks.check_ablate_memories, "ablate_memories", dict(seed=5, shapes=((5, 7), (7,), (3, 2, 7)), memories=((1, 2, 6), (0,), (6, 5)))),
             (checks.check_find_fact_memories, "find_fact_memories", {}),
             (checks.check_find_fact_memories, "find_fact_memories", dict(seeds=(3, 4), subjects=(3, 4, 5), k=3))]
    for check, name, params in calls:
        check(ns[name], **params)
    assert capsys.readouterr().out.count("✓") == len(calls)


def test_fact_memories_without_relu_is_named():
    def pre_activation(x, W1, b1, W2, U, answer, k):
        return torch.topk((x @ W1 + b1) * (W2 @ U[answer]), k).indices.tolist()
    with pytest.raises(AssertionError, match="apply the ReLU first"):
        checks.check_find_fact_memories(pre_activation)


def test_memories_in_model_are_graded_by_effect(capsys):
    """Another choice that erases the fact as well passes (here: the top memories of the last layer alone); memories
    that change nothing fail with the probabilities; a (memory, layer) order is named."""
    def last_layer(inputs, k):
        a = torch.relu(inputs["x"][1] @ inputs["W1"][1] + inputs["b1"][1])
        return [(1, i) for i in torch.topk(a * (inputs["W2"][1] @ inputs["directions"][1]), k).indices.tolist()]

    checks.check_find_memories_in_model(last_layer)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"p\(Warsaw\) goes from 0\.99\d to 0\.9\d\d"):
        checks.check_find_memories_in_model(lambda inputs, k: [(0, i) for i in range(k)])
    with pytest.raises(AssertionError, match=r"look like \(memory, layer\) pairs"):
        checks.check_find_memories_in_model(lambda inputs, k: [(i + 7, i % 2) for i in range(k)])
    with pytest.raises(AssertionError, match="list of \\(layer, memory\\) pairs"):
        checks.check_find_memories_in_model(lambda inputs, k: list(range(k)))
