"""The graded checks of 06_training: mistakes beyond the planted ones, correct alternatives, wrong types, shapes
and NaN.

What every check must do (pass the solution, refuse the reference, name the planted mistakes) is tested for all
exercises in test_checks_all.py.
"""
from __future__ import annotations

import pytest
import torch

from conftest import notebook_namespace
from llmcourse import checks, train


def test_correct_alternatives_keep_full_marks(capsys):
    def ce_logsumexp(logits, targets):            # float64 and logsumexp: a correct alternative
        z = logits.double()
        return (torch.logsumexp(z, -1) - z[torch.arange(len(targets)), targets]).mean()

    def ce_loop(logits, targets):                 # one row at a time
        total = 0.0
        for row, t in zip(logits, targets):
            m = row.max()
            total = total + (m + (row - m).exp().sum().log() - row[t])
        return total / len(targets)
    checks.check_cross_entropy(ce_logsumexp)
    checks.check_cross_entropy(ce_loop)

    def backward_einsum(x, W, b, targets):
        p = torch.softmax(torch.einsum("bd,dv->bv", x, W) + b, -1)
        dz = (p - torch.nn.functional.one_hot(targets, W.shape[1])) / x.shape[0]
        return torch.einsum("bv,dv->bd", dz, W), torch.einsum("bd,bv->dv", x, dz), dz.sum(0)
    checks.check_linear_softmax_backward(backward_einsum)

    def adam_folded(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):     # the bias corrections folded into lr
        m = m * b1 + (1 - b1) * g
        v = torch.addcmul(v * b2, g, g, value=1 - b2)
        step = lr / (1 - b1 ** t)
        return p - step * m / ((v / (1 - b2 ** t)).sqrt() + eps), m, v
    checks.check_adam_step(adam_folded)
    checks.check_sgd_step(lambda p, g, lr: torch.sub(p.double(), g.double(), alpha=lr))   # float64

    def ce_per_row_max_float32(logits, targets):
        rows = torch.arange(len(targets))
        z = logits - logits.max(-1, keepdim=True).values
        return (z.exp().sum(-1).log() - z[rows, targets]).mean()
    checks.check_cross_entropy(ce_per_row_max_float32)

    ns = notebook_namespace("06_training")

    def train_with_torch_sgd(tokens, vocab_size, steps, lr, batch_size, seed=0):
        gen = torch.Generator().manual_seed(seed)
        model = ns["Bigram"](vocab_size)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            i = torch.randint(0, len(tokens) - 1, (batch_size,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(tokens[i]), tokens[i + 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return model, torch.tensor(losses)
    checks.check_train_bigram(train_with_torch_sgd)

    def train_global_seed(tokens, vocab_size, steps, lr, batch_size, seed=0):   # honours the seed another way
        torch.manual_seed(seed)
        model = ns["Bigram"](vocab_size)
        losses = []
        for _ in range(steps):
            i = torch.randperm(len(tokens) - 1)[:batch_size]
            loss = ns["cross_entropy"](model(tokens[i]), tokens[i + 1])
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                model.table -= lr * model.table.grad
            losses.append(loss.item())
        return model, losses
    checks.check_train_bigram(train_global_seed)
    assert capsys.readouterr().out.count("✓") == 8


def test_other_mistakes_are_named():
    with pytest.raises(AssertionError, match="average over the batch"):
        checks.check_cross_entropy(lambda z, t: -torch.log_softmax(z, -1)[torch.arange(len(t)), t].sum())
    with pytest.raises(AssertionError, match="MINUS the log-probability"):
        checks.check_cross_entropy(lambda z, t: torch.log_softmax(z, -1)[torch.arange(len(t)), t].mean())

    def backward_sign(x, W, b, targets):
        dz = (torch.nn.functional.one_hot(targets, W.shape[1]) - torch.softmax(x @ W + b, -1)) / len(targets)
        return dz @ W.T, x.T @ dz, dz.sum(0)
    with pytest.raises(AssertionError, match="sign error"):
        checks.check_linear_softmax_backward(backward_sign)

    def backward_db_not_summed(x, W, b, targets):
        dz = (torch.softmax(x @ W + b, -1) - torch.nn.functional.one_hot(targets, W.shape[1])) / len(targets)
        return dz @ W.T, x.T @ dz, dz
    with pytest.raises(AssertionError, match="sum over the batch"):
        checks.check_linear_softmax_backward(backward_db_not_summed)

    def adam_abs(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g.abs()
        return p - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps), m, v
    with pytest.raises(AssertionError, match="SQUARED gradient"):
        checks.check_adam_step(adam_abs)
    with pytest.raises(AssertionError, match="TIMES the learning rate"):
        checks.check_sgd_step(lambda p, g, lr: p - g)


def test_training_outcomes_are_diagnosed():
    def never_steps(tokens, vocab_size, steps, lr, batch_size, seed=0):
        return train.Bigram(vocab_size), [2.4849] * steps
    with pytest.raises(AssertionError, match="is needed"):
        checks.check_train_bigram(never_steps)

    ns = notebook_namespace("06_training")

    def ascent(tokens, vocab_size, steps, lr, batch_size, seed=0):
        return ns["train_bigram"](tokens, vocab_size, steps, -lr, batch_size, seed)
    with pytest.raises(AssertionError, match="learning rate sign"):
        checks.check_train_bigram(ascent)
    with pytest.raises(AssertionError, match="losses for 300 steps"):
        checks.check_train_bigram(lambda *a: (train.Bigram(12), [1.0]))
    with pytest.raises(AssertionError, match=r"\(model, losses\)"):
        checks.check_train_bigram(lambda *a: train.Bigram(12))

    def exploding(tokens, vocab_size, steps, lr, batch_size, seed=0):
        model = train.Bigram(vocab_size)
        with torch.no_grad():
            model.table.fill_(float("nan"))
        return model, [1.0] * steps
    with pytest.raises(AssertionError, match="NaN or infinite"):
        checks.check_train_bigram(exploding)


def test_best_bigram_loss_is_the_floor():
    tokens, P = train.markov_corpus(20000, 12, seed=0)
    floor = checks.train.best_bigram_loss(tokens, 12)
    assert floor <= train.markov_entropy(P, tokens) + 1e-9       # the fitted table beats even the true chain
    model, _ = train.train_bigram(tokens, 12, 300, 5.0, 64, 0)
    assert floor <= train.bigram_loss(model, tokens) < floor + checks.train.TRAIN_MARGIN


def test_wrong_type_shape_and_nan_are_named():
    with pytest.raises(AssertionError, match="scalar tensor"):
        checks.check_cross_entropy(lambda z, t: -torch.log_softmax(z, -1)[torch.arange(len(t)), t])
    with pytest.raises(AssertionError, match="tuple of torch tensors"):
        checks.check_linear_softmax_backward(lambda *a: 0.5)
    with pytest.raises(AssertionError, match="3 tensors"):
        checks.check_adam_step(lambda p, g, m, v, *a: (p, m))
    with pytest.raises(AssertionError, match="NaN"):
        checks.check_sgd_step(lambda p, g, lr: p * float("nan"))


# --- issue 29: each wrong answer of its table loses points with its own message -----------------------------

SOLUTION = notebook_namespace("06_training")


def _ce_one_max(logits, targets):
    z = logits - logits.max()
    return -(z - z.exp().sum(-1, keepdim=True).log())[torch.arange(len(targets)), targets].mean()


def _ce_in_place(logits, targets):
    logits -= logits.max(-1, keepdim=True).values
    return -(logits - logits.exp().sum(-1, keepdim=True).log())[torch.arange(len(targets)), targets].mean()


def _sgd_in_place(param, grad, lr):
    param -= lr * grad
    return param


def _adam_eps_inside(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
    return p - lr * (m / (1 - b1 ** t)) / (v / (1 - b2 ** t) + eps).sqrt(), m, v


def _adam_off_by_one(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
    return p - lr * (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt() + eps), m, v


def _adam_corrected_moments(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * m_hat / (v_hat.sqrt() + eps), m_hat, v_hat


def _adam_in_place(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    return p - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps), m, v


def _train_unseeded(tokens, vocab_size, steps, lr, batch_size, seed=0):
    return SOLUTION["train_bigram"](tokens, vocab_size, steps, lr, batch_size, 0)


def _train_global_generator(tokens, vocab_size, steps, lr, batch_size, seed=0):
    return SOLUTION["train_bigram"](tokens, vocab_size, steps, lr, batch_size, int(torch.randint(1000, ())))


@pytest.mark.parametrize("check,wrong,message", [
    ("cross_entropy", _ce_one_max, "one maximum for the whole batch"),
    ("cross_entropy", _ce_in_place, "changed its argument `logits`"),
    ("sgd_step", _sgd_in_place, "changed its argument `param`"),
    ("adam_step", _adam_eps_inside, "epsilon is inside the square root"),
    ("adam_step", _adam_off_by_one, "step count is off by one"),
    ("adam_step", _adam_corrected_moments, "bias-corrected moments are returned"),
    ("adam_step", _adam_in_place, "changed its argument `m`"),
    ("train_bigram", _train_unseeded, "the `seed` argument is ignored"),
    ("train_bigram", _train_global_generator, "two different results for the same seed"),
])
def test_issue_table_rows_lose_points_with_their_message(check, wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.REGISTRY[f"check_{check}"](wrong)


def test_the_mixed_scale_batch_has_the_issue_s_answer():
    from llmcourse.checks.train import _ce_cases
    logits, targets = _ce_cases()[1]
    assert abs(float(train.cross_entropy(logits.double(), targets)) - 0.204) < 1e-3
