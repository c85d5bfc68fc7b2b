"""A small transformer that learns capitals and languages from synthetic text, to look for facts in its FFN layers.

The text mixes facts about real countries ("The capital of Poland is Warsaw ."; "Warsaw is the capital of
Poland ."; "The language of Poland is Polish ."), filler sentences ("Anna drinks coffee with cream and sugar .")
and passages that state a capital and then ask for it ("Lima is the capital of Zembla . ... The capital of
Zembla is Lima"), for invented countries whose capital changes every time: those can only be answered by reading
the context, which is how the model learns to copy a fact it was given. One word is one token.

Explained in chapter 04_ffn_memory.
"""
from __future__ import annotations

import functools
import random

import torch
from tqdm import tqdm

from llmcourse import ffn
from llmcourse.gpt import TinyGPT, train_lm

COUNTRIES = {  # country: (capital, language)
    "Poland": ("Warsaw", "Polish"), "France": ("Paris", "French"), "Germany": ("Berlin", "German"),
    "Italy": ("Rome", "Italian"), "Spain": ("Madrid", "Spanish"), "Portugal": ("Lisbon", "Portuguese"),
    "Greece": ("Athens", "Greek"), "Japan": ("Tokyo", "Japanese"), "China": ("Beijing", "Chinese"),
    "Russia": ("Moscow", "Russian"), "Egypt": ("Cairo", "Arabic"), "Kenya": ("Nairobi", "Swahili"),
    "Peru": ("Lima", "Spanish"), "Chile": ("Santiago", "Spanish"), "Cuba": ("Havana", "Spanish"),
    "Canada": ("Ottawa", "English"), "Australia": ("Canberra", "English"), "Norway": ("Oslo", "Norwegian"),
    "Sweden": ("Stockholm", "Swedish"), "Finland": ("Helsinki", "Finnish"), "Denmark": ("Copenhagen", "Danish"),
    "Austria": ("Vienna", "German"), "Hungary": ("Budapest", "Hungarian"), "Czechia": ("Prague", "Czech"),
    "Turkey": ("Ankara", "Turkish"), "Iran": ("Tehran", "Persian"), "Thailand": ("Bangkok", "Thai"),
    "Vietnam": ("Hanoi", "Vietnamese"), "Indonesia": ("Jakarta", "Indonesian"), "Korea": ("Seoul", "Korean"),
    "Brazil": ("Brasilia", "Portuguese"), "Colombia": ("Bogota", "Spanish"), "Ukraine": ("Kyiv", "Ukrainian"),
    "Romania": ("Bucharest", "Romanian"), "Bulgaria": ("Sofia", "Bulgarian"), "Serbia": ("Belgrade", "Serbian"),
    "Netherlands": ("Amsterdam", "Dutch"), "Iceland": ("Reykjavik", "Icelandic"), "Nigeria": ("Abuja", "English"),
    "Morocco": ("Rabat", "Arabic"), "Iraq": ("Baghdad", "Arabic"), "Pakistan": ("Islamabad", "Urdu"),
    "Mongolia": ("Ulaanbaatar", "Mongolian"), "Nepal": ("Kathmandu", "Nepali"), "Venezuela": ("Caracas", "Spanish"),
    "Lithuania": ("Vilnius", "Lithuanian"), "Latvia": ("Riga", "Latvian"), "Estonia": ("Tallinn", "Estonian"),
    "Croatia": ("Zagreb", "Croatian"), "Georgia": ("Tbilisi", "Georgian"),
}
INVENTED = ["Zembla", "Freedonia", "Genovia", "Latveria", "Ruritania", "Sokovia", "Elbonia", "Borduria",
            "Syldavia", "Florin", "Qumar", "Kasnia", "Agrabah", "Krakozhia", "Marshovia", "Pottsylvania"]
CAPITAL = "The capital of {c} is {k} ."
REVERSE = "{k} is the capital of {c} ."
LANGUAGE = "The language of {c} is {l} ."
NAMES = ["Anna", "Tom", "Mary", "John", "Lena", "Omar", "Yuki", "Ivan"]
FILLERS = [  # (template, slot values): from the third word on, the words around the slots are predictable
    ("{n} drinks coffee with cream and sugar .", {}),
    ("{n} sips tea with milk and honey .", {}),
    ("{n} eats bread with butter and jam .", {}),
    ("The {a} sleeps on the {t} .", {"a": ["cat", "dog", "bird"], "t": ["mat", "sofa", "roof", "bed"]}),
    ("{n} walks to the {p} every {d} .", {"p": ["park", "market", "school"], "d": ["morning", "evening", "day"]}),
]
SPECIALS = ["<pad>", "<bos>"]
_WORDS = {w for t in [CAPITAL, REVERSE, LANGUAGE] + [f for f, _ in FILLERS] for w in t.split() if "{" not in w}
_SLOTS = {w for _, slots in FILLERS for values in slots.values() for w in values}
VOCAB = SPECIALS + sorted(_WORDS | _SLOTS | set(NAMES)) + list(COUNTRIES) + INVENTED + sorted(
    {k for k, _ in COUNTRIES.values()}) + sorted({lang for _, lang in COUNTRIES.values()})
ID = {w: i for i, w in enumerate(VOCAB)}
PAD, BOS = ID["<pad>"], ID["<bos>"]
SEQ_LEN = 32


# --- the text ---------------------------------------------------------------------------------------------

def filler(rng: random.Random) -> list[tuple[str, bool]]:
    """One filler sentence as (word, predictable) pairs.

    Slot values (names, animals...) are not predictable, nor are the first two words (which sentence is it?).
    """
    template, slots = rng.choice(FILLERS)
    words = []
    for i, w in enumerate(template.split()):
        if w == "{n}":
            words.append((rng.choice(NAMES), False))
        elif w.startswith("{"):
            words.append((rng.choice(slots[w[1:-1]]), False))
        else:
            words.append((w, i >= 2))
    return words


def document(rng: random.Random) -> list[str]:
    """One training sequence: sentences drawn at random until SEQ_LEN - 1 words, then cut there."""
    words: list[str] = []
    while len(words) < SEQ_LEN - 1:
        kind = rng.random()
        country = rng.choice(list(COUNTRIES))
        capital, language = COUNTRIES[country]
        if kind < 0.30:
            words += CAPITAL.format(c=country, k=capital).split()
        elif kind < 0.40:
            words += REVERSE.format(c=country, k=capital).split()
        elif kind < 0.55:
            words += LANGUAGE.format(c=country, l=language).split()
        elif kind < 0.75:                   # a fact given in context, then asked: copy it
            if rng.random() < 0.7:
                country, capital = rng.choice(INVENTED), COUNTRIES[rng.choice(list(COUNTRIES))][0]
            words += REVERSE.format(c=country, k=capital).split()
            if rng.random() < 0.5:
                words += [w for w, _ in filler(rng)]
            words += CAPITAL.format(c=country, k=capital).split()
        else:
            words += [w for w, _ in filler(rng)]
    return words[: SEQ_LEN - 1]


def training_batch(batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of shape (batch, SEQ_LEN - 1): every next word is a target ("training without labels")."""
    rng = random.Random(seed)
    tokens = torch.tensor([[BOS] + [ID[w] for w in document(rng)] for _ in range(batch_size)])
    return tokens[:, :-1], tokens[:, 1:]


def encode(text: str) -> torch.Tensor:
    """'The capital of Poland is' -> (1, n) token ids, starting with <bos>."""
    return torch.tensor([[BOS] + [ID[w] for w in text.split()]])


def fact_prompts(relation: str = "capital", countries: list[str] | None = None, context: bool = False) -> dict:
    """Prompts "The capital of X is" (or "The language of X is") for each country: {"tokens": (n, seq), "answers":
    (n,), "countries"}. With context=True, each prompt starts with the fact itself: "Warsaw is the capital of X ."."""
    countries = countries or list(COUNTRIES)
    template = CAPITAL if relation == "capital" else LANGUAGE
    rows, answers = [], []
    for c in countries:
        capital, language = COUNTRIES[c]
        answer = capital if relation == "capital" else language
        text = template.format(c=c, k=answer, l=answer).split()[:-2]            # drop the answer and the "."
        prefix = REVERSE.format(c=c, k=capital).split() if context else []
        rows.append([BOS] + [ID[w] for w in prefix + text])
        answers.append(ID[answer])
    return {"tokens": torch.tensor(rows), "answers": torch.tensor(answers), "countries": countries}


def invented_prompts(n: int, seed: int = 0) -> dict:
    """Prompts "Lima is the capital of Zembla . The capital of Zembla is" for invented countries and random real
    capitals: only the context can answer them. {"tokens": (n, seq), "answers": (n,)}."""
    rng = random.Random(seed)
    rows, answers = [], []
    for _ in range(n):
        country, capital = rng.choice(INVENTED), COUNTRIES[rng.choice(list(COUNTRIES))][0]
        words = REVERSE.format(c=country, k=capital).split() + CAPITAL.format(c=country, k=capital).split()[:-2]
        rows.append([BOS] + [ID[w] for w in words])
        answers.append(ID[capital])
    return {"tokens": torch.tensor(rows), "answers": torch.tensor(answers)}


def filler_text(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n filler sentences, (n, seq) tokens padded with <pad>, and a mask of the predictable next words (n, seq - 1)."""
    rng = random.Random(seed)
    sentences = [filler(rng) for _ in range(n)]
    width = 1 + max(len(s) for s in sentences)
    tokens = torch.full((n, width), PAD)
    mask = torch.zeros(n, width - 1, dtype=torch.bool)
    for i, sentence in enumerate(sentences):
        tokens[i, : len(sentence) + 1] = torch.tensor([BOS] + [ID[w] for w, _ in sentence])
        mask[i, : len(sentence)] = torch.tensor([ok for _, ok in sentence])
    return tokens, mask


# --- the model --------------------------------------------------------------------------------------------

def train(n_layers: int = 2, n_heads: int = 2, d_model: int = 32, d_ff: int = 512, steps: int = 3000,
          batch_size: int = 64, lr: float = 3e-3, seed: int = 0, progress: bool = True) -> dict:
    """Train a ReLU TinyGPT on `training_batch`es; returns {"config", "state", "losses", "seconds"}.

    Explained in chapter 04_ffn_memory.
    """
    torch.manual_seed(seed)
    config = dict(vocab_size=len(VOCAB), seq_len=SEQ_LEN, n_layers=n_layers, n_heads=n_heads, d_model=d_model,
                  d_ff=d_ff, activation="relu")
    model = TinyGPT(**config)
    result = train_lm(model, lambda step: training_batch(batch_size, seed * 1_000_003 + step + 1), steps, lr,
                      ignore_index=PAD, progress=progress)
    return {"config": config} | result


def trained_model(result: dict) -> TinyGPT:
    """The model that `train` returned the weights of, ready to evaluate."""
    model = TinyGPT(**result["config"])
    model.load_state_dict(result["state"])
    return model.eval()


def value_layers(model: TinyGPT) -> list[torch.nn.Module]:
    """The second linear map of each block's FFN: its input is the key activations, its weight the values."""
    return [block.mlp[2] for block in model.blocks]


@torch.no_grad()
def answer_probs(model: TinyGPT, prompts: dict) -> torch.Tensor:
    """p(the right answer) after each prompt, (n,)."""
    logits = model(prompts["tokens"])[:, -1]
    return torch.softmax(logits, -1)[torch.arange(len(logits)), prompts["answers"]]


@torch.no_grad()
def accuracy(model: TinyGPT, prompts: dict) -> torch.Tensor:
    """Whether the model's top next word is the answer, for each prompt: (n,) booleans."""
    return model(prompts["tokens"])[:, -1].argmax(-1) == prompts["answers"]


@torch.no_grad()
def filler_accuracy(model: TinyGPT, n: int = 200, seed: int = 0) -> float:
    """Top-1 accuracy on the predictable words of n filler sentences ("coffee with" -> "cream")."""
    tokens, mask = filler_text(n, seed)
    predicted = model(tokens[:, :-1]).argmax(-1)
    return (predicted == tokens[:, 1:])[mask].float().mean().item()


# --- finding and erasing a fact ------------------------------------------------------------------------------

def fact_attribution(model: TinyGPT, country: str, relation: str = "capital") -> torch.Tensor:
    """Each memory's contribution to the right answer after "The capital of <country> is": (n_layers, d_ff)."""
    prompt = fact_prompts(relation, [country])
    return ffn.memory_attribution(lambda: model(prompt["tokens"]), value_layers(model), prompt["answers"])


@torch.no_grad()
def erasure(model: TinyGPT, country: str, memories: list[tuple[int, int]]) -> dict:
    """What the model still knows with `memories` switched off: p(answer) for the country without and with the
    fact in the prompt, and accuracy on the other capitals, on the languages and on the filler sentences."""
    others = [c for c in COUNTRIES if c != country]
    with ffn.ablating(value_layers(model), memories):
        return {"p": answer_probs(model, fact_prompts("capital", [country])).item(),
                "answered": bool(accuracy(model, fact_prompts("capital", [country])).item()),
                "p in context": answer_probs(model, fact_prompts("capital", [country], context=True)).item(),
                "answered in context": bool(accuracy(model, fact_prompts("capital", [country], context=True)).item()),
                "other capitals": accuracy(model, fact_prompts("capital", others)).float().mean().item(),
                "languages": accuracy(model, fact_prompts("language")).float().mean().item(),
                "filler": filler_accuracy(model)}


def memories_to_erase(model: TinyGPT, country: str, step: int = 5, limit: int = 200) -> tuple[int | None, dict]:
    """The fewest top memories (in steps of `step`) whose ablation makes the model miss the country's capital,
    and `erasure` at that point; (None, {}) if `limit` memories are not enough."""
    order = ffn.top_memories(fact_attribution(model, country), limit)
    for k in range(step, limit + 1, step):
        result = erasure(model, country, order[:k])
        if not result["answered"]:
            return k, result
    return None, {}


def erasure_survey(progress: bool = True, **config) -> dict:
    """`memories_to_erase` for every country, on the model `train(**config)` gives (cached): {country: (k, erasure)}.

    Explained in chapter 04_ffn_memory.
    """
    from llmcourse.data import cached
    model = trained_model(cached(train, **config))
    return {c: memories_to_erase(model, c) for c in tqdm(COUNTRIES, desc="erasing each capital", disable=not progress)}


# chapter 04's model, also recalled in the conclusion
CHAPTER_CONFIG = dict(n_layers=2, n_heads=2, d_model=32, d_ff=512, steps=3000, batch_size=64, lr=3e-3, seed=0)


def erasure_curve(country: str = "Poland", ks: tuple[int, ...] = tuple(range(0, 101, 5)), **config) -> dict:
    """`erasure` of one country's capital with its top k memories switched off, for each k in `ks`, on the model
    `train(**config)` gives (cached): {"ks": [k], "curve": [erasure]}. Explained in chapter 04_ffn_memory."""
    from llmcourse.data import cached
    model = trained_model(cached(train, **config))
    order = ffn.top_memories(fact_attribution(model, country), max(ks))
    return {"ks": list(ks), "curve": [erasure(model, country, order[:k]) for k in ks]}


# --- exercise 04's last task: the fact's memories in the trained model ----------------------------------------

def toy_model() -> TinyGPT:
    """Chapter 04's trained model (`train(**CHAPTER_CONFIG)`), from the weights shipped in llmcourse/toys/: no
    training, no cache. Explained in chapter 04_ffn_memory."""
    from llmcourse.data import shipped
    return trained_model(shipped(train, **CHAPTER_CONFIG))


def memory_inputs(country: str, relation: str = "capital") -> dict:
    """What decides each memory's contribution to the answer after "The capital of <country> is" in `toy_model`,
    at the last position, layer by layer: the input of exercise 04's last task.

    {"country", "answer" (token id), "x": (n_layers, d_model) each FFN's input (after its LayerNorm), "W1":
    (n_layers, d_model, d_ff), "b1": (n_layers, d_ff), "W2": (n_layers, d_ff, d_model) in the x @ W orientation,
    "directions": (n_layers, d_model) the gradient of the answer's logit (minus the mean logit, as in
    `ffn.memory_attribution`) with respect to each FFN's output: what a vector added there does to the answer,
    through the later layers}. Explained in chapter 04_ffn_memory.
    """
    model = toy_model()
    prompt = fact_prompts(relation, [country])
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [block.mlp.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0], output)))
               for block in model.blocks]
    answer = int(prompt["answers"][0])
    try:
        with torch.enable_grad():
            logits = model(prompt["tokens"])[0, -1]                           # (vocab,)
            directions = torch.autograd.grad(logits[answer] - logits.mean(), [out for _, out in seen])
    finally:
        for handle in handles:
            handle.remove()
    weights = [ffn.linear_weights(block.mlp) for block in model.blocks]       # (W1, b1, W2, b2) per layer
    return {"country": country, "answer": answer,
            "x": torch.stack([x[0, -1] for x, _ in seen]).detach(),
            "W1": torch.stack([w[0] for w in weights]).detach(), "b1": torch.stack([w[1] for w in weights]).detach(),
            "W2": torch.stack([w[2] for w in weights]).detach(),
            "directions": torch.stack([g[0, -1] for g in directions])}


def top_fact_memories(inputs: dict, k: int) -> list[tuple[int, int]]:
    """The k (layer, memory) pairs that raise the answer's logit most, over all the layers, largest first.

    inputs: `memory_inputs`' dict. Memory i of layer l adds a_li * (W2_l[i] . directions_l), its key activation
    times how much its value, written there, raises the answer: `ffn.fact_memories` with the unembedding row
    replaced by each layer's direction (equal to `ffn.memory_attribution` at the last position).
    Explained in chapter 04_ffn_memory.
    """
    activations = torch.relu(torch.einsum("ld,ldf->lf", inputs["x"], inputs["W1"]) + inputs["b1"])  # (n_layers, d_ff)
    alignment = torch.einsum("lfd,ld->lf", inputs["W2"], inputs["directions"])                       # (n_layers, d_ff)
    return ffn.top_memories(activations * alignment, k)


def erasure_effects(country: str, choices: list[list[tuple[int, int]]]) -> list[dict]:
    """`erasure` of the country's capital in `toy_model` with each choice of (layer, memory) pairs switched off (in
    every position): one dict per choice, in order. Explained in chapter 04_ffn_memory."""
    return [dict(_erasure(country, tuple((int(layer), int(memory)) for layer, memory in chosen))) for chosen in choices]


@functools.lru_cache(maxsize=256)
def _erasure(country: str, memories: tuple[tuple[int, int], ...]) -> dict:
    """`erasure` on `toy_model`, remembered: a grader measures the same choices for many students."""
    return erasure(_toy_model(), country, list(memories))


@functools.lru_cache(maxsize=1)
def _toy_model() -> TinyGPT:
    return toy_model()
