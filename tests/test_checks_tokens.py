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
