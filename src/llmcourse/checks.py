"""Graded checks: each test cell of an exercise passes the student's function to one of these.

A check runs the student's function on seeded inputs, turns what it returns into plain data (numpy
arrays, lists of ints, strings) and compares that with the reference in `llmcourse`. It looks at type,
shape and NaN first, then values with a stated tolerance, and when the answer is wrong it tries the
mistakes students usually make, so the message can name the one that was made. A passing check prints
what it verified; a failing one raises `AssertionError` with a message written for the student.

Explained in: the exercise notebooks (exercises/NN_topic), one check per graded function.
"""
from __future__ import annotations

import functools
import types
from typing import Any, Callable

import numpy as np
import torch

from llmcourse import tokens

ATOL = 1e-5  # absolute tolerance for float results
RTOL = 1e-4  # relative tolerance for float results


class CheckFailed(AssertionError):
    """A graded check failed; the message says what is wrong, in the course's terms."""


# --- the machinery every check shares ------------------------------------------------------------------

def _fail(message: str) -> None:
    raise CheckFailed(message)


def _uses_reference(fn: Callable, reference: Callable) -> bool:
    """True if `fn` is `reference` or reaches it: directly, through a module attribute
    (`tokens.encode`), a closure, or another function of the student's that calls it."""
    name = reference.__name__
    seen: set[int] = set()

    def visit(f: Any) -> bool:
        if f is reference or getattr(f, "__wrapped__", None) is reference:
            return True
        if isinstance(f, functools.partial):
            return visit(f.func)
        if not isinstance(f, types.FunctionType) or id(f) in seen:
            return False
        seen.add(id(f))
        codes = [f.__code__] + [c for c in f.__code__.co_consts if isinstance(c, types.CodeType)]
        names = {n for code in codes for n in code.co_names}
        referenced = [f.__globals__[n] for n in names if n in f.__globals__]
        referenced += [cell.cell_contents for cell in (f.__closure__ or ()) if _cell_filled(cell)]
        for obj in referenced:
            if isinstance(obj, types.ModuleType) and getattr(obj, name, None) is reference and name in names:
                return True
            if visit(obj):
                return True
        return False

    return visit(fn)


def _cell_filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _call(fn: Callable, name: str, *args: Any) -> Any:
    """Call the student's function, turning 'not written yet' and crashes into messages."""
    if not callable(fn):
        _fail(f"`{name}` should be a function, but it is a {type(fn).__name__}.")
    reference = getattr(tokens, name, None)
    if reference is not None and _uses_reference(fn, reference):
        _fail(f"`{name}` calls llmcourse's own reference implementation. Write it yourself: this scores 0.")
    try:
        return fn(*args)
    except NotImplementedError:
        _fail(f"`{name}` is not written yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except Exception as err:  # the student's code crashed: say where, in their terms
        _fail(f"`{name}{_short_args(args)}` raised {type(err).__name__}: {err}")


def _short_args(args: tuple) -> str:
    def show(a: Any) -> str:
        if isinstance(a, (torch.Tensor, np.ndarray)):
            return f"<{type(a).__name__} of shape {tuple(a.shape)}>"
        text = repr(a)
        return text if len(text) <= 40 else text[:37] + "..."
    return "(" + ", ".join(show(a) for a in args) + ")"


def as_float_array(value: Any, name: str) -> np.ndarray:
    """Plain float64 numpy array of what the student returned, or a message saying what it is instead."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy().copy()
    if isinstance(value, (np.ndarray, list, tuple, float, int, np.floating)):
        try:
            return np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            pass
    _fail(f"`{name}` should return a torch tensor of numbers, but it returned a {type(value).__name__}.")


def as_int_list(value: Any, name: str) -> list[int]:
    """Plain list of Python ints, or a message saying what the student returned instead."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        _fail(f"`{name}` should return a list of integer token ids, but it returned {type(value).__name__}: {value!r:.80}")
    return [int(v) for v in value]


def as_pair_list(value: Any, name: str) -> list[tuple[int, int]]:
    """Plain list of (int, int) pairs."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (int, np.integer)) for v in p) for p in value)
    if not ok:
        _fail(f"`{name}` should return a list of pairs of token ids like [(101, 32), (256, 116)], "
              f"but it returned {type(value).__name__}: {value!r:.80}")
    return [(int(a), int(b)) for a, b in value]


def as_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        _fail(f"`{name}` should return a str, but it returned a {type(value).__name__}: {value!r:.80}")
    return str(value)


def as_pair_counts(value: Any, name: str) -> dict[tuple[int, int], int]:
    if not isinstance(value, dict):
        _fail(f"`{name}` should return a dict mapping pairs to counts, but it returned a {type(value).__name__}.")
    try:
        return {(int(a), int(b)): int(n) for (a, b), n in value.items()}
    except (TypeError, ValueError):
        _fail(f"`{name}` should map pairs of ids (a, b) to counts, e.g. {{(1, 2): 2}}; got {value!r:.80}")


def compare_arrays(got: np.ndarray, want: np.ndarray, name: str, mistakes: dict[str, np.ndarray] | None = None,
                   what: str = "") -> None:
    """Shape, then NaN, then values within ATOL/RTOL; a wrong value is matched against known mistakes."""
    where = f" {what}" if what else ""
    if got.shape != want.shape:
        _fail(f"`{name}`{where} returned shape {got.shape}, expected {want.shape}.")
    if np.isnan(got).any() and not np.isnan(want).any():
        _fail(f"`{name}`{where} returned NaN values (a division by zero? the log of a negative number?).")
    if np.allclose(got, want, atol=ATOL, rtol=RTOL):
        return
    for message, wrong in (mistakes or {}).items():
        if wrong.shape == got.shape and np.allclose(got, wrong, atol=ATOL, rtol=RTOL):
            _fail(f"`{name}`{where}: {message}")
    index = np.unravel_index(np.argmax(np.abs(got - want)), got.shape)
    _fail(f"`{name}`{where} is wrong at index {tuple(int(i) for i in index)}: got {got[index]:.6g}, "
          f"expected {want[index]:.6g} (tolerance {ATOL} absolute + {RTOL} relative).")


def _ok(message: str) -> None:
    print("✓", message)


# --- 01_tokens ---------------------------------------------------------------------------------------

SAMPLE_TEXTS = [
    "low lower lowest newer newest wider widest",
    "To be, or not to be, that is the question.",
    "如何进行机器学习 how to do machine learning 🤖!",
]


def check_count_pairs(count_pairs: Callable, cases: list[list[int]] | None = None) -> None:
    """count_pairs(ids) -> {(a, b): how often b follows a}."""
    cases = cases or [[1, 2, 1, 2], [5, 5, 5, 5], [7], [], list("hello world".encode())]
    for ids in cases:
        got = as_pair_counts(_call(count_pairs, "count_pairs", list(ids)), "count_pairs")
        want = dict(tokens.count_pairs(ids))
        if got == want:
            continue
        if ids == [5, 5, 5, 5] and got.get((5, 5)) == 2:
            _fail("`count_pairs([5, 5, 5, 5])` should count (5, 5) three times: pairs overlap when counting "
                  "(positions 0-1, 1-2 and 2-3); only merging skips overlaps.")
        _fail(f"`count_pairs({ids})` returned {got}, expected {want}.")
    _ok(f"count_pairs is right on {len(cases)} sequences.")


def check_merge(merge: Callable, cases: list[tuple[list[int], tuple[int, int], int]] | None = None) -> None:
    """merge(ids, pair, new_id) -> ids with every non-overlapping pair, left to right, replaced by new_id."""
    cases = cases or [([1, 2, 3, 1, 2], (1, 2), 256), ([5, 5, 5], (5, 5), 300), ([1, 2], (2, 1), 256), ([], (1, 2), 256)]
    for ids, pair, new_id in cases:
        got = as_int_list(_call(merge, "merge", list(ids), pair, new_id), "merge")
        want = tokens.merge(ids, pair, new_id)
        if got == want:
            continue
        if len(got) > len(want):
            _fail(f"`merge({ids}, {pair}, {new_id})` returned {got}, expected {want}: after replacing a pair, "
                  "continue after it (two positions on), so the pair's second id is not kept and "
                  "occurrences never overlap.")
        _fail(f"`merge({ids}, {pair}, {new_id})` returned {got}, expected {want}.")
    _ok(f"merge is right on {len(cases)} cases.")


def _pair_counts_after(text: str, merges: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Weighted pair counts of `text` once `merges` have been applied: what BPE compares at the next step."""
    counts: dict[tuple[int, int], int] = {}
    for chunk in tokens.pretokenize(text):
        ids = list(chunk.encode("utf-8"))
        for i, pair in enumerate(merges):
            ids = tokens.merge(ids, pair, 256 + i)
        for pair, n in tokens.count_pairs(ids).items():
            counts[pair] = counts.get(pair, 0) + n
    return counts


def check_train_bpe(train_bpe: Callable, texts: list[str] | None = None, num_merges: int = 12) -> None:
    """train_bpe(text, num_merges) -> merges, the same as the reference, tie-break included."""
    texts = texts or SAMPLE_TEXTS
    for text in texts:
        got = as_pair_list(_call(train_bpe, "train_bpe", text, num_merges), "train_bpe")
        want = tokens.train_bpe(text, num_merges)
        if got == want:
            continue
        if len(got) != len(want) and got == want[: len(got)]:
            _fail(f"`train_bpe(text, {num_merges})` returned {len(got)} merges, expected {len(want)}: "
                  f"learn exactly num_merges merges (unless no pair is left) for text {text!r}.")
        first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
        mine = got[first] if first < len(got) else None
        counts = _pair_counts_after(text, want[:first])
        if mine is not None and counts.get(mine) == counts[want[first]]:
            _fail(f"merge {first} on {text!r} is {mine}, expected {want[first]}: both occur "
                  f"{counts[mine]} times, and when pairs are equally frequent BPE takes the smallest pair "
                  "(compare them as tuples (a, b)).")
        if mine is not None and max(mine) >= 256 + first:
            _fail(f"merge {first} on {text!r} uses token id {max(mine)}, which does not exist yet: "
                  f"merge i creates id 256 + i, so merge {first} can only use ids below {256 + first}.")
        _fail(f"`train_bpe` on {text!r}: merge {first} is {mine}, expected {want[first]} "
              f"(the merges before it agree). Count pairs inside each chunk of `pretokenize(text)`, take the "
              "most frequent, give merge i the id 256 + i, and apply it everywhere before counting again.")
    _ok(f"train_bpe learns the same {num_merges} merges as the reference on {len(texts)} texts.")


def check_encode(encode: Callable, texts: list[str] | None = None, num_merges: int = 40) -> None:
    """encode(text, merges) -> ids, the same as the reference (merges applied in the order learned)."""
    corpus = " ".join(SAMPLE_TEXTS) * 3
    merges = tokens.train_bpe(corpus, num_merges)
    for text in texts or SAMPLE_TEXTS + ["", "lowest newest widest", "学习 🤖🤖"]:
        got = as_int_list(_call(encode, "encode", text, merges), "encode")
        want = tokens.encode(text, merges)
        if got == want:
            continue
        if bytes(b for b in got if b < 256) == text.encode() and all(i < 256 for i in got):
            _fail(f"`encode({text!r}, merges)` returned only bytes: apply the learned merges to each chunk.")
        if tokens.decode(got, merges) == text if all(0 <= i < 256 + len(merges) for i in got) else False:
            _fail(f"`encode({text!r}, merges)` decodes back to the text but uses other tokens than BPE would: "
                  "always apply the merge that was learned first (lowest rank) among the pairs present, "
                  "and work inside each chunk of `pretokenize(text)`.")
        _fail(f"`encode({text!r}, merges)` returned {got[:12]}..., expected {want[:12]}...")
    _ok("encode matches the reference, Chinese and emoji included.")


def check_decode(decode: Callable, num_merges: int = 40, texts: list[str] | None = None) -> None:
    """decode(ids, merges) -> text; decode(encode(text)) == text for any text."""
    corpus = " ".join(SAMPLE_TEXTS) * 3
    merges = tokens.train_bpe(corpus, num_merges)
    for text in texts or SAMPLE_TEXTS + ["", "学习 🤖🤖", "naïve café — ½"]:
        ids = tokens.encode(text, merges)
        got = as_str(_call(decode, "decode", ids, merges), "decode")
        if got == text:
            continue
        if "\ufffd" in got or "�" in got:
            _fail(f"`decode` broke a multi-byte character in {text!r}: join the bytes of all tokens first, "
                  "then decode the UTF-8 once (a Chinese character is 3 bytes and may span two tokens).")
        _fail(f"`decode(encode({text!r}))` returned {got!r}: the round trip must give back the text exactly.")
    _ok("decode(encode(text)) == text, Chinese and emoji included.")


def check_cosine_similarity(cosine_similarity: Callable, seed: int = 0,
                            shapes: tuple[tuple[int, ...], ...] = ((8,), (5, 16), (2, 3, 7))) -> None:
    """cosine_similarity(a, b) over the last axis, for any leading shape."""
    gen = torch.Generator().manual_seed(seed)
    for shape in shapes:
        a = torch.randn(shape, generator=gen) * 3
        b = torch.randn(shape, generator=gen) + 0.5
        got = as_float_array(_call(cosine_similarity, "cosine_similarity", a.clone(), b.clone()), "cosine_similarity")
        want = tokens.cosine_similarity(a, b).double().numpy()
        compare_arrays(got, want, "cosine_similarity", what=f"for inputs of shape {shape}", mistakes={
            "this is the plain dot product: divide it by the product of the two vectors' lengths (norms).":
                (a * b).sum(-1).double().numpy(),
            "divide by the product of the lengths |a|·|b|, not by their sum.":
                ((a * b).sum(-1) / (a.norm(dim=-1) + b.norm(dim=-1))).double().numpy(),
            "divide by |a|·|b| (square roots of the sums of squares), not by the sums of squares.":
                ((a * b).sum(-1) / ((a * a).sum(-1) * (b * b).sum(-1))).double().numpy(),
        })
    _ok(f"cosine_similarity matches the reference on shapes {list(shapes)} (tolerance {ATOL}).")


def check_sinusoidal_positions(sinusoidal_positions: Callable,
                               sizes: tuple[tuple[int, int], ...] = ((4, 8), (50, 16), (7, 64))) -> None:
    """sinusoidal_positions(n_positions, d_model) -> (n_positions, d_model), Vaswani et al.'s layout."""
    for n, d in sizes:
        got = as_float_array(_call(sinusoidal_positions, "sinusoidal_positions", n, d), "sinusoidal_positions")
        want = tokens.sinusoidal_positions(n, d).double().numpy()
        pos = np.arange(n)[:, None]
        two_i = np.arange(0, d, 2)
        angles = pos / 10000 ** (two_i / d)
        swapped, halves, no_two = np.zeros((n, d)), np.zeros((n, d)), np.zeros((n, d))
        swapped[:, 0::2], swapped[:, 1::2] = np.cos(angles), np.sin(angles)
        halves[:, : d // 2], halves[:, d // 2:] = np.sin(angles), np.cos(angles)
        wrong_angles = pos / 10000 ** (np.arange(d // 2) * 2 * 2 / d)
        no_two[:, 0::2], no_two[:, 1::2] = np.sin(wrong_angles), np.cos(wrong_angles)
        compare_arrays(got, want, "sinusoidal_positions", what=f"for n_positions={n}, d_model={d}", mistakes={
            "sin and cos are swapped: even columns (0, 2, 4, ...) hold the sines, odd columns the cosines.": swapped,
            "the sines and cosines must be interleaved (sin in column 2i, cos in column 2i+1), "
            "not the sines in the first half and the cosines in the second.": halves,
            "the exponent is 2i/d_model where 2i is the even column index (0, 2, 4, ...): "
            "column pair i uses 10000^(2i/d_model), not 10000^(4i/d_model).": no_two,
        })
    _ok(f"sinusoidal_positions matches the reference for sizes {list(sizes)}.")
