"""The graded checks of 01_tokens: mistakes beyond the planted ones, wrong types, shapes and NaN are named.

What every check must do (pass the solution, refuse the reference, name the planted mistakes) is tested
for all exercises in test_checks_all.py.
"""
from __future__ import annotations


import pytest
import torch

from conftest import notebook_namespace
from llmcourse import checks
from planted import p01_tokens


def test_wrong_type_shape_and_nan_are_named():
    with pytest.raises(AssertionError, match="should return a torch tensor"):
        checks.check_cosine_similarity(lambda a, b: "0.5")
    with pytest.raises(AssertionError, match="shape"):
        checks.check_cosine_similarity(lambda a, b: (a * b))
    with pytest.raises(AssertionError, match="NaN"):
        checks.check_cosine_similarity(lambda a, b: (a * b).sum(-1) * float("nan"))
    with pytest.raises(AssertionError, match="list of integer token ids"):
        checks.check_merge(lambda ids, pair, new: "oops")


def test_a_crash_is_reported_with_the_call():
    def broken(a, b):
        return a.norm(dim=5)
    with pytest.raises(AssertionError, match=r"cosine_similarity\(<Tensor of shape \(8,\)>.*raised"):
        checks.check_cosine_similarity(broken)


def test_tie_break_message_on_a_real_tie():
    def largest(text, n):
        ns = notebook_namespace("01_tokens")
        src = p01_tokens.PLANTED["train_bpe_largest_tie"]["source"]
        exec(src, ns)
        return ns["train_bpe"](text, n)
    with pytest.raises(AssertionError, match="smallest pair"):
        checks.check_train_bpe(largest)


def pytorch_tutorial_positions(n_positions, d_model):
    """Positional encodings in float32 as PyTorch's transformer tutorial computes them (written here from the
    formula in that style: exp of a log-spaced frequency, products in float32)."""
    import math
    position = torch.arange(n_positions).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(position * frequency)
    pe[:, 1::2] = torch.cos(position * frequency)
    return pe


def test_a_float32_implementation_passes_at_large_sizes():
    from llmcourse import tokens
    far = (pytorch_tutorial_positions(512, 512).double() - tokens.sinusoidal_positions(512, 512).double()).abs().max()
    assert far > 1e-5, "the float32 rounding this test is about should show at 512 x 512"
    checks.check_sinusoidal_positions(pytorch_tutorial_positions, sizes=((512, 512), (1024, 64), (128, 128), (4, 8)))


def test_positions_tolerance_still_catches_small_mistakes():
    def base_1000(n, d):
        pe = pytorch_tutorial_positions(n, d)
        pos = torch.arange(n, dtype=torch.float64)[:, None]
        angles = pos / 1000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(angles), torch.cos(angles)
        return pe
    with pytest.raises(AssertionError, match="wrong at index"):
        checks.check_sinusoidal_positions(base_1000)

    def from_one(n, d):
        return pytorch_tutorial_positions(n + 1, d)[1:]
    with pytest.raises(AssertionError, match="positions count from 0"):
        checks.check_sinusoidal_positions(from_one)


ALTERNATIVES = '''
from collections import Counter
import torch.nn.functional as F

def count_pairs(ids):
    return Counter(zip(ids, ids[1:]))

def merge(ids, pair, new_id):
    out = list(ids)
    i = 0
    while i < len(out) - 1:
        if out[i] == pair[0] and out[i + 1] == pair[1]:
            out[i:i + 2] = [new_id]
        i += 1
    return out

def train_bpe(text, num_merges):
    chunks = Counter(pretokenize(text))
    ids = {c: list(c.encode("utf-8")) for c in chunks}
    merges = []
    for step in range(num_merges):
        counts = Counter()
        for c, seq in ids.items():
            for p in zip(seq, seq[1:]):
                counts[p] += chunks[c]
        if not counts:
            break
        top = max(counts.values())
        pair = sorted(p for p, n in counts.items() if n == top)[0]
        ids = {c: merge(seq, pair, 256 + step) for c, seq in ids.items()}
        merges.append(pair)
    return merges

def encode(text, merges):
    out = []
    for chunk in pretokenize(text):
        seq = list(chunk.encode("utf-8"))
        for i, pair in enumerate(merges):   # replaying every merge in order is the same as lowest rank first
            seq = merge(seq, pair, 256 + i)
        out += seq
    return out

def decode(ids, merges):
    pieces = [bytes([i]) for i in range(256)]
    for a, b in merges:
        pieces.append(pieces[a] + pieces[b])
    return b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")

def cosine_similarity(a, b):
    return F.cosine_similarity(a, b, dim=-1)
'''


def test_correct_alternatives_keep_full_marks(capsys):
    """Counter, a loop that splices, replaying merges in order, a list for the vocabulary, torch's cosine, float32
    positions: other right answers pass every visible and hidden case."""
    ns = notebook_namespace("01_tokens")
    exec(ALTERNATIVES, ns)
    calls = [(checks.check_count_pairs, "count_pairs", {}), (checks.check_merge, "merge", {}),
             (checks.check_train_bpe, "train_bpe", {}),
             (checks.check_train_bpe, "train_bpe", dict(texts=["abababab cdcdcd abab", "the theme then thee 那个那个 ✓✓✓"], num_merges=9)),
             (checks.check_encode, "encode", {}), (checks.check_decode, "decode", {}),
             (checks.check_encode, "encode", dict(texts=["newer and wider: 机器学习, 学习机器 🤖 ok", "   spaces   and\ttabs\n\nlines"], num_merges=60)),
             (checks.check_cosine_similarity, "cosine_similarity", dict(seed=7, shapes=((3, 4, 5, 6), (1,), (100, 3))))]
    for check, name, params in calls:
        check(ns[name], **params)
    checks.check_sinusoidal_positions(pytorch_tutorial_positions, sizes=((1, 2), (33, 10), (128, 128)))
    assert capsys.readouterr().out.count("✓") == len(calls) + 1
