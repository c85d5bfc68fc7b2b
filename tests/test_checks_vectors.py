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


ALTERNATIVES = '''
import torch.nn.functional as F

def sgns_loss(center, context, negatives):
    pos = torch.einsum("bd,bd->b", center, context).float()
    neg = torch.einsum("bkd,bd->bk", negatives, center).float()
    return -(torch.log(torch.sigmoid(pos)).sum() + torch.log(torch.sigmoid(-neg)).sum())

def sgns_gradients(center, context, negatives):
    s_pos = torch.sigmoid(torch.einsum("bd,bd->b", center, context))
    s_neg = torch.sigmoid(torch.einsum("bkd,bd->bk", negatives, center))
    grad_center = torch.einsum("b,bd->bd", s_pos - 1, context) + torch.einsum("bk,bkd->bd", s_neg, negatives)
    return grad_center, (s_pos - 1)[:, None] * center, torch.einsum("bk,bd->bkd", s_neg, center)

def negative_distribution(counts, power=0.75):
    w = counts.float().pow(power)
    return w / w.sum()

def train_step(W_in, W_out, centers, contexts, negatives, lr):
    g_c, g_o, g_n = sgns_gradients(W_in[centers], W_out[contexts], W_out[negatives])
    for b in range(len(centers)):             # one pair at a time: repeated words add up
        W_in[centers[b]] -= lr * g_c[b]
        W_out[contexts[b]] -= lr * g_o[b]
        for k in range(negatives.shape[1]):
            W_out[negatives[b, k]] -= lr * g_n[b, k]
    return W_in, W_out

def analogy(E, words, a, b, c, topn=5):
    U = F.normalize(E, dim=-1)
    i = words.index
    scores = U @ (U[i(b)] - U[i(a)] + U[i(c)])
    order = [j for j in scores.argsort(descending=True).tolist() if words[j] not in (a, b, c)]
    return [words[j] for j in order[:topn]]
'''


def test_correct_alternatives_keep_full_marks(capsys):
    """einsum, float32, log(sigmoid), a loop over the batch, F.normalize with argsort: right answers pass."""
    ns = notebook_namespace("02_word2vec")
    exec(ALTERNATIVES, ns)
    calls = [(checks.check_sgns_loss, "sgns_loss", {}), (checks.check_sgns_loss, "sgns_loss", dict(seed=5, shapes=((7, 3, 4), (2, 20, 10)))),
             (checks.check_sgns_gradients, "sgns_gradients", {}),
             (checks.check_sgns_gradients, "sgns_gradients", dict(seed=6, shapes=((9, 4, 2), (3, 12, 7), (1, 1, 1)))),
             (checks.check_negative_distribution, "negative_distribution", dict(seed=3, sizes=(1, 7, 300), powers=(0.75, 0.5, 1.0))),
             (checks.check_train_step, "train_step", {}),
             (checks.check_train_step, "train_step", dict(seed=4, shapes=((3, 2, 16, 4), (50, 10, 64, 3)))),
             (checks.check_analogy, "analogy", {}), (checks.check_analogy, "analogy", dict(seed=11, n_words=25, dim=3, n_queries=8))]
    for check, name, params in calls:
        check(ns[name], **params)
    assert capsys.readouterr().out.count("✓") == len(calls)
