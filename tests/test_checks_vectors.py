"""The graded checks of 02_word2vec: mistakes beyond the planted ones, wrong types, shapes and NaN are named.

What every check must do (pass the solution, refuse the reference, name the planted mistakes) is tested
for all exercises in test_checks_all.py.
"""
from __future__ import annotations


import pytest
import torch

from conftest import notebook_namespace
from llmcourse import checks, vectors




def test_other_mistakes_are_named():
    ns = notebook_namespace("02_word2vec")
    logsig = torch.nn.functional.logsigmoid
    with pytest.raises(AssertionError, match="sum the loss over the batch"):
        checks.check_sgns_loss(lambda u, v, n: -(logsig((u * v).sum(-1)) + logsig(-(n * u[:, None]).sum(-1)).sum(-1)).mean())
    with pytest.raises(AssertionError, match="gradients of the log-likelihood"):
        checks.check_sgns_gradients(lambda u, v, n: tuple(-g for g in ns["sgns_gradients"](u, v, n)))
    with pytest.raises(AssertionError, match="sign error in the negatives' term"):
        checks.check_sgns_gradients(lambda u, v, n: (
            (torch.sigmoid((u * v).sum(-1)) - 1)[:, None] * v + ((torch.sigmoid((n * u[:, None]).sum(-1)) - 1)[..., None] * n).sum(1),
            (torch.sigmoid((u * v).sum(-1)) - 1)[:, None] * u,
            (torch.sigmoid((n * u[:, None]).sum(-1)) - 1)[..., None] * u[:, None]))
    with pytest.raises(AssertionError, match="raise the counts to the power"):
        checks.check_negative_distribution(lambda c, p=0.75: c.double() / c.sum())

    def ascent(W_in, W_out, c, o, n, lr):
        return ns["train_step"](W_in, W_out, c, o, n, -lr)
    with pytest.raises(AssertionError, match="went UP the gradient"):
        checks.check_train_step(ascent)

    def reversed_analogy(E, words, a, b, c, topn=5):
        return ns["analogy"](E, words, b, a, c, topn)
    with pytest.raises(AssertionError, match="not a − b \\+ c"):
        checks.check_analogy(reversed_analogy)


def test_every_analogy_mistake_variant_differs_from_the_answer():
    """A mistake message is only reachable if the mistake changes the output on the visible cases."""
    for args in checks.vectors._analogy_cases():
        want = vectors.analogy(*args)
        assert any(v != want for v in checks.vectors._analogy_variants(*args).values())


def test_wrong_type_shape_and_nan_are_named():
    with pytest.raises(AssertionError, match="tuple of torch tensors"):
        checks.check_sgns_gradients(lambda u, v, n: 0.5)
    with pytest.raises(AssertionError, match="shape"):
        checks.check_sgns_loss(lambda u, v, n: (u * v).sum(-1))
    with pytest.raises(AssertionError, match="NaN"):
        checks.check_negative_distribution(lambda c, p=0.75: c.double() * float("nan"))
    with pytest.raises(AssertionError, match="list of words"):
        checks.check_analogy(lambda *a: 3)
    with pytest.raises(AssertionError, match="three integers"):
        checks.check_evaluate_analogies(lambda E, w, q: 0.5)
