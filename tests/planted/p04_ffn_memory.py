"""Typical mistakes in exercise 04_ffn_memory."""

SOLVED_VALUES = '''
def weighted_values(activations, W2):
    return activations[..., :, None] * W2
'''

SOLVED_KEYS = '''
def key_activations(x, W1, b1):
    return torch.relu(x @ W1 + b1)
'''

FFN_TESTS = ["test_ffn", "test_ffn_hidden"]
LATER_TESTS = ["test_promoted_tokens", "test_ablate_memories", "test_find_fact_memories", "test_memories_hidden"]
MEMORY_TESTS = ["test_key_activations", "test_weighted_values"]


def _later(fails: list[str]) -> list[str]:
    """The tests of sections 3-5 that a mistake in `fails` does not touch."""
    return [t for t in LATER_TESTS if t not in fails]


PLANTED = {
    "ffn_no_b1": dict(
        cell="ffn",
        source='''
def ffn(x, W1, b1, W2, b2):
    return torch.relu(x @ W1) @ W2 + b2
''',
        fails=FFN_TESTS, keeps=MEMORY_TESTS + LATER_TESTS,
        message="the bias b1 is missing"),
    "ffn_relu_after_w2": dict(
        cell="ffn",
        source='''
def ffn(x, W1, b1, W2, b2):
    return torch.relu((x @ W1 + b1) @ W2 + b2)
''',
        fails=FFN_TESTS, keeps=MEMORY_TESTS + LATER_TESTS,
        message="the ReLU is applied after W2"),
    "ffn_transposed": dict(
        cell="ffn",
        source='''
def ffn(x, W1, b1, W2, b2):
    return torch.relu(x @ W1.T + b1) @ W2.T + b2
''',
        fails=FFN_TESTS, keeps=MEMORY_TESTS + LATER_TESTS,
        message="W1 has shape (d_model, d_ff) and W2 (d_ff, d_model): compute x @ W1"),
    "keys_no_relu": dict(
        cell="memories",
        source='''
def key_activations(x, W1, b1):
    return x @ W1 + b1
''' + SOLVED_VALUES,
        fails=["test_key_activations", "test_ffn_hidden"], keeps=["test_ffn", "test_weighted_values"] + LATER_TESTS,
        message="the ReLU is missing: a key that does not match"),
    "values_summed": dict(
        cell="memories",
        source=SOLVED_KEYS + '''
def weighted_values(activations, W2):
    return activations @ W2
''',
        fails=["test_weighted_values", "test_ffn_hidden"], keeps=["test_ffn", "test_key_activations"] + LATER_TESTS,
        message="that is already the sum over the memories"),
    "promoted_bottom_k": dict(
        cell="promoted_tokens",
        source='''
def promoted_tokens(value, unembedding, k):
    return torch.topk(-(unembedding @ value), k).indices.tolist()
''',
        fails=["test_promoted_tokens", "test_memories_hidden"],
        keeps=FFN_TESTS + MEMORY_TESTS + _later(["test_promoted_tokens", "test_memories_hidden"]),
        message="the value pushes *down*"),
    "ablate_rows": dict(
        cell="ablate_memories",
        source='''
def ablate_memories(activations, memories):
    out = activations.clone()
    out[list(memories)] = 0
    return out
''',
        fails=["test_ablate_memories", "test_memories_hidden"],
        keeps=FFN_TESTS + MEMORY_TESTS + _later(["test_ablate_memories", "test_memories_hidden"]),
        message="memories are the *last* axis"),
    "fact_by_activation": dict(
        cell="find_fact_memories",
        source='''
def find_fact_memories(x, W1, b1, W2, unembedding, answer, k):
    return torch.topk(torch.relu(x @ W1 + b1), k).indices.tolist()
''',
        fails=["test_find_fact_memories", "test_memories_hidden"],
        keeps=FFN_TESTS + MEMORY_TESTS + ["test_promoted_tokens", "test_ablate_memories"],
        message="You chose the memories that fire most on this input"),
    "fact_by_value": dict(
        cell="find_fact_memories",
        source='''
def find_fact_memories(x, W1, b1, W2, unembedding, answer, k):
    return torch.topk(W2 @ unembedding[answer], k).indices.tolist()
''',
        fails=["test_find_fact_memories", "test_memories_hidden"],
        keeps=FFN_TESTS + MEMORY_TESTS + ["test_promoted_tokens", "test_ablate_memories"],
        message="but their keys do not fire on this input"),
}

PLANTED.update({
    "ablate_in_place": dict(
        cell="ablate_memories",
        source='''
def ablate_memories(activations, memories):
    activations[..., list(memories)] = 0
    return activations
''',
        fails=["test_ablate_memories", "test_memories_hidden"],
        keeps=FFN_TESTS + MEMORY_TESTS + ["test_promoted_tokens", "test_find_fact_memories"],
        message="changed the caller's activations too"),
    "fact_by_absolute_effect": dict(
        cell="find_fact_memories",
        source='''
def find_fact_memories(x, W1, b1, W2, unembedding, answer, k):
    contribution = torch.relu(x @ W1 + b1) * (W2 @ unembedding[answer])
    return torch.topk(contribution.abs(), k).indices.tolist()
''',
        fails=["test_find_fact_memories", "test_memories_hidden"],
        keeps=FFN_TESTS + MEMORY_TESTS + ["test_promoted_tokens", "test_ablate_memories"],
        message="You chose memories that push the answer *down*"),
})

PLANTED.update({
    "ffn_uses_linear": dict(
        cell="ffn",
        source='''
def ffn(x, W1, b1, W2, b2):
    first = torch.nn.Linear(W1.shape[0], W1.shape[1])
    with torch.no_grad():
        first.weight.copy_(W1.T)
        first.bias.copy_(b1)
    return torch.relu(first(x)) @ W2 + b2
''',
        fails=FFN_TESTS, keeps=MEMORY_TESTS + LATER_TESTS,
        message="uses `torch.nn.Linear`"),
})

IN_MODEL_TESTS = ["test_find_memories_in_model", "test_memories_in_model_hidden"]

PLANTED.update({
    "memories_in_model_absolute": dict(
        cell="find_memories_in_model",
        source='''
def find_memories_in_model(inputs, k):
    scores = []
    for layer in range(len(inputs["x"])):
        a = torch.relu(inputs["x"][layer] @ inputs["W1"][layer] + inputs["b1"][layer])
        scores.append(a * (inputs["W2"][layer] @ inputs["directions"][layer]))
    scores = torch.stack(scores)
    best = torch.topk(scores.flatten().abs(), k).indices.tolist()   # the largest effects, whatever their sign
    return [(i // scores.shape[1], i % scores.shape[1]) for i in best]
''',
        fails=IN_MODEL_TESTS, keeps=FFN_TESTS + MEMORY_TESTS + LATER_TESTS,
        message="You ranked the memories by the size of their contribution, whatever its sign"),
    "memories_in_model_flat_index": dict(
        cell="find_memories_in_model",
        source='''
def find_memories_in_model(inputs, k):
    scores = []
    for layer in range(len(inputs["x"])):
        a = torch.relu(inputs["x"][layer] @ inputs["W1"][layer] + inputs["b1"][layer])
        scores.append(a * (inputs["W2"][layer] @ inputs["directions"][layer]))
    n_layers = len(scores)
    best = torch.topk(torch.stack(scores).flatten(), k).indices.tolist()
    return [divmod(i, n_layers) for i in best]                      # flat index -> (layer, memory), wrongly
''',
        fails=IN_MODEL_TESTS, keeps=FFN_TESTS + MEMORY_TESTS + LATER_TESTS,
        message="flat index i is layer i // d_ff and memory i % d_ff"),
    "memories_in_model_activation_only": dict(
        cell="find_memories_in_model",
        source='''
def find_memories_in_model(inputs, k):
    a = torch.stack([torch.relu(inputs["x"][layer] @ inputs["W1"][layer] + inputs["b1"][layer])
                     for layer in range(len(inputs["x"]))])          # how strongly each memory fires, alone
    best = torch.topk(a.flatten(), k).indices.tolist()
    return [(i // a.shape[1], i % a.shape[1]) for i in best]
''',
        fails=IN_MODEL_TESTS, keeps=FFN_TESTS + MEMORY_TESTS + LATER_TESTS,
        message="You chose the memories that fire most"),
})
