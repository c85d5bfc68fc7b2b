"""Probing a pretrained Llama-style model (SmolLM2): next tokens, the logit lens, memories' contributions.

A transformers `LlamaForCausalLM` keeps its blocks in `model.model.layers`; each block's FFN is gated,
down_proj(act(gate_proj(x)) * up_proj(x)), so the input of `down_proj` holds the key activations (d_ff numbers,
one per memory, possibly negative) and column i of `down_proj.weight` is memory i's value. The final RMSNorm
(`model.model.norm`) and `model.lm_head` turn the last residual vector into logits.

Explained in chapter 04_ffn_memory.
"""
from __future__ import annotations

import torch
from torch import nn

from llmcourse import ffn


def value_layers(model: nn.Module) -> list[nn.Module]:
    """Each block's `mlp.down_proj`: its input is the key activations, its weight's columns the values."""
    return [layer.mlp.down_proj for layer in model.model.layers]


def encode(tokenizer, text: str) -> torch.Tensor:
    """(1, n) token ids of `text`, as the model reads it."""
    return torch.tensor([tokenizer(text)["input_ids"]])


@torch.no_grad()
def next_tokens(model: nn.Module, tokenizer, text: str, k: int = 5) -> list[tuple[str, float]]:
    """The k most likely next tokens after `text`, with their probabilities."""
    probs = torch.softmax(model(encode(tokenizer, text)).logits[0, -1].float(), -1)
    top = torch.topk(probs, k)
    return [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]


def token_id(tokenizer, word: str) -> int:
    """The id of a word that is one token (with its leading space: " Warsaw")."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens, not one")
    return ids[0]


@torch.no_grad()
def residuals(model: nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream after each block at the last position: n_layers tensors of shape (d_model,)."""
    saved: list[torch.Tensor] = []

    def keep(module, inputs, output):
        saved.append((output[0] if isinstance(output, tuple) else output)[0, -1])

    handles = [layer.register_forward_hook(keep) for layer in model.model.layers]
    try:
        model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return saved


@torch.no_grad()
def logit_lens(model: nn.Module, tokens: torch.Tensor, target: int) -> tuple[list[int], list[float]]:
    """Read every layer's residual as if it were the last (nostalgebraist, 2020): the target's rank (1 = top) and
    probability after each block, through the final norm and the unembedding."""
    ranks, probs = [], []
    for h in residuals(model, tokens):
        p = torch.softmax(model.lm_head(model.model.norm(h)).float(), -1)
        ranks.append(int((p > p[target]).sum()) + 1)
        probs.append(float(p[target]))
    return ranks, probs


@torch.no_grad()
def contributions(model: nn.Module, tokens: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each memory's direct contribution to the target's logit at the last position, and its activation.

    Memory i of layer l adds a_i * value_i to the residual stream; the final RMSNorm divides the last residual
    by its root mean square and multiplies by its weight g, and the unembedding row u_target reads the result,
    so the contribution is a_i * (value_i . (g * u_target)) / rms (exact, given the rms of this residual).
    Returns (contributions, activations), both (n_layers, d_ff).
    """
    layers = value_layers(model)
    with ffn.recording(layers) as records:
        last = residuals(model, tokens)[-1]
    norm = model.model.norm
    rms = last.pow(2).mean().add(norm.variance_epsilon).sqrt()
    direction = norm.weight * model.lm_head.weight[target]                     # (d_model,)
    acts = torch.stack([r[0, -1] for r in records])                           # (n_layers, d_ff)
    reads = torch.stack([layer.weight.T @ direction for layer in layers])     # (n_layers, d_ff): value . direction
    return acts * reads / rms, acts



@torch.no_grad()
def layer_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The logit lens at the last position: every block's residual through the final norm and the unembedding,
    (n_layers, vocab). For SmolLM2 (transformers) or our TinyGPT. Explained in chapter 05_gpt."""
    from llmcourse import gpt

    if isinstance(model, gpt.TinyGPT):
        x, hs = model.embed(tokens), []
        for block in model.blocks:
            x = block(x)
            hs.append(x[0, -1])
        return model.head(model.ln(torch.stack(hs)))
    return model.lm_head(model.model.norm(torch.stack(residuals(model, tokens)))).float()


def lens_table(model: nn.Module, tokens: torch.Tensor, k: int = 3) -> list[list[tuple[int, float]]]:
    """For each block, the k tokens the logit lens ranks first at the last position, as (id, probability)."""
    probs = torch.softmax(layer_logits(model, tokens).float(), -1)
    top = probs.topk(k)
    return [[(int(i), float(p)) for p, i in zip(ps, ids)] for ps, ids in zip(top.values, top.indices)]


def first_top1(table: list[list[tuple[int, float]]], token: int) -> int | None:
    """The first block (counting from 1) after which `token` is the lens's top-1 and stays so to the end."""
    tops = [row[0][0] for row in table]
    for i in range(len(tops)):
        if all(t == token for t in tops[i:]):
            return i + 1
    return None


def smollm2_lens(prompts: list[str], k: int = 3) -> dict[str, list[list[tuple[int, float]]]]:
    """`lens_table` of SmolLM2 for each prompt, for `data.cached`."""
    from llmcourse import data

    model, tokenizer = data.smollm2()
    return {p: lens_table(model, encode(tokenizer, p), k) for p in prompts}


@torch.no_grad()
def continuation_logprob(model: nn.Module, tokenizer, prompt: str, continuation: str) -> float:
    """log p(continuation | prompt): the sum of the log-probabilities of the continuation's tokens, each given the
    prompt and the tokens before it (one forward pass). `continuation` carries its leading space (" popcorn").
    Explained in the conclusion (false-belief tasks)."""
    head = tokenizer(prompt)["input_ids"]
    tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + tail])                                    # (1, n_prompt + n_tail)
    logp = torch.log_softmax(model(ids).logits[0].float(), -1)           # (n, vocab)
    steps = torch.arange(len(head) - 1, len(head) + len(tail) - 1)       # positions that predict the tail
    return float(logp[steps, torch.tensor(tail)].sum())


def answer_probs(model: nn.Module, tokenizer, prompt: str, answers: list[str]) -> list[float]:
    """p(answer | prompt) for each candidate continuation, e.g. [" popcorn", " chocolate"]: probabilities of whole
    (possibly multi-token) answers, not normalised over the candidates. Explained in the conclusion."""
    return [float(torch.tensor(continuation_logprob(model, tokenizer, prompt, a)).exp()) for a in answers]


def smollm2_answers(items: list[tuple[str, list[str]]]) -> list[list[float]]:
    """`answer_probs` of SmolLM2 for each (prompt, candidate answers), for `data.cached`."""
    from llmcourse import data

    model, tokenizer = data.smollm2()
    return [answer_probs(model, tokenizer, prompt, answers) for prompt, answers in items]


@torch.no_grad()
def answer_steps(prompt: str, steps: int = 4, k: int = 8) -> dict:
    """SmolLM2 answering `prompt` greedily: the prompt's tokens and ids, and at each step the k most likely next
    tokens as (id, text, probability), the first of which is appended. For `data.cached`; shown in the intro.

    Returns {"tokens": [str], "ids": [int], "steps": [[(id, text, p)] * k] * steps}.
    """
    from llmcourse import data

    model, tokenizer = data.smollm2()
    ids = tokenizer(prompt)["input_ids"]
    out = {"tokens": [tokenizer.decode([i]) for i in ids], "ids": list(ids), "steps": []}
    for _ in range(steps):
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)   # (vocab,)
        top = torch.topk(probs, k)
        out["steps"].append([(int(i), tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)])
        ids = ids + [out["steps"][-1][0][0]]                                         # greedy: the most likely
    return out
