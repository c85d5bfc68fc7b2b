"""Probing a pretrained Llama-style model (SmolLM2): next tokens, the logit lens, memories' contributions.

A transformers `LlamaForCausalLM` keeps its blocks in `model.model.layers`; each block's FFN is gated,
down_proj(act(gate_proj(x)) * up_proj(x)), so the input of `down_proj` holds the key activations (d_ff numbers,
one per memory, possibly negative) and column i of `down_proj.weight` is memory i's value. The final RMSNorm
(`model.model.norm`) and `model.lm_head` turn the last residual vector into logits.

Explained in chapter 04_ffn_memory.
"""
from __future__ import annotations

from contextlib import contextmanager

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


# --- contextual vectors and attention patterns (chapters 02_word2vec and 03_attention) ------------------------

@torch.no_grad()
def hidden_states(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Every position's vector after the embedding and after each block: (n_layers + 1, seq, d_model).

    Row 0 is the embedding, the same vector for a token wherever it stands (a static word vector); row l is the
    residual stream after block l, which has mixed in the context (the last row after the final norm, as
    transformers returns it)."""
    out = model(tokens, output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].float()


@torch.no_grad()
def attention_weights(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Every head's attention weights on one text: (n_layers, n_heads, seq, seq), rows the querying token.

    PyTorch's fused attention does not return the weights, so the model runs once with the plain ("eager")
    implementation, which computes the same thing step by step."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        out = model(tokens, output_attentions=True)
    finally:
        config._attn_implementation = before
    return torch.stack(out.attentions)[:, 0].float()


# --- erasing a fact from SmolLM2 (chapter 04_ffn_memory) -----------------------------------------------------

@torch.no_grad()
def erasure_point(model: nn.Module, tokenizer, memories, prompt: str, in_context: str, answer: str,
                  others: dict[str, str]) -> dict:
    """With `memories` [(layer, i)] switched off: p(answer) after `prompt` and after `in_context` (the fact
    stated in the prompt), and the share of the `others` prompts ({prompt: its answer}) still answered first."""
    def probs(text: str) -> torch.Tensor:
        return torch.softmax(model(encode(tokenizer, text)).logits[0, -1].float(), -1)

    target = token_id(tokenizer, answer)
    with ffn.ablating(value_layers(model), memories):
        firsts = []
        for text, other in others.items():
            p = probs(text)
            firsts.append(int((p > p[token_id(tokenizer, other)]).sum()) == 0)
        return {"p": float(probs(prompt)[target]), "p in context": float(probs(in_context)[target]),
                "others top-1": sum(firsts) / len(firsts)}


def smollm2_erasure(prompt: str, in_context: str, answer: str, others: dict[str, str],
                    ks: list[int]) -> dict[str, list[dict]]:
    """`erasure_point` of SmolLM2 for the top k memories, k in `ks`, ranked two ways, for `data.cached`:
    "largest contributions" (each memory's direct contribution to the answer's logit after `prompt`) and
    "specific" (that contribution minus its mean over the `others` prompts)."""
    from llmcourse import data

    model, tokenizer = data.smollm2()
    target = token_id(tokenizer, answer)
    direct, _ = contributions(model, encode(tokenizer, prompt), target)
    elsewhere = torch.stack([contributions(model, encode(tokenizer, t), target)[0] for t in others])
    rankings = {"largest contributions": direct, "specific": direct - elsewhere.mean(0)}
    return {name: [erasure_point(model, tokenizer, ffn.top_memories(score, k), prompt, in_context, answer,
                                 others) for k in ks] for name, score in rankings.items()}


# --- causal tracing: where a fact is recalled (chapter 04_ffn_memory) ------------------------------------------

TRACE_KINDS = ("hidden", "mlp", "attn")  # a block's output (the residual stream), its MLP's output, its attention's


def _trace_modules(model: nn.Module, kind: str) -> list[nn.Module]:
    """The module of each block whose output `kind` names: the block itself, its MLP or its self-attention."""
    layers = list(model.model.layers)
    return {"hidden": layers, "mlp": [l.mlp for l in layers], "attn": [l.self_attn for l in layers]}[kind]


def _first(output):
    """A module's output tensor: transformers' blocks and attention return tuples, the MLP a tensor."""
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def causal_trace(model: nn.Module, clean: torch.Tensor, corrupted: torch.Tensor, target: int,
                 kind: str = "hidden", window: int = 1) -> dict:
    """Causal tracing (Meng et al. 2022) with a corrupted prompt: p(target) at the last position when the corrupted
    run gets back, from the clean run, the output of `kind` ("hidden", "mlp" or "attn") of `window` consecutive
    blocks centred on layer l, at one position i; every (l, i) in turn.

    clean: (1, n) token ids; corrupted: (S, n) token ids of S corrupted prompts of the same length (the subject
    replaced, "Poland" -> "France", or the same ids when noise is added elsewhere). Returns {"clean": p with
    nothing corrupted, "corrupted": mean p over the S corrupted runs, "restored": (n_layers, n) mean p with (l, i)
    restored}. One forward pass per layer, the positions from the first corrupted one on x S prompts in one batch
    (before it the two runs agree, so restoring there gives the corrupted p: not run).
    """
    modules = _trace_modules(model, kind)
    n_layers, (S, n) = len(modules), corrupted.shape
    saved: list[torch.Tensor] = [None] * n_layers

    def keep(l):
        def hook(module, inputs, output):
            saved[l] = _first(output)[0].clone()                             # (n, d_model)
        return hook

    handles = [m.register_forward_hook(keep(l)) for l, m in enumerate(modules)]
    try:
        p_clean = torch.softmax(model(clean).logits[0, -1].float(), -1)[target]
    finally:
        for h in handles:
            h.remove()
    p_corrupt = torch.softmax(model(corrupted).logits[:, -1].float(), -1)[:, target].mean()
    # before the first corrupted token both runs agree (causal attention): restoring there changes nothing
    first = int((corrupted != clean).any(0).nonzero()[0]) if (corrupted != clean).any() else n
    todo = n - first
    batch = corrupted.repeat(todo, 1)                                        # (todo * S, n): row b restores one
    where = torch.arange(first, n).repeat_interleave(S)                      # (todo * S,) the position restored
    rows = torch.arange(todo * S)

    def restore(l):
        def hook(module, inputs, output):
            out = _first(output)
            out[rows, where] = saved[l][where]                               # in place: the clean vector at i
            return output
        return hook

    restored = torch.full((n_layers, n), float(p_corrupt))
    for layer in range(n_layers if todo else 0):
        span = range(max(0, layer - window // 2), min(n_layers, layer - window // 2 + window))
        handles = [modules[l].register_forward_hook(restore(l)) for l in span]
        try:
            probs = torch.softmax(model(batch).logits[:, -1].float(), -1)[:, target]   # (n * S,)
        finally:
            for h in handles:
                h.remove()
        restored[layer, first:] = probs.view(todo, S).mean(1)
    return {"clean": float(p_clean), "corrupted": float(p_corrupt), "restored": restored}


def smollm2_trace(prompt: str, subject: str, others: list[str], answer: str, kinds=TRACE_KINDS,
                  window: int = 1) -> dict:
    """`causal_trace` of SmolLM2 for each kind: `prompt` clean, and with `subject` replaced by each of `others`
    (each of the same number of tokens), p(`answer`); the MLP and attention outputs restored over `window`
    blocks, the hidden state at one. For `data.cached`; adds "tokens" (the prompt's pieces)."""
    from llmcourse import data

    model, tokenizer = data.smollm2()
    clean = encode(tokenizer, prompt)
    corrupted = torch.cat([encode(tokenizer, prompt.replace(subject, o)) for o in others])
    if corrupted.shape[1] != clean.shape[1]:
        raise ValueError(f"every replacement of {subject!r} must have as many tokens as it")
    out = {kind: causal_trace(model, clean, corrupted, token_id(tokenizer, answer), kind,
                              1 if kind == "hidden" else window) for kind in kinds}
    return {"tokens": [tokenizer.decode([i]) for i in clean[0].tolist()], **out}


# --- the short video's heads: 's and "What is X's most famous Y" (chapter 03_attention) -----------------------

def _head_slices(model: nn.Module) -> tuple[int, int]:
    """(n_heads, head_dim) of a transformers Llama: o_proj reads the heads' outputs side by side."""
    config = model.config
    return config.num_attention_heads, config.hidden_size // config.num_attention_heads


@contextmanager
def ablating_heads(model: nn.Module, heads: list[tuple[int, int]], means: torch.Tensor | None = None):
    """Inside the block, each (layer, head) of `heads` writes zero (zero ablation) or, given `means`
    (n_layers, n_heads, head_dim), its mean output (mean ablation): o_proj's input is changed where it reads
    that head, at every position."""
    n_heads, dim = _head_slices(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def hook_for(layer):
        def hook(module, inputs):
            x = inputs[0].clone()                                        # (batch, seq, n_heads * head_dim)
            for head in by_layer[layer]:
                x[..., head * dim:(head + 1) * dim] = 0 if means is None else means[layer, head]
            return (x, *inputs[1:])
        return hook

    layers = model.model.layers
    handles = [layers[l].self_attn.o_proj.register_forward_pre_hook(hook_for(l)) for l in by_layer]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def head_means(model: nn.Module, token_lists: list[torch.Tensor]) -> torch.Tensor:
    """Every head's output averaged over all positions of all the texts: (n_layers, n_heads, head_dim)."""
    n_heads, dim = _head_slices(model)
    sums = [torch.zeros(n_heads * dim) for _ in model.model.layers]
    count = 0

    def keep(l):
        def hook(module, inputs):
            sums[l] += inputs[0][0].sum(0)
        return hook

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(keep(l))
               for l, layer in enumerate(model.model.layers)]
    try:
        for tokens in token_lists:
            model(tokens)
            count += tokens.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(sums).view(len(sums), n_heads, dim) / count


@torch.no_grad()
def answer_p(model: nn.Module, token_lists: list[torch.Tensor], answers: list[int]) -> torch.Tensor:
    """p(answer) at the last position of each text: (n_texts,)."""
    return torch.stack([torch.softmax(model(t).logits[0, -1].float(), -1)[a] for t, a in zip(token_lists, answers)])


def _positions(pieces: list[str], word: str) -> list[int]:
    """Positions of the tokens that spell `word` (with its leading space) the first time it appears."""
    for start in range(len(pieces)):
        for end in range(start + 1, len(pieces) + 1):
            if "".join(pieces[start:end]) == word:
                return list(range(start, end))
    raise ValueError(f"{word!r} is not spelled by consecutive tokens of {pieces}")


def smollm2_video_heads(prompts: list[tuple[str, str, str]], k: int = 3, controls: int = 5,
                        seed: int = 0) -> dict:
    """The short video's two heads on SmolLM2, for `data.cached`. prompts: (text, X, answer) with text "What is
    X's most famous Y? ..." and the answer's first token after it (" Hamlet").

    Pattern scores (n_layers, n_heads), mean over the prompts: "'s" is the weight from every token after the
    `'s` except the next one (which any previous-token head would give) to the `'s`; "X" the weight from the last
    token to X's tokens; "previous token" the weight from each token to the one before it. Then p(answer) with
    the top k heads of each score, each alone and the k together, zero- and mean-ablated (mean over every
    position of the prompts), and the same for `controls` random heads (seeded).
    Returns {"scores", "p", "ablations": {name: {"heads", "zero", "mean"}}}."""
    from llmcourse import data

    model, tokenizer = data.smollm2()
    tokens = [encode(tokenizer, text) for text, _, _ in prompts]
    answers = [token_id(tokenizer, answer) for _, _, answer in prompts]
    scores = {"'s": [], "X": [], "previous token": []}
    for (text, x, _), ids in zip(prompts, tokens):
        pieces = [tokenizer.decode([i]) for i in ids[0].tolist()]
        s = pieces.index("'s")
        w = attention_weights(model, ids)                                # (n_layers, n_heads, seq, seq)
        scores["'s"].append(w[:, :, s + 2:, s].mean(-1))
        scores["X"].append(w[:, :, -1, _positions(pieces, " " + x)].sum(-1))
        idx = torch.arange(1, ids.shape[1])
        scores["previous token"].append(w[:, :, idx, idx - 1].mean(-1))
    scores = {name: torch.stack(v).mean(0) for name, v in scores.items()}
    n_heads = scores["X"].shape[1]
    means = head_means(model, tokens)
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randperm(scores["X"].numel(), generator=gen)[:controls].tolist()
    groups: dict[str, list[tuple[int, int]]] = {}
    for name in ("'s", "X"):
        top = [divmod(int(i), n_heads) for i in scores[name].flatten().topk(k).indices]
        groups.update({f"{name} head {l}.{h}": [(l, h)] for l, h in top})
        groups[f"{name}: top {k} together"] = top
    groups.update({f"random head {i // n_heads}.{i % n_heads}": [divmod(i, n_heads)] for i in picks})
    ablations = {}
    for name, heads in groups.items():
        row = {"heads": heads}
        for mode, m in (("zero", None), ("mean", means)):
            with ablating_heads(model, heads, m):
                row[mode] = answer_p(model, tokens, answers)
        ablations[name] = row
    return {"scores": scores, "p": answer_p(model, tokens, answers), "ablations": ablations}
