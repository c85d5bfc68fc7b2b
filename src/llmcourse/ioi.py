"""A small transformer trained on a synthetic indirect-object task, and the tools to open it up.

"When Mary and John went to the store, John gave a drink to" -> "Mary": the indirect object (IO) is the
name that appears once; the subject (S) appears twice. The sentences are built from templates with many
names, places and objects, one word per token, mixed with repeated random sequences (x1..xn x1..xn) that
reward copying what came after the same token earlier (induction). The model is nanoGPT-like: token and
position embeddings, pre-LayerNorm blocks of multi-head attention and an MLP (`llmcourse.gpt`).

Explained in chapter 03_attention.
"""
from __future__ import annotations

import functools
import random

import torch

from llmcourse.gpt import TinyGPT, train_lm

NAMES = ["Mary", "John", "Alice", "Bob", "Tom", "Anna", "James", "Sarah", "David", "Emma", "Paul", "Laura",
         "Mark", "Julia", "Peter", "Kate", "Daniel", "Lisa", "Simon", "Rose", "Adam", "Clara", "Max", "Nina"]
PLACES = ["store", "park", "school", "office", "garden", "station", "market", "library", "beach", "hospital"]
OBJECTS = ["drink", "book", "ball", "letter", "gift", "key", "bag", "pen", "ring", "flower"]
TEMPLATES = [  # {A} {B}: the two names in either order; {S} is repeated; the answer {IO} ends the sentence
    "When {A} and {B} went to the {place} , {S} gave a {object} to {IO}",
    "Then , {A} and {B} had a long day at the {place} . {S} gave a {object} to {IO}",
    "After {A} and {B} arrived at the {place} , {S} handed the {object} to {IO}",
    "While {A} and {B} were working at the {place} , {S} passed a {object} to {IO}",
]
SPECIALS = ["<pad>", "<bos>"]
WORDS = sorted({w for t in TEMPLATES for w in t.split() if not w.startswith("{")})
VOCAB = SPECIALS + WORDS + NAMES + PLACES + OBJECTS
ID = {w: i for i, w in enumerate(VOCAB)}
PAD, BOS = ID["<pad>"], ID["<bos>"]
SEQ_LEN = 20  # longest IOI sentence (17 words) + <bos>, and induction sequences of 2 x 9 tokens + <bos>


# --- data ----------------------------------------------------------------------------------------------

def ioi_prompts(n: int, seed: int = 0, templates: tuple[int, ...] | None = None) -> dict:
    """n IOI sentences as token ids, with where the names are (templates: indices into TEMPLATES, default all).

    Returns a dict of tensors of shape (n,) (except "tokens": (n, SEQ_LEN), padded with <pad>):
    tokens, io (id of the indirect object), s (id of the subject), io_pos and s1_pos (positions of their first
    mention), s2_pos (the repeated subject), end (position of the final "to", where the model must say IO).
    """
    rng = random.Random(seed)
    rows, info = [], {k: [] for k in ["io", "s", "io_pos", "s1_pos", "s2_pos", "end"]}
    for _ in range(n):
        io, s = rng.sample(NAMES, 2)
        a, b = (io, s) if rng.random() < 0.5 else (s, io)  # ABBA or BABA order
        template = TEMPLATES[rng.choice(templates) if templates else rng.randrange(len(TEMPLATES))]
        words = template.format(A=a, B=b, S=s, IO=io, place=rng.choice(PLACES),
                                             object=rng.choice(OBJECTS)).split()
        ids = [BOS] + [ID[w] for w in words]
        names_at = [i for i, t in enumerate(ids) if VOCAB[t] in (io, s)]  # first name, second name, S2, IO
        info["io"].append(ID[io])
        info["s"].append(ID[s])
        info["io_pos"].append(names_at[0] if a == io else names_at[1])
        info["s1_pos"].append(names_at[1] if a == io else names_at[0])
        info["s2_pos"].append(names_at[2])
        info["end"].append(len(ids) - 2)  # the final "to": its next token is the answer
        rows.append(ids + [PAD] * (SEQ_LEN - len(ids)))
    return {"tokens": torch.tensor(rows)} | {k: torch.tensor(v) for k, v in info.items()}


def repeated_sequences(n: int, seed: int = 0, length: int | None = None) -> torch.Tensor:
    """(n, SEQ_LEN) sequences <bos> x1..xL x1..xL <pad>... of random words: the second copy is predictable by copying.

    L is `length`, or random between 4 and 9 for each sequence, so that the copy is never at a fixed position:
    the model must find "the token after the previous occurrence of this one" (an induction head).
    """
    gen = torch.Generator().manual_seed(seed)
    rows = torch.full((n, SEQ_LEN), PAD)
    for i in range(n):
        size = length or int(torch.randint(4, 10, (1,), generator=gen))
        words = torch.randint(len(SPECIALS), len(VOCAB), (size,), generator=gen)
        rows[i, : 2 * size + 1] = torch.cat([torch.tensor([BOS]), words, words])
    return rows


def training_batch(batch_size: int, seed: int, induction: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """IOI sentences and (a fraction `induction` of) repeated random sequences: inputs and targets, (batch, SEQ_LEN - 1).

    In an IOI sentence only the answer is a target (<pad> targets are ignored): the names are random by
    construction, and the rest of the template is the same every time. In a repeated sequence every token is a
    target, but only the second half can be predicted (by copying). Explained in chapter 03_attention.
    """
    n_rep = int(batch_size * induction)
    prompts = ioi_prompts(batch_size - n_rep, seed)
    targets = torch.full_like(prompts["tokens"], PAD)
    targets[torch.arange(len(targets)), prompts["end"] + 1] = prompts["io"]   # only "... to" -> IO counts
    repeated = repeated_sequences(n_rep, seed)
    tokens, targets = torch.cat([prompts["tokens"], repeated]), torch.cat([targets, repeated])
    return tokens[:, :-1], targets[:, 1:]                      # predict token t+1 from tokens 0..t


# --- the model -----------------------------------------------------------------------------------------

class TinyTransformer(TinyGPT):
    """`llmcourse.gpt.TinyGPT` on the IOI vocabulary, with heads that can be switched off (`ablated`)."""

    def __init__(self, n_layers: int = 2, n_heads: int = 4, d_model: int = 64):
        super().__init__(len(VOCAB), SEQ_LEN, n_layers, n_heads, d_model)
        self.config = dict(n_layers=n_layers, n_heads=n_heads, d_model=d_model)
        self.ablated: set[tuple[int, int]] = set()  # (layer, head) pairs whose output is set to zero
        self.head_outputs: list[torch.Tensor] = []  # per layer, the heads' outputs before W_o (batch, seq, d_model)
        for layer, block in enumerate(self.blocks):
            block.attn.o.register_forward_pre_hook(self._ablation_hook(layer))

    def _ablation_hook(self, layer: int):
        def hook(module, inputs):
            (merged,) = inputs                                   # (batch, seq, n_heads * d_head): heads side by side
            heads = [h for (l, h) in self.ablated if l == layer]
            if heads:
                d_head = merged.shape[-1] // self.config["n_heads"]
                merged = merged.clone()
                for h in heads:
                    merged[..., h * d_head:(h + 1) * d_head] = 0  # this head no longer writes anything
            del self.head_outputs[layer:]
            self.head_outputs.append(merged)
            return (merged,)
        return hook


def train(n_layers: int = 2, n_heads: int = 4, d_model: int = 64, steps: int = 2000, batch_size: int = 64,
          lr: float = 3e-3, induction: float = 0.25, seed: int = 0, progress: bool = True) -> dict:
    """Train a TinyTransformer with next-token loss on fresh batches; returns the model and its losses.

    Returns {"config", "state": the trained weights (load them with `trained_model`), "losses": [loss per step],
    "seconds": training time}. Explained in chapter 03_attention.
    """
    torch.manual_seed(seed)
    model = TinyTransformer(n_layers, n_heads, d_model)
    result = train_lm(model, lambda step: training_batch(batch_size, seed * 1_000_003 + step + 1, induction),
                      steps, lr, ignore_index=PAD, progress=progress)
    return {"config": model.config} | result


def trained_model(result: dict) -> TinyTransformer:
    """The model that `train` returned the weights of, ready to evaluate."""
    model = TinyTransformer(**result["config"])
    model.load_state_dict(result["state"])
    return model.eval()


# chapter 03's model, which exercise 03_attention opens too (its weights ship with the package: `toy_model`)
CHAPTER_CONFIG = dict(n_layers=2, n_heads=4, d_model=64, steps=2000, batch_size=64, lr=3e-3, induction=0.25, seed=0)


def toy_model() -> TinyTransformer:
    """Chapter 03's trained model (`train(**CHAPTER_CONFIG)`), from the weights shipped in llmcourse/toys/: no
    training, no cache. Explained in chapter 03_attention."""
    from llmcourse.data import shipped
    return trained_model(shipped(train, **CHAPTER_CONFIG))


# --- measuring and opening the model -------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: TinyTransformer, prompts: dict) -> dict:
    """Accuracy (top-1 over the whole vocabulary is IO) and mean logit difference logit(IO) - logit(S) at END."""
    logits = model(prompts["tokens"])
    rows = torch.arange(len(logits))
    final = logits[rows, prompts["end"]]                         # (n, vocabulary): the prediction after "to"
    diff = final[rows, prompts["io"]] - final[rows, prompts["s"]]
    return {"accuracy": (final.argmax(-1) == prompts["io"]).float().mean().item(), "logit_diff": diff.mean().item()}


@torch.no_grad()
def end_attention(model: TinyTransformer, prompts: dict) -> dict:
    """How much each head attends from END to IO, to S1 and to S2, averaged over prompts: (n_layers, n_heads) each."""
    model(prompts["tokens"])
    attn = model.attention()                                     # (n, n_layers, n_heads, seq, seq)
    rows = torch.arange(len(attn))
    at_end = attn[rows, :, :, prompts["end"]]                    # (n, n_layers, n_heads, seq): the END query's weights
    return {name: at_end[rows, :, :, prompts[pos]].mean(0) for name, pos in
            [("io", "io_pos"), ("s1", "s1_pos"), ("s2", "s2_pos")]}


def ablation_table(model: TinyTransformer, prompts: dict) -> dict:
    """Accuracy and logit difference with each single head's output set to zero: {(layer, head): evaluate(...)}."""
    table = {}
    for layer in range(model.config["n_layers"]):
        for head in range(model.config["n_heads"]):
            model.ablated = {(layer, head)}
            table[(layer, head)] = evaluate(model, prompts)
    model.ablated = set()
    return table


@torch.no_grad()
def head_logit_diff(model: TinyTransformer, prompts: dict) -> torch.Tensor:
    """What each head writes, read directly as logit(IO) - logit(S) at END, averaged: (n_layers, n_heads).

    A head's contribution to the residual stream is its slice of the merged outputs times its slice of W_o;
    the final LayerNorm is approximated by its scale on the whole residual (its weight over the std), as in
    "direct logit attribution" (Wang et al. 2022 use the same idea). Positive: the head pushes towards IO.
    """
    logits = model(prompts["tokens"])
    rows = torch.arange(len(logits))
    n_heads, d_model = model.config["n_heads"], model.config["d_model"]
    d_head = d_model // n_heads
    direction = model.head.weight[prompts["io"]] - model.head.weight[prompts["s"]]   # (n, d_model)
    x = model.embed(prompts["tokens"])
    for block in model.blocks:
        x = block(x)
    std = x[rows, prompts["end"]].var(-1, unbiased=False).add(model.ln.eps).sqrt()  # (n,)
    out = torch.zeros(model.config["n_layers"], n_heads)
    for layer, block in enumerate(model.blocks):
        merged = model.head_outputs[layer][rows, prompts["end"]]                     # (n, n_heads * d_head)
        for h in range(n_heads):
            part = merged[:, h * d_head:(h + 1) * d_head] @ block.attn.o.weight[:, h * d_head:(h + 1) * d_head].T
            part = part - part.mean(-1, keepdim=True)                                # LayerNorm centres first
            out[layer, h] = ((part * model.ln.weight / std[:, None]) * direction).sum(-1).mean()
    return out


@torch.no_grad()
def pattern_scores(model: TinyTransformer, n: int = 200, seed: int = 0, length: int = 9) -> dict:
    """Pattern scores of every head on repeated random sequences x1..xL x1..xL: (n_layers, n_heads) each.

    For the tokens of the second copy, the mean weight on: the previous token ("previous token"), the same token's
    first occurrence ("duplicate token", L back) and the token that followed it ("induction", L - 1 back).
    """
    seqs = repeated_sequences(n, seed, length)[:, : 2 * length + 1]   # all of the same length here
    model(seqs)
    attn = model.attention()                                         # (n, n_layers, n_heads, seq, seq)
    pos = torch.arange(length + 1, 2 * length + 1)                   # the second copy
    return {"previous token": attn[..., pos, pos - 1].mean((0, -1)),
            "duplicate token": attn[..., pos, pos - length].mean((0, -1)),
            "induction": attn[..., pos, pos - length + 1].mean((0, -1))}


def name_mover(attention: torch.Tensor, io_pos: torch.Tensor, s_pos: torch.Tensor,
               end: torch.Tensor | None = None) -> tuple[int, int]:
    """The head whose final "to" attends most to the indirect object, beyond what it gives the subject.

    attention: (n_prompts, n_layers, n_heads, seq, seq) weights (query row, key column); io_pos, s_pos: (n_prompts,)
    positions of the IO and of the subject's first mention; end: (n_prompts,) position of each sentence's final
    "to" (default: the last position, for sentences all cut there). Returns (layer, head).
    Explained in chapter 03_attention.
    """
    rows = torch.arange(attention.shape[0])
    query = torch.full_like(rows, attention.shape[-2] - 1) if end is None else end
    last = attention[rows, :, :, query]                          # (n_prompts, n_layers, n_heads, seq): END's weights
    score = (last[rows, :, :, io_pos] - last[rows, :, :, s_pos]).mean(0)  # (n_layers, n_heads)
    layer, head = divmod(int(score.argmax()), score.shape[1])
    return layer, head


def toy_attention(n: int = 24, seed: int = 0) -> dict:
    """The attention weights of chapter 03's trained model (`toy_model`) on n IOI sentences of every template, cut
    after their final "to" and padded with <pad> to the longest: the input of exercise 03's last task.

    Returns {"attention": (n, n_layers, n_heads, seq, seq), "io_pos", "s_pos" (the subject's first mention), "end"
    (the final "to"): (n,)}. Explained in chapter 03_attention.
    """
    prompts = ioi_prompts(n, seed)
    width = int(prompts["end"].max()) + 1
    tokens = prompts["tokens"][:, :width].clone()
    tokens[torch.arange(width)[None, :] > prompts["end"][:, None]] = PAD   # the answer and what follows: padding
    model = toy_model()
    with torch.no_grad():                                        # (not a decorator: the kit's stubs keep those)
        model(tokens)
    return {"attention": model.attention(), "io_pos": prompts["io_pos"], "s_pos": prompts["s1_pos"],
            "end": prompts["end"]}


def toy_head_effects(n: int = 500, seed: int = 2024) -> dict:
    """What switching off each head of chapter 03's trained model costs, as `ablation_table` measures it (output set
    to zero) on n new IOI sentences: {"logit_diff": the intact model's mean logit(IO) - logit(S), "drop": (n_layers,
    n_heads), how much lower it is without that head}. Explained in chapter 03_attention."""
    effects = _head_effects(n, seed)                             # computed once per process: a grader judges many
    return {"logit_diff": effects["logit_diff"], "drop": effects["drop"].clone()}


@functools.lru_cache(maxsize=4)
def _head_effects(n: int, seed: int) -> dict:
    model = toy_model()
    prompts = ioi_prompts(n, seed)
    intact = evaluate(model, prompts)["logit_diff"]
    table = ablation_table(model, prompts)
    drop = torch.zeros(model.config["n_layers"], model.config["n_heads"])
    for (layer, head), result in table.items():
        drop[layer, head] = intact - result["logit_diff"]
    return {"logit_diff": intact, "drop": drop}


# --- hand-made attention patterns for the exercise ----------------------------------------------------------

ROLES = ["name mover", "both names", "subject", "previous token", "first token", "uniform"]


def head_patterns(seed: int = 0, n_prompts: int = 8, n_layers: int = 2, n_heads: int = 4) -> dict:
    """Attention weights with the shapes of the heads Wang et al. (2022) describe, made by hand (not trained).

    Every head of a (n_layers x n_heads) model gets a role, placed by the random seed: one "name mover" (the last
    position attends to the indirect object), one head that attends to both names equally, one that attends to
    the subject, and previous-token, first-token and uniform heads for the rest. The sentences are IOI prompts
    cut after their final "to", all from one template so that they have the same length.
    Returns {"attention": (n_prompts, n_layers, n_heads, seq, seq), "io_pos", "s_pos": (n_prompts,)}: which head
    has which role is not returned (finding the name mover is the exercise). Explained in chapter 03_attention.
    """
    prompts = ioi_prompts(n_prompts, seed, templates=(0,))
    seq = int(prompts["end"][0]) + 1
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_layers * n_heads, generator=gen).tolist()
    fillers = ROLES[3:]
    roles = {divmod(i, n_heads): (ROLES[r] if r < 3 else fillers[r % 3]) for r, i in enumerate(order)}
    attn = torch.zeros(n_prompts, n_layers, n_heads, seq, seq)
    for (layer, head), role in roles.items():
        for p in range(n_prompts):
            scores = torch.randn(seq, seq, generator=gen) * 0.3   # a little noise everywhere
            io, s1, s2 = int(prompts["io_pos"][p]), int(prompts["s1_pos"][p]), int(prompts["s2_pos"][p])
            if role == "previous token":
                scores[torch.arange(1, seq), torch.arange(seq - 1)] += 4
            elif role == "first token":
                scores[:, 0] += 4
            if role == "name mover":
                scores[-1, io] += 2.0
            elif role == "both names":
                scores[-1, io] += 5.0
                scores[-1, s1] += 5.0
            elif role == "subject":
                scores[-1, s1] += 2.5
                scores[-1, s2] += 2.5
            scores = scores.masked_fill(~torch.ones(seq, seq, dtype=torch.bool).tril(), float("-inf"))  # causal
            attn[p, layer, head] = torch.softmax(scores, dim=-1)
    return {"attention": attn, "io_pos": prompts["io_pos"], "s_pos": prompts["s1_pos"]}
