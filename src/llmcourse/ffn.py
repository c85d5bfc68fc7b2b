"""The feed-forward layer, read as a key-value memory (Geva et al. 2021), and the tools to find and erase facts in it.

FFN(x) = ReLU(x W1 + b1) W2 + b2. Column i of W1 is memory i's *key*: the hidden activation a_i = ReLU(x . W1[:, i]
+ b1[i]) says how strongly the input matches it. Row i of W2 is memory i's *value*: the output is the sum of the
values weighted by the activations, plus b2. A value read through the unembedding says which next tokens the memory
promotes. Zeroing chosen activations (ablation) removes what those memories write.

Shapes: x (..., d_model), W1 (d_model, d_ff), b1 (d_ff,), W2 (d_ff, d_model), b2 (d_model,), unembedding
(vocab, d_model): the worked example's orientation, x times a matrix. `torch.nn.Linear` stores its weight transposed,
(out_features, in_features); `linear_weights` converts. Explained in chapter 04_ffn_memory.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn


def ffn(x: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor,
        activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu) -> torch.Tensor:
    """activation(x W1 + b1) W2 + b2: (..., d_model) -> (..., d_model). Explained in chapter 04_ffn_memory."""
    return activation(x @ W1 + b1) @ W2 + b2


def key_activations(x: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor,
                    activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu) -> torch.Tensor:
    """How strongly x matches each memory's key: (..., d_model) -> (..., d_ff). Explained in chapter 04_ffn_memory."""
    return activation(x @ W1 + b1)


def weighted_values(activations: torch.Tensor, W2: torch.Tensor) -> torch.Tensor:
    """Each memory's value (row i of W2) times its activation: (..., d_ff) -> (..., d_ff, d_model).

    Summed over the memories (dim -2), plus b2, it is the FFN's output. Explained in chapter 04_ffn_memory.
    """
    return activations[..., :, None] * W2                        # (..., d_ff, 1) * (d_ff, d_model)


def promoted_tokens(value: torch.Tensor, unembedding: torch.Tensor, k: int) -> list[int]:
    """The k tokens whose logits a value vector raises most, most promoted first: (d_model,) -> k token ids.

    Explained in chapter 04_ffn_memory.
    """
    logits = unembedding @ value                                  # (vocab,): what adding `value` does to each logit
    return torch.topk(logits, k).indices.tolist()


def ablate_memories(activations: torch.Tensor, memories: Sequence[int]) -> torch.Tensor:
    """A copy of the activations (..., d_ff) with the chosen memories set to zero: they write nothing.

    Explained in chapter 04_ffn_memory.
    """
    out = activations.clone()
    out[..., list(memories)] = 0
    return out


def fact_memories(x: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor, unembedding: torch.Tensor,
                  answer: int, k: int) -> list[int]:
    """The k memories that raise the answer's logit most at the residual x (d_model,), largest contribution first.

    Memory i adds a_i * (W2[i] . unembedding[answer]) to the answer's logit: its activation on this input times
    how much its value points at the answer. Explained in chapter 04_ffn_memory.
    """
    contribution = key_activations(x, W1, b1) * (W2 @ unembedding[answer])   # (d_ff,)
    return torch.topk(contribution, k).indices.tolist()


def layer_parameters(d_model: int, d_ff: int, kv_dim: int | None = None, gated: bool = False,
                     bias: bool = True) -> dict[str, int]:
    """Parameters of one transformer layer's attention and FFN (LayerNorms left out: 2-4 x d_model more).

    Attention: W_q and W_o (d_model x d_model), W_k and W_v (d_model x kv_dim; kv_dim = d_model unless keys and
    values are shared between heads). FFN: W1 (d_model x d_ff) and W2 (d_ff x d_model), plus a third "gate"
    matrix in gated FFNs (SwiGLU, as in Llama and SmolLM2). Biases when `bias`. Explained in chapter 04_ffn_memory.
    """
    kv_dim = kv_dim or d_model
    attention = 2 * d_model * d_model + 2 * d_model * kv_dim + (2 * d_model + 2 * kv_dim if bias else 0)
    ffn_ = (3 if gated else 2) * d_model * d_ff + ((d_ff * (2 if gated else 1) + d_model) if bias else 0)
    return {"attention": attention, "ffn": ffn_}


# --- the same ideas on a torch model, with hooks ------------------------------------------------------------

def linear_weights(mlp: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W1, b1, W2, b2) of a Linear-activation-Linear MLP, in the x @ W orientation (nn.Linear stores W transposed)."""
    first, second = mlp[0], mlp[-1]
    return first.weight.T, first.bias, second.weight.T, second.bias


@contextmanager
def recording(value_layers: Sequence[nn.Module], detach: bool = True) -> Iterator[list[torch.Tensor]]:
    """Within the block, the list holds each value layer's input (the key activations) of the last forward pass.

    A value layer is the FFN's second linear map (`mlp[2]` in `llmcourse.gpt`, `mlp.down_proj` in Llama-style
    models): its input has one number per memory, (batch, seq, d_ff). With detach=False the inputs stay in the
    autograd graph, so gradients with respect to them can be taken. Explained in chapter 04_ffn_memory.
    """
    records: list[torch.Tensor] = [torch.empty(0)] * len(value_layers)

    def hook(layer: int):
        def save(module, inputs):
            records[layer] = inputs[0].detach() if detach else inputs[0]
        return save

    handles = [module.register_forward_pre_hook(hook(i)) for i, module in enumerate(value_layers)]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def ablating(value_layers: Sequence[nn.Module], memories: Sequence[tuple[int, int]]) -> Iterator[None]:
    """Within the block, the chosen (layer, memory) pairs are zeroed before the value layer: a forward pre-hook.

    Explained in chapter 04_ffn_memory.
    """
    by_layer: dict[int, list[int]] = {}
    for layer, memory in memories:
        by_layer.setdefault(int(layer), []).append(int(memory))
    handles = [value_layers[layer].register_forward_pre_hook(
        lambda module, inputs, chosen=chosen: (ablate_memories(inputs[0], chosen), *inputs[1:]))
        for layer, chosen in by_layer.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def memory_attribution(logits_fn: Callable[[], torch.Tensor], value_layers: Sequence[nn.Module],
                       answers: torch.Tensor) -> torch.Tensor:
    """How much each memory raises the answer's logit at the last position: activation x gradient, (n_layers, d_ff).

    `logits_fn()` runs the model and returns (batch, seq, vocab) logits; `answers` (batch,) are the expected next
    tokens. The score is read on the answer's logit minus the mean logit (adding the same to every logit changes
    nothing), not on its probability, which saturates near 1 and then hides every contribution. For an FFN read
    straight into the logits it is each memory's contribution a_i * (W2[i] . u_answer) (up to the mean); deeper
    down it also counts, to first order, what later layers make of it. Averaged over the batch.
    Explained in chapter 04_ffn_memory.
    """
    with recording(value_layers, detach=False) as saved, torch.enable_grad():
        logits = logits_fn()[:, -1].float()                                  # (batch, vocab)
        margin = logits[torch.arange(len(answers)), answers] - logits.mean(-1)
        grads = torch.autograd.grad(margin.sum(), saved)
    return torch.stack([(a[:, -1] * g[:, -1]).mean(0).detach() for a, g in zip(saved, grads)])


def top_memories(scores: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The k (layer, memory) pairs with the largest scores (n_layers, d_ff), best first."""
    flat = torch.topk(scores.flatten(), k).indices
    return [divmod(int(i), scores.shape[1]) for i in flat]


@torch.no_grad()
def top_prefixes(run: Callable[[torch.Tensor], object], value_layer: nn.Module, memory: int, tokens: torch.Tensor,
                 k: int = 5) -> list[tuple[int, int, float]]:
    """Geva et al.'s view of a key: the k prefixes (row, last position, activation) that excite a memory most.

    `run(tokens)` runs the model on (batch, seq) tokens; the activation of `memory` is read at every position of
    every row. Explained in chapter 04_ffn_memory.
    """
    with recording([value_layer]) as records:
        run(tokens)
    act = records[0][..., memory]                                          # (batch, seq)
    best = torch.topk(act.flatten(), k).indices
    return [(int(i) // act.shape[1], int(i) % act.shape[1], float(act.flatten()[i])) for i in best]


# --- a one-layer memory built by hand, for the exercise ------------------------------------------------------

def planted_memories(seed: int = 0, d_model: int = 16, d_ff: int = 48, vocab: int = 40, n_facts: int = 6,
                     per_fact: int = 3) -> dict:
    """A residual stream, one FFN and an unembedding in which each fact (subject -> answer) is stored by hand.

    Subject s is a direction embedding[s]; each fact has `per_fact` memories whose key fires on that subject alone
    and whose value points at the answer's unembedding row. Around them: "busy" memories whose keys fire on every
    input (large activations, values pointing at token 0, a common word), "dormant" memories whose values point at
    the answers even more strongly but whose keys never fire, and noise. Returns {"embedding": (n_facts, d_model),
    "W1", "b1", "W2", "b2", "unembedding": (vocab, d_model), "answers": [answer token of each subject],
    "stored": {subject: [its memories]}}. Explained in chapter 04_ffn_memory.
    """
    gen = torch.Generator().manual_seed(seed)

    def unit(*shape: int) -> torch.Tensor:
        v = torch.randn(*shape, d_model, generator=gen)
        return v / v.norm(dim=-1, keepdim=True)

    embedding, unembedding = 3 * unit(n_facts), 2 * unit(vocab)
    answers = (torch.randperm(vocab - 1, generator=gen)[:n_facts] + 1).tolist()  # token 0 is the common word
    W1 = torch.randn(d_model, d_ff, generator=gen) * 0.1
    b1 = torch.full((d_ff,), -1.0)
    W2 = torch.randn(d_ff, d_model, generator=gen) * 0.05
    slots = torch.randperm(d_ff, generator=gen).tolist()
    stored = {}
    for s, answer in enumerate(answers):
        memories = [slots.pop() for _ in range(per_fact)]
        stored[s] = sorted(memories)
        for m in memories:
            W1[:, m] = embedding[s] / 3 * (1.0 + 0.5 * torch.rand(1, generator=gen))  # x . key = 3 on s, ~0 elsewhere
            W2[m] = unembedding[answer] * 0.25                                 # raises the answer's logit by 1 per unit
    for _ in range(4):                                                          # busy: fire on everything
        m = slots.pop()
        b1[m] = 3.0
        W2[m] = unembedding[0] * 0.1
    for answer in answers:                                                      # dormant: right value, silent key
        for _ in range(per_fact):
            m = slots.pop()
            b1[m] = -50.0
            W2[m] = unembedding[answer] * 0.6
    b2 = torch.zeros(d_model)                                                 # every change is some memory's
    return {"embedding": embedding, "W1": W1, "b1": b1, "W2": W2, "b2": b2, "unembedding": unembedding,
            "answers": answers, "stored": stored}


def answer_probability(x: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor,
                       unembedding: torch.Tensor, answer: int, ablated: Sequence[int] = ()) -> float:
    """p(answer) when the residual x (d_model,) plus the FFN's output is read through the unembedding.

    `ablated` memories are zeroed first. Explained in chapter 04_ffn_memory.
    """
    a = ablate_memories(key_activations(x, W1, b1), ablated)                 # (d_ff,)
    residual = x + a @ W2 + b2                                                # the FFN adds to the residual stream
    return float(torch.softmax(unembedding @ residual, -1)[answer])
