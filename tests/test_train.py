"""llmcourse.train: the loss, gradients by hand and by our autograd (against torch's), optimiser steps,
the bigram loop, the Shakespeare data and the trainer's pieces. No wall-clock assertions."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llmcourse import train
from llmcourse.train import Value


def test_cross_entropy_equals_torch_and_survives_large_logits():
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(7, 11, generator=gen, dtype=torch.float64) * 3, torch.randint(0, 11, (7,), generator=gen)
    assert torch.allclose(train.cross_entropy(logits, targets), nn.functional.cross_entropy(logits, targets))
    big = torch.tensor([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 0.0]])
    got = train.cross_entropy(big, torch.tensor([0, 2]))
    assert torch.isfinite(got) and torch.allclose(got, nn.functional.cross_entropy(big, torch.tensor([0, 2])))


def test_uniform_guess_costs_log_vocabulary():
    assert math.isclose(float(train.cross_entropy(torch.zeros(4, 83), torch.tensor([0, 5, 9, 82]))), math.log(83),
                        rel_tol=1e-6)


def test_linear_softmax_backward_equals_autograd():
    gen = torch.Generator().manual_seed(1)
    x, W, b = (torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True) for s in [(5, 4), (4, 6), (6,)])
    targets = torch.randint(0, 6, (5,), generator=gen)
    nn.functional.cross_entropy(x @ W + b, targets).backward()
    for got, want in zip(train.linear_softmax_backward(x.detach(), W.detach(), b.detach(), targets),
                         (x.grad, W.grad, b.grad)):
        assert torch.allclose(got, want)


def test_sgd_and_adam_steps_equal_torch_optimisers():
    gen = torch.Generator().manual_seed(2)
    p0, grads = torch.randn(3, 4, generator=gen, dtype=torch.float64), [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(5)]
    assert torch.allclose(train.sgd_step(p0, grads[0], 0.1), p0 - 0.1 * grads[0])
    p = p0.clone().requires_grad_()
    opt = torch.optim.Adam([p], lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    ours, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        ours, m, v = train.adam_step(ours, g, m, v, t, 0.01, 0.9, 0.99, 1e-8)
        assert torch.allclose(ours, p.detach())


def test_train_bigram_approaches_the_chain_entropy():
    tokens, P = train.markov_corpus(20000, 12, seed=0)
    floor = train.markov_entropy(P, tokens)
    model, losses = train.train_bigram(tokens, 12, steps=300, lr=5.0, batch_size=64, seed=0)
    assert losses[0] == pytest.approx(math.log(12), rel=1e-5)
    held_out, _ = train.markov_corpus(5000, 12, seed=0)  # same chain, a shorter text
    assert train.bigram_loss(model, held_out) < floor + 0.1


def _random_graph(seed: int):
    """The same random computation on our Values and on torch tensors: a two-layer net with mixed ops."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"x": (4, 5), "W1": (5, 6), "b1": (6,), "W2": (6, 3), "b2": (1, 3), "s": (4, 1)}
    tensors = {k: torch.randn(*s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    targets = torch.randint(0, 3, (4,), generator=gen)
    act = ["relu", "tanh"][seed % 2]

    def run(t, activation):
        h = activation(t["x"] @ t["W1"] + t["b1"])
        return h @ t["W2"] * t["s"] + t["b2"]

    vals = {k: Value(v) for k, v in tensors.items()}
    ours = run(vals, lambda h: getattr(h, act)())
    loss = ours.cross_entropy(targets) + (ours * ours).sum() * 0.01
    loss.backward()
    ref = {k: v.clone().requires_grad_() for k, v in tensors.items()}
    out = run(ref, getattr(torch, act))
    ref_loss = nn.functional.cross_entropy(out, targets) + (out * out).sum() * 0.01
    ref_loss.backward()
    return loss, vals, ref_loss, ref


@pytest.mark.parametrize("seed", range(6))
def test_autograd_equals_torch_on_random_graphs(seed):
    loss, vals, ref_loss, ref = _random_graph(seed)
    assert torch.allclose(loss.data, ref_loss.detach())
    for name in vals:
        assert torch.allclose(vals[name].grad, ref[name].grad), name


def test_autograd_log_softmax_and_reused_nodes():
    x = torch.randn(3, 4, dtype=torch.float64)
    v = Value(x)
    y = (v.log_softmax() * v).sum() + v.sum()            # v is used three times: gradients add up
    y.backward()
    t = x.clone().requires_grad_()
    ((torch.log_softmax(t, -1) * t).sum() + t.sum()).backward()
    assert torch.allclose(v.grad, t.grad)


def test_shakespeare_plays_are_37_plays():
    text = train.shakespeare_plays()
    assert len(set(text)) == 83 and 4_800_000 < len(text) < 4_900_000
    assert "From fairest creatures we desire increase" not in text          # the Sonnets are left out
    chars = train.char_data(text)
    assert len(chars.train) == int(0.9 * len(text)) and len(chars.train) + len(chars.val) == len(text)
    assert chars.decode(chars.encode("To be, or not")) == "To be, or not"


def test_batches_are_shifted_by_one():
    ids = torch.arange(100)
    x, y = train.get_batch(ids, 8, 3, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 8) and torch.equal(y, x + 1)


def test_learning_rate_warms_up_then_decays():
    cfg = train.TrainConfig()
    lrs = [train.learning_rate(i, cfg) for i in range(cfg.iters + 1)]
    assert lrs[0] < lrs[50] < lrs[cfg.warmup] == pytest.approx(cfg.lr, rel=1e-6)
    assert lrs[-1] == pytest.approx(cfg.min_lr) and all(a >= b for a, b in zip(lrs[cfg.warmup:], lrs[cfg.warmup + 1:]))


def test_fit_lowers_the_loss_on_a_few_steps():
    cfg = train.TrainConfig(n_layers=1, d_model=32, block=16, batch=4, iters=30, warmup=5, eval_interval=30, lr=1e-2,
                            eval_iters=2, sample_at=(0, 30), sample_chars=20, threads=1)
    chars = train.char_data(train.shakespeare_plays()[:50_000])
    model = train.build_model(len(chars.chars), cfg)
    assert model.head.weight is model.tok.weight
    result = train.fit(model, chars, cfg, progress=False)
    assert len(result["losses"]) == 30 and [e[0] for e in result["evals"]] == [0, 30]
    assert result["evals"][-1][1] < result["evals"][0][1] - 0.5, result["evals"]
    assert set(result["samples"]) == {0, 30} and len(result["samples"][30]) == 20
