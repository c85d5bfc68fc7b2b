"""Graded checks of exercise 01_tokens: BPE, cosine similarity, sinusoidal positions.

Explained in chapter 01_tokens; each check compares with `llmcourse.tokens` and names typical mistakes.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from llmcourse import tokens
from llmcourse.checks.core import (ATOL, Check, as_float_array, as_int_list, as_pair_counts, as_pair_list, as_str,
                                   compare_arrays, diagnosis, fail, register)

SAMPLE_TEXTS = [
    "low lower lowest newer newest wider widest",
    "To be, or not to be, that is the question.",
    "如何进行机器学习 how to do machine learning 🤖!",
]
ENCODE_TEXTS = SAMPLE_TEXTS + ["", "lowest newest widest", "学习 🤖🤖"]
DECODE_TEXTS = SAMPLE_TEXTS + ["", "学习 🤖🤖", "naïve café — ½"]


def _with_merges(texts, num_merges: int, encoded: bool) -> list[tuple]:
    """Cases (text or its ids, merges) with merges learned once on the sample texts; each case gets its own copy."""
    merges = tokens.train_bpe(" ".join(SAMPLE_TEXTS) * 3, num_merges)
    return [(tokens.encode(t, merges) if encoded else t, list(merges)) for t in texts]


# Cases with merges given by hand, each separating one plausible wrong `encode` from BPE's:
# - "to  be": two spaces are two chunks (' ' and ' be'); merged over the whole text, the learned pair (32, 32)
#   joins them across the chunk boundary;
# - "banana": 'ba' was learned before 'an', though 'an' occurs twice in the chunk and 'ba' once.
HAND_MERGES = [("to  be", [(32, 32), (32, 98), (116, 111)]),
               ("banana, bandana", [(98, 97), (97, 110), (110, 97), (256, 110)])]


def _encode_cases(texts=tuple(ENCODE_TEXTS), num_merges: int = 40) -> list[tuple]:
    return _with_merges(texts, num_merges, encoded=False) + [(t, list(m)) for t, m in HAND_MERGES]


# --- wrong variants, for naming mistakes (written for the diagnoses, self-contained: no reference is called) ---

@diagnosis
def _replace_pair(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """ids with each occurrence of pair, left to right without overlap, replaced by new."""
    out: list[int] = []
    skip = False
    for a, b in zip(ids, [*ids[1:], None]):
        if skip:
            skip = False
        elif (a, b) == pair:
            out.append(new)
            skip = True
        else:
            out.append(a)
    return out


@diagnosis
def _encode_variant(text: str, merges, chunked: bool = True, pick: str = "rank") -> list[int]:
    """encode with one choice changed: `chunked=False` merges over the whole text; `pick` chooses the pair to merge
    next among the learned pairs present: 'rank' (learned first: right), 'count' (most frequent in the chunk,
    ties to the first seen) or 'count-rank' (most frequent, ties to the first learned)."""
    rank = dict(zip(merges, range(len(merges))))
    result: list[int] = []
    for piece in (tokens.pretokenize(text) if chunked else [text]):
        seq = list(piece.encode("utf-8"))
        while True:
            present = Counter(p for p in zip(seq, seq[1:]) if p in rank)
            if not present:
                break
            if pick == "rank":
                best = min(present, key=rank.__getitem__)
            elif pick == "count":
                best = max(present, key=present.__getitem__)
            else:
                best = max(present, key=lambda p: (present[p], -rank[p]))
            seq = _replace_pair(seq, best, 256 + rank[best])
        result += seq
    return result


@diagnosis
def _train_variant(text: str, num_merges: int, weighted: bool = True, chunked: bool = True,
                   largest_tie: bool = False) -> list[tuple[int, int]]:
    """train_bpe with one choice changed: `weighted=False` counts each distinct chunk once, `chunked=False` counts
    pairs over the whole text, `largest_tie` breaks ties towards the largest pair."""
    pieces = Counter(tokens.pretokenize(text) if chunked else [text])
    seqs = {piece: list(piece.encode("utf-8")) for piece in pieces}
    learned: list[tuple[int, int]] = []
    while len(learned) < num_merges:
        step = len(learned)
        totals: Counter = Counter()
        for piece, seq in seqs.items():
            for p, n in Counter(zip(seq, seq[1:])).items():
                totals[p] += n * (pieces[piece] if weighted else 1)
        if not totals:
            break
        best = max(totals, key=lambda p: (totals[p], p)) if largest_tie else min(totals, key=lambda p: (-totals[p], p))
        seqs = {piece: _replace_pair(seq, best, 256 + step) for piece, seq in seqs.items()}
        learned.append(best)
    return learned


# --- count_pairs, merge --------------------------------------------------------------------------------

def _compare_count_pairs(args, got) -> None:
    (ids,) = args
    want = dict(tokens.count_pairs(ids))
    if got == want:
        return
    repeated = [p for p in want if p[0] == p[1] and got.get(p, 0) < want[p]]
    if repeated:
        fail(f"`count_pairs({ids})` counts {repeated[0]} {got.get(repeated[0], 0)} times, expected "
             f"{want[repeated[0]]}: pairs overlap when counting ([5, 5, 5] holds (5, 5) twice, at positions "
             "0-1 and 1-2); only merging skips overlaps.")
    fail(f"`count_pairs({ids})` returned {got}, expected {want}.")


check_count_pairs = register(Check(
    name="count_pairs", reference=tokens.count_pairs,
    cases=lambda cases=([1, 2, 1, 2], [5, 5, 5, 5], [7], [], list(b"hello world")): [(list(c),) for c in cases],
    output=as_pair_counts, compare=_compare_count_pairs, passed="count_pairs is right."))


def _compare_merge(args, got) -> None:
    ids, pair, new_id = args
    want = tokens.merge(ids, pair, new_id)
    if got == want:
        return
    if len(got) > len(want):
        fail(f"`merge({ids}, {pair}, {new_id})` returned {got}, expected {want}: after replacing a pair, "
             "continue after it (two positions on), so the pair's second id is not kept and occurrences never overlap.")
    fail(f"`merge({ids}, {pair}, {new_id})` returned {got}, expected {want}.")


check_merge = register(Check(
    name="merge", reference=tokens.merge,
    cases=lambda: [([1, 2, 3, 1, 2], (1, 2), 256), ([5, 5, 5], (5, 5), 300), ([1, 2], (2, 1), 256), ([], (1, 2), 256)],
    output=as_int_list, compare=_compare_merge, passed="merge is right."))


# --- train_bpe ---------------------------------------------------------------------------------------

def _pair_counts_after(text: str, merges: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Weighted pair counts of `text` once `merges` have been applied: what BPE compares at the next step."""
    counts: Counter = Counter()      # composed of the graded merge and count_pairs (stubs in the kit)
    for chunk in tokens.pretokenize(text):
        ids = [*chunk.encode("utf-8")]
        for i, pair in enumerate(merges):
            ids = tokens.merge(ids, pair, 256 + i)
        counts.update(tokens.count_pairs(ids))
    return dict(counts)


def _compare_train_bpe(args, got) -> None:
    text, num_merges = args
    want = tokens.train_bpe(text, num_merges)
    if got == want:
        return
    if len(got) != len(want) and got == want[: len(got)]:
        fail(f"`train_bpe(text, {num_merges})` returned {len(got)} merges, expected {len(want)}: "
             f"learn exactly num_merges merges (unless no pair is left) for text {text!r}.")
    first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    if first >= len(want):
        fail(f"`train_bpe(text, {num_merges})` on {text!r} returned {len(got)} merges, expected {len(want)}: stop after "
             "num_merges merges, or earlier when no pair is left (every chunk is a single token).")
    mine = got[first] if first < len(got) else None
    counts = _pair_counts_after(text, want[:first])
    at = f"merge {first} on {text!r} is {mine}, expected {want[first] if first < len(want) else None}"

    def agrees(variant: list) -> bool:  # the student's merges follow the variant up to the first wrong one
        return mine is not None and variant[: first + 1] == got[: first + 1]

    if agrees(_train_variant(text, num_merges, weighted=False)):
        fail(f"{at}: you counted each distinct chunk once. A chunk that occurs n times in the text (' the' in every "
             "sentence) counts n times: count the pairs of every chunk of pretokenize(text), repeats included.")
    if agrees(_train_variant(text, num_merges, chunked=False)):
        fail(f"{at}: you counted pairs over the whole text. Split it with pretokenize(text) first and count inside "
             "each chunk: merges never cross a chunk boundary (the space before a word belongs to the word).")
    if agrees(_train_variant(text, num_merges, largest_tie=True)) or (mine is not None and counts.get(mine) == counts[want[first]]):
        fail(f"{at}: both occur {counts[want[first]]} times, "
             "and when pairs are equally frequent BPE takes the smallest pair (compare them as tuples (a, b)).")
    if mine is not None and max(mine) >= 256 + first:
        fail(f"merge {first} on {text!r} uses token id {max(mine)}, which does not exist yet: "
             f"merge i creates id 256 + i, so merge {first} can only use ids below {256 + first}.")
    fail(f"`train_bpe` on {text!r}: merge {first} is {mine}, expected {want[first] if first < len(want) else None} "
         "(the merges before it agree). Count pairs inside each chunk of `pretokenize(text)`, take the most "
         "frequent, give merge i the id 256 + i, and apply it everywhere before counting again.")


check_train_bpe = register(Check(
    name="train_bpe", reference=tokens.train_bpe,
    cases=lambda texts=tuple(SAMPLE_TEXTS), num_merges=12: [(t, num_merges) for t in texts],
    output=as_pair_list, compare=_compare_train_bpe, passed="train_bpe learns the same merges as the reference."))


# --- encode, decode ----------------------------------------------------------------------------------

def _compare_encode(args, got) -> None:
    text, merges = args
    want = tokens.encode(text, merges)
    if got == want:
        return
    if all(i < 256 for i in got) and bytes(got) == text.encode():
        fail(f"`encode({text!r}, merges)` returned only bytes: apply the learned merges to each chunk.")
    if got == _encode_variant(text, merges, chunked=False):
        fail(f"`encode({text!r}, merges)` returned {got}, expected {want}: you merged over the whole text. Split it "
             "with pretokenize(text) first and merge inside each chunk: merges never cross a chunk boundary (the chunks "
             f"here are {tokens.pretokenize(text)[:6]}).")
    if got in (_encode_variant(text, merges, pick="count"), _encode_variant(text, merges, pick="count-rank")):
        fail(f"`encode({text!r}, merges)` returned {got}, expected {want}: at each step you merged the pair that occurs "
             "most often in the chunk. BPE merges, among the learned pairs present, the one learned *first* (lowest "
             "index in merges), however often it occurs: that replays training in order.")
    if all(0 <= i < 256 + len(merges) for i in got) and tokens.decode(got, merges) == text:
        fail(f"`encode({text!r}, merges)` decodes back to the text but uses other tokens than BPE would: "
             "always apply the merge that was learned first (lowest rank) among the pairs present, "
             "and work inside each chunk of `pretokenize(text)`.")
    fail(f"`encode({text!r}, merges)` returned {got[:12]}..., expected {want[:12]}...")


check_encode = register(Check(
    name="encode", reference=tokens.encode,
    cases=_encode_cases,
    output=as_int_list, compare=_compare_encode, passed="encode matches the reference, Chinese and emoji included."))


def _compare_decode(args, got) -> None:
    ids, merges = args
    text = tokens.decode(ids, merges)
    if got == text:
        return
    if "\ufffd" in got:
        fail(f"`decode` broke a multi-byte character in {text!r}: join the bytes of all tokens first, "
             "then decode the UTF-8 once (a Chinese character is 3 bytes and may span two tokens).")
    fail(f"`decode(encode({text!r}))` returned {got!r}: the round trip must give back the text exactly.")


check_decode = register(Check(
    name="decode", reference=tokens.decode,
    cases=lambda texts=tuple(DECODE_TEXTS), num_merges=40: _with_merges(texts, num_merges, encoded=True),
    output=as_str, compare=_compare_decode, passed="decode(encode(text)) == text, Chinese and emoji included."))


# --- cosine similarity, positions --------------------------------------------------------------------

def _cosine_cases(seed: int = 0, shapes=((8,), (5, 16), (2, 3, 7))) -> list[tuple]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(tuple(s), generator=gen) * 3, torch.randn(tuple(s), generator=gen) + 0.5) for s in shapes]


def _compare_cosine(args, got) -> None:
    a, b = (x.double() for x in args)
    want = tokens.cosine_similarity(a, b).numpy()
    compare_arrays(got, want, "cosine_similarity", what=f"for inputs of shape {tuple(a.shape)}", mistakes={
        "this is the plain dot product: divide it by the product of the two vectors' lengths (norms).":
            (a * b).sum(-1).numpy(),
        "divide by the product of the lengths |a|·|b|, not by their sum.":
            ((a * b).sum(-1) / (a.norm(dim=-1) + b.norm(dim=-1))).numpy(),
        "divide by |a|·|b| (square roots of the sums of squares), not by the sums of squares.":
            ((a * b).sum(-1) / ((a * a).sum(-1) * (b * b).sum(-1))).numpy(),
    })


check_cosine_similarity = register(Check(
    name="cosine_similarity", reference=tokens.cosine_similarity, cases=_cosine_cases,
    output=as_float_array, compare=_compare_cosine,
    passed=f"cosine_similarity matches the reference (tolerance {ATOL})."))


ANGLE_RTOL = 1e-6  # float32 rounding of the angle (about 8 units of float32's 1.2e-7, relative), passed on by sin/cos


def _compare_positions(args, got) -> None:
    n, d = args
    want = tokens.sinusoidal_positions(n, d).double().numpy()
    pos = np.arange(n)[:, None]
    angles = pos / 10000 ** (np.arange(0, d, 2) / d)
    swapped, halves, no_two = np.zeros((n, d)), np.zeros((n, d)), np.zeros((n, d))
    swapped[:, 0::2], swapped[:, 1::2] = np.cos(angles), np.sin(angles)
    halves[:, : d // 2], halves[:, d // 2:] = np.sin(angles), np.cos(angles)
    wrong_angles = pos / 10000 ** (np.arange(d // 2) * 4 / d)
    no_two[:, 0::2], no_two[:, 1::2] = np.sin(wrong_angles), np.cos(wrong_angles)
    # float32 tolerance: an angle pos / 10000^(2i/d) computed in float32 is off by a few units of its last bit,
    # about 1e-7 of its size, and sin/cos pass that on: at position 511 a correct float32 answer is ~6e-5 away
    tolerance = ATOL + ANGLE_RTOL * np.repeat(angles, 2, axis=1)[:, :d]
    what = f"for n_positions={n}, d_model={d}"
    if got.shape == want.shape and not np.isnan(got).any() and (np.abs(got - want) <= tolerance).all():
        return
    from_one = np.zeros((n, d))
    from_one[:, 0::2], from_one[:, 1::2] = np.sin(angles + angles / np.maximum(pos, 1)), np.cos(angles + angles / np.maximum(pos, 1))
    from_one[0, 0::2] = np.sin(1 / 10000 ** (np.arange(0, d, 2) / d))
    from_one[0, 1::2] = np.cos(1 / 10000 ** (np.arange(0, d, 2) / d))
    compare_arrays(got, want, "sinusoidal_positions", what=what, mistakes={
        "positions count from 0: row 0 is position 0 (sin 0 = 0, cos 0 = 1), not position 1.": from_one,
        "sin and cos are swapped: even columns (0, 2, 4, ...) hold the sines, odd columns the cosines.": swapped,
        "the sines and cosines must be interleaved (sin in column 2i, cos in column 2i+1), "
        "not the sines in the first half and the cosines in the second.": halves,
        "the exponent is 2i/d_model where 2i is the even column index (0, 2, 4, ...): "
        "column pair i uses 10000^(2i/d_model), not 10000^(4i/d_model).": no_two,
    })
    index = np.unravel_index(np.argmax(np.abs(got - want) - tolerance), got.shape)
    fail(f"`sinusoidal_positions` {what} is wrong at index {tuple(int(i) for i in index)}: got {got[index]:.6g}, "
         f"expected {want[index]:.6g} (tolerance {tolerance[index]:.2g}: {ATOL} plus {ANGLE_RTOL} times the angle, "
         "what float32 rounding allows).")


check_sinusoidal_positions = register(Check(
    name="sinusoidal_positions", reference=tokens.sinusoidal_positions,
    cases=lambda sizes=((4, 8), (50, 16), (7, 64)): [tuple(s) for s in sizes],
    output=as_float_array, compare=_compare_positions,
    passed=f"sinusoidal_positions matches the reference (tolerance {ATOL} + {ANGLE_RTOL} × the angle, for float32)."))
