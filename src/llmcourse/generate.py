"""Choosing the next token, and the loop that writes text one token at a time, with and without a KV cache.

From logits (vocab,) to a distribution: divide by a temperature, keep the k most likely tokens (top-k) or the
smallest set whose probability reaches p (top-p, nucleus sampling; Holtzman et al. 2020), renormalise, then
draw with a seeded `torch.Generator`. Temperature 0 means greedy: always the most likely token.

The loop feeds each new token back in. Without a cache it runs the whole sequence again at every step; with
one it runs only the new token and reads the earlier tokens' keys and values from memory. Both give the same
tokens. For our TinyGPT the cache is ours (`gpt.step`); for SmolLM2 it is transformers' `DynamicCache`.

Explained in chapter 05_gpt.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from llmcourse import gpt


def distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> torch.Tensor:
    """logits (vocab,) -> probabilities (vocab,): softmax(logits / T), then top-k, then top-p, each renormalised.

    Top-p keeps the most likely tokens up to and including the one at which their sum first reaches p.
    Temperature 0 puts all the probability on the most likely token.
    """
    logits = logits.double()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(), logits.shape[-1]).double()
    probs = torch.softmax(logits / temperature, -1)
    if top_k is not None:
        kth = torch.topk(probs, top_k).values[-1]
        probs = torch.where(probs >= kth, probs, 0.0)
        probs = probs / probs.sum()
    if top_p is not None:
        sorted_p, order = torch.sort(probs, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p                    # mass of the more likely tokens
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[order] = before < top_p
        probs = torch.where(keep, probs, 0.0)
    return probs / probs.sum()


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> int:
    """One token id drawn from `distribution(...)` with `torch.multinomial` and the given generator."""
    probs = distribution(logits, temperature, top_k, top_p)
    return int(torch.multinomial(probs, 1, generator=generator))


# --- the loop, for a TinyGPT given as `gpt.weights(model)` --------------------------------------------------

def greedy_cached(model: dict, prompt: list[int], n_new: int):
    """Greedy generation with a KV cache from a TinyGPT given as `gpt.weights(model)`.

    Returns the n_new tokens and the final cache: per layer (keys, values), each (n_heads, len(prompt) + n_new,
    d_head), the keys and values of every token, the generated ones included.
    """
    tokens = list(prompt)
    logits, cache = gpt.step(model, torch.tensor(tokens))                 # (len(prompt), vocab)
    for _ in range(n_new):
        tokens.append(int(logits[-1].argmax()))
        logits, new = gpt.step(model, torch.tensor(tokens[-1:]), len(tokens) - 1, cache)
        cache = gpt.append_cache(cache, new)
    return tokens[len(prompt):], cache


def generate(model: dict, prompt: list[int], n_new: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None, cache: bool = True) -> list[int]:
    """n_new tokens after `prompt` from a TinyGPT given as `gpt.weights(model)`.

    With `cache`, the prompt runs once and each later step runs one token at position len(tokens) - 1,
    reading every earlier key and value from the cache; without it, each step runs the whole sequence.
    """
    tokens = list(prompt)
    logits, kv = gpt.step(model, torch.tensor(tokens))                    # (len(prompt), vocab)
    for i in range(n_new):
        tokens.append(sample(logits[-1], temperature, top_k, top_p, generator))
        if i == n_new - 1:
            break
        if cache:
            logits, new = gpt.step(model, torch.tensor(tokens[-1:]), len(tokens) - 1, kv)
            kv = gpt.append_cache(kv, new)
        else:
            logits, _ = gpt.step(model, torch.tensor(tokens))
    return tokens[len(prompt):]


# --- the loop, for a transformers model (SmolLM2) ------------------------------------------------------------

@torch.no_grad()
def generate_hf(model, prompt: torch.Tensor, n_new: int, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None, cache: bool = True,
                show: int = 0) -> dict:
    """n_new tokens after `prompt` (1, n) from a transformers causal LM, one token at a time.

    Returns {"tokens": [ids], "top": per step the `show` most likely (id, probability) before sampling,
    "seconds" and "cpu_seconds": wall-clock and processor time of the loop, and both per step}. Processor time
    counts only this process's work, so it is not inflated when other jobs share the machine. With `cache`, each step after the first feeds only the new token
    and transformers' `DynamicCache` holds the keys and values of the earlier ones.
    """
    from transformers import DynamicCache

    ids, past, out, top, times, cpu = prompt, (DynamicCache() if cache else None), [], [], [], []
    for _ in range(n_new):
        times.append(time.perf_counter())
        cpu.append(time.process_time())
        result = model(input_ids=ids, cache=past, use_cache=cache)
        logits = result.logits[0, -1].float()                           # (vocab,)
        if show:
            p = torch.softmax(logits, -1).topk(show)
            top.append([(int(i), float(q)) for q, i in zip(p.values, p.indices)])
        out.append(sample(logits, temperature, top_k, top_p, generator))
        new = torch.tensor([[out[-1]]])
        ids = new if cache else torch.cat([ids, new], 1)
        past = result.cache if cache else None
    times.append(time.perf_counter())
    cpu.append(time.process_time())
    return {"tokens": out, "top": top, "seconds": times[-1] - times[0], "cpu_seconds": cpu[-1] - cpu[0],
            "step_seconds": np.diff(times).tolist(), "step_cpu_seconds": np.diff(cpu).tolist()}


def kv_cache_benchmark(prompt: str, n_new: int = 200, threads: int = 2) -> dict:
    """SmolLM2 writes n_new greedy tokens after `prompt` with and without its KV cache, in one run.

    Returns both runs (tokens, wall-clock and processor seconds, in all and per step) and whether the tokens
    are equal. A ratio of the two times is what to report: the absolute times depend on the machine.
    Explained in chapter 05_gpt.
    """
    from llmcourse import data

    model, tokenizer = data.smollm2()
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = {name: generate_hf(model, ids, n_new, temperature=0, cache=cache)
                for name, cache in [("cached", True), ("uncached", False)]}
    finally:
        torch.set_num_threads(before)
    runs["same tokens"] = runs["cached"]["tokens"] == runs["uncached"]["tokens"]
    return runs


def continuations(prompt: str, settings: list[dict], n_new: int, seed: int = 0, show: int = 0) -> list[dict]:
    """SmolLM2's n_new tokens after `prompt` under each sampling setting (keyword arguments of `generate_hf`),
    each drawn with a generator seeded with `seed`: [{"tokens", "text", "top"}], for `data.cached`."""
    from llmcourse import data

    model, tokenizer = data.smollm2()
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    runs = []
    for setting in settings:
        run = generate_hf(model, ids, n_new, generator=torch.Generator().manual_seed(seed), show=show, **setting)
        runs.append({"tokens": run["tokens"], "text": tokenizer.decode(run["tokens"]), "top": run["top"]})
    return runs
