"""Graded checks of exercise 06_training: a stable cross-entropy, the backward pass of a linear layer with
softmax cross-entropy, one SGD step, one Adam step, and a training loop judged by its outcome.

Explained in chapter 06_training; each check compares with `llmcourse.train` and names typical mistakes.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from llmcourse import train
from llmcourse.checks.core import ATOL, RTOL, Check, as_float_array, compare_arrays, diagnosis, fail, register

TRAIN_MARGIN = 0.1  # the trained bigram's loss may exceed the best possible bigram loss by this much (nats)


def as_float_arrays(value, name: str) -> list[np.ndarray]:
    """A tuple of tensors as a list of float arrays."""
    if not isinstance(value, (tuple, list)) or not value or not all(
            isinstance(v, (torch.Tensor, np.ndarray, list, float, int)) for v in value):
        fail(f"`{name}` should return a tuple of torch tensors, but it returned a {type(value).__name__}.")
    return [as_float_array(v, name) for v in value]


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a, b, atol=ATOL, rtol=RTOL)


# --- cross-entropy ------------------------------------------------------------------------------------

def _ce_cases(seed: int = 0, shapes=((4, 5), (1, 3), (16, 83)), big: float = 1000.0) -> list[tuple]:
    """(logits (B, V) float32, targets (B,) int64): random logits, then logits around `big`."""
    gen = torch.Generator().manual_seed(seed)
    out = [(torch.tensor([[big, 0.0, -big], [big, big, 0.0]]), torch.tensor([0, 2])),
           (torch.tensor([[big, 0.0, 0.0], [0.0, 1.0, 2.0]]), torch.tensor([0, 2]))]  # rows of mixed scales
    for b, v in shapes:
        out.append((torch.randn(b, v, generator=gen) * 3, torch.randint(0, v, (b,), generator=gen)))
    b, v = shapes[0]
    out.append((big + torch.randn(b, v, generator=gen) * 5, torch.randint(0, v, (b,), generator=gen)))
    return out


def _compare_cross_entropy(args, got) -> None:
    logits, targets = args[0].double(), args[1]
    want = train.cross_entropy(logits, targets).numpy()
    what = f"for logits of shape {tuple(logits.shape)} (largest {float(logits.abs().max()):.0f})"
    if got.shape != want.shape:
        fail(f"`cross_entropy` {what} returned shape {got.shape}: it should be one number (a scalar tensor), the "
             "mean loss over the batch.")
    row_max = logits.max(-1).values
    if not np.isfinite(got).all() and float(row_max.max() - row_max.min()) > 700:
        fail(f"`cross_entropy` {what} returned {got.item()}: one maximum for the whole batch was subtracted. "
             f"Here the rows' largest logits are {float(row_max.max()):.0f} and {float(row_max.min()):.0f}: "
             "shifted by the batch's maximum, every exp of the second row underflows to 0 and its log is -inf. "
             "Subtract each ROW's maximum, logits.max(dim=-1, keepdim=True).values.")
    if not np.isfinite(got).all():
        fail(f"`cross_entropy` {what} returned {got.item()}: exp(1000) overflows to inf, and the log of softmax "
             "becomes inf − inf = NaN. Subtract each row's maximum from the logits before exp: log-softmax does "
             "not change when every logit of a row moves by the same amount.")
    log_probs = torch.log_softmax(logits, -1)[torch.arange(len(targets)), targets]
    compare_arrays(got, want, "cross_entropy", what=what, mistakes={
        "average over the batch: the loss is the MEAN of −log p(target) over the rows, not their sum.":
            (-log_probs.sum()).numpy(),
        "sign error: the loss is MINUS the log-probability of the target (a positive number, 0 for a sure "
        "right guess).": log_probs.mean().numpy(),
        "the loss is −log p of the TARGET class of each row: pick column targets[i] of row i "
        "(log_probs[torch.arange(B), targets]).": (-torch.log_softmax(logits, -1).mean()).numpy(),
    })


check_cross_entropy = register(Check(
    name="cross_entropy", reference=train.cross_entropy, cases=_ce_cases,
    output=as_float_array, compare=_compare_cross_entropy,
    passed=f"cross_entropy matches the reference (tolerance {ATOL}), also for logits of 1,000."))


# --- backward pass of linear + softmax cross-entropy --------------------------------------------------

def _backward_cases(seed: int = 0, shapes=((4, 3, 5), (8, 6, 4), (2, 10, 7))) -> list[tuple]:
    """(x (B, d), W (d, V), b (V,), targets (B,)) for each (B, d, V)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, d, generator=gen), torch.randn(d, v, generator=gen) * 0.5,
             torch.randn(v, generator=gen) * 0.5, torch.randint(0, v, (bs,), generator=gen)) for bs, d, v in shapes]


def _compare_backward(args, got) -> None:
    x, W, b = (a.double().clone().requires_grad_() for a in args[:3])
    targets = args[3]
    torch.nn.functional.cross_entropy(x @ W + b, targets).backward()
    want = [x.grad.numpy(), W.grad.numpy(), b.grad.numpy()]
    if len(got) != 3:
        fail(f"`linear_softmax_backward` should return 3 tensors (dx, dW, db), got {len(got)}.")
    B = len(targets)
    mistakes = {
        f"the gradient is not averaged over the batch: it is {B} times too large here. The loss is a MEAN over "
        "the B rows, so dL/dlogits = (softmax − one-hot) / B.": [w * B for w in want],
        "sign error: dL/dlogits = softmax − one-hot (the target's logit must go UP when we step against the "
        "gradient), not one-hot − softmax.": [-w for w in want],
    }
    shapes = {"dx": "(B, d) like x", "dW": "(d, V) like W", "db": "(V,) like b: sum over the batch"}
    for i, name in enumerate(["dx", "dW", "db"]):
        if got[i].shape != want[i].shape:
            fail(f"`linear_softmax_backward` returned {name} of shape {got[i].shape}, expected {want[i].shape}, "
                 f"{shapes[name]}.")
    for i, name in enumerate(["dx", "dW", "db"]):
        compare_arrays(got[i], want[i], "linear_softmax_backward", what=f"{name} (checked against torch autograd)",
                       mistakes={m: w[i] for m, w in mistakes.items() if all(_close(got[j], w[j]) for j in range(3))})


check_linear_softmax_backward = register(Check(
    name="linear_softmax_backward", reference=train.linear_softmax_backward, cases=_backward_cases,
    output=as_float_arrays, compare=_compare_backward,
    passed="linear_softmax_backward equals torch autograd's gradients."))


# --- one SGD step -------------------------------------------------------------------------------------

def _sgd_cases(seed: int = 0, shapes=((3,), (4, 5)), lrs=(0.1, 0.5)) -> list[tuple]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(*s, generator=gen), torch.randn(*s, generator=gen), lr) for s, lr in zip(shapes, lrs)]


def _compare_sgd(args, got) -> None:
    p, g, lr = args[0].double(), args[1].double(), args[2]
    compare_arrays(got, train.sgd_step(p, g, lr).numpy(), "sgd_step", what=f"with lr={lr}", mistakes={
        "learning rate sign: the step went UP the gradient. Gradient descent subtracts: param − lr × grad.":
            (p + lr * g).numpy(),
        "the step is the gradient TIMES the learning rate, param − lr × grad.": (p - g).numpy(),
    })


check_sgd_step = register(Check(
    name="sgd_step", reference=train.sgd_step, cases=_sgd_cases, output=as_float_array, compare=_compare_sgd,
    passed="sgd_step moves the parameter against its gradient."))


# --- one Adam step ------------------------------------------------------------------------------------

def _adam_cases(seed: int = 0, ts=(1, 2, 10, 1000), betas=(0.9, 0.999), tiny: float = 1e-5) -> list[tuple]:
    """(param, grad, m, v, t, lr, beta1, beta2, eps): m = v = 0 at t = 1, running averages after; then a first
    step with gradients of size `tiny`, where sqrt(v_hat) + eps and sqrt(v_hat + eps) differ tenfold."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in ts:
        shape = (3, 4) if t % 2 else (5,)
        p, g = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
        m = torch.zeros(shape) if t == 1 else torch.randn(*shape, generator=gen) * 0.1
        v = torch.zeros(shape) if t == 1 else torch.rand(*shape, generator=gen) * 0.1
        out.append((p, g, m, v, t, 0.01, betas[0], betas[1], 1e-8))
    if tiny:
        p, g = torch.randn(4, generator=gen), torch.randn(4, generator=gen) * tiny
        out.append((p, g, torch.zeros(4), torch.zeros(4), 1, 0.01, betas[0], betas[1], 1e-8))
    return out


@diagnosis
def _adam_variant(p, g, m, v, t, lr, b1, b2, eps, correct=True, square=True, eps_inside=False, shift=0,
                  corrected_moments=False):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g ** 2 if square else g.abs())
    m_hat, v_hat = (m / (1 - b1 ** (t + shift)), v / (1 - b2 ** (t + shift))) if correct else (m, v)
    denom = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
    if corrected_moments:
        return [(p - lr * m_hat / denom).numpy(), m_hat.numpy(), v_hat.numpy()]
    return [(p - lr * m_hat / denom).numpy(), m.numpy(), v.numpy()]


def _compare_adam(args, got) -> None:
    args = tuple(a.double() if isinstance(a, torch.Tensor) else a for a in args)
    t = args[4]
    want = _adam_variant(*args)
    if len(got) != 3:
        fail(f"`adam_step` should return 3 tensors (param, m, v), got {len(got)}.")
    mistakes = {
        f"Adam's bias correction is missing: m and v start at 0, so early on they are too small; divide them by "
        f"(1 − beta1**t) and (1 − beta2**t) before the update (here t = {t}).": _adam_variant(*args, correct=False),
        "v is the running mean of the SQUARED gradient (grad ** 2).": _adam_variant(*args, square=False),
        "epsilon is inside the square root: the update divides by sqrt(v_hat) + eps, not sqrt(v_hat + eps). With "
        "small gradients, as here, the step comes out many times too small.": _adam_variant(*args, eps_inside=True),
        f"the step count is off by one: the bias correction uses t itself (here t = {t}), 1 − beta1**t and "
        "1 − beta2**t, with t = 1 at the first step.": _adam_variant(*args, shift=1),
        f"the step count is off by one: the bias correction uses t itself (here t = {t}), 1 − beta1**t and "
        "1 − beta2**t, not t − 1.": _adam_variant(*args, shift=-1) if t > 1 else None,
        "the bias-corrected moments are returned: return m and v themselves (the running averages that the "
        "next step continues), and use m_hat and v_hat only for the update.": _adam_variant(*args,
                                                                                        corrected_moments=True),
    }
    mistakes = {msg: w for msg, w in mistakes.items() if w is not None}
    for i, name in enumerate(["param", "m", "v"]):
        compare_arrays(got[i], want[i], "adam_step", what=f"({name} at step t = {t})",
                       mistakes={msg: w[i] for msg, w in mistakes.items() if all(_close(got[j], w[j]) for j in range(3))})


check_adam_step = register(Check(
    name="adam_step", reference=train.adam_step, cases=_adam_cases, output=as_float_arrays, compare=_compare_adam,
    passed="adam_step matches the reference: moments, bias correction and update."))


# --- a training loop, judged by its outcome -----------------------------------------------------------

def _train_cases(n_tokens: int = 20000, vocab_size: int = 12, steps: int = 300, lr: float = 5.0,
                 batch_size: int = 64, seed: int = 0) -> list[tuple]:
    tokens, _ = train.markov_corpus(n_tokens, vocab_size, seed)
    return [(tokens, vocab_size, steps, lr, batch_size, seed)]


def as_trained(value, name: str) -> list[np.ndarray]:
    """(model, losses) -> [the model's (V, V) table, the losses]; also reads the plain data back."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        fail(f"`{name}` should return (model, losses): the trained Bigram model and the list of losses.")
    model, losses = value
    if isinstance(model, torch.nn.Module):
        params = list(model.parameters())
        if len(params) != 1:
            fail(f"`{name}` should return the given Bigram model (one (V, V) table), not a model with "
                 f"{len(params)} parameters.")
        model = params[0]
    if isinstance(losses, torch.Tensor):
        losses = losses.tolist()
    if not isinstance(losses, (list, tuple)) or not all(isinstance(x, (int, float)) for x in losses):
        fail(f"`{name}` should return the loss of every step as a list of floats (`loss.item()`).")
    return [as_float_array(model, name), np.array(losses, dtype=np.float64)]


def best_bigram_loss(tokens: torch.Tensor, vocab_size: int) -> float:
    """The lowest loss any bigram table can reach on these tokens: the conditional entropy of their pairs."""
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    counts.index_put_((tokens[:-1], tokens[1:]), torch.ones(len(tokens) - 1, dtype=torch.float64), accumulate=True)
    probs = counts / counts.sum(1, keepdim=True).clamp(min=1)
    return float(-probs[tokens[:-1], tokens[1:]].log().mean())


def _compare_train(args, got) -> None:
    tokens, vocab_size, steps = args[0], args[1], args[2]
    table, losses = got
    if table.shape != (vocab_size, vocab_size):
        fail(f"`train_bigram` returned a table of shape {table.shape}, expected ({vocab_size}, {vocab_size}).")
    if len(losses) != steps:
        fail(f"`train_bigram` returned {len(losses)} losses for {steps} steps: record `loss.item()` once per step.")
    floor, start = best_bigram_loss(tokens, vocab_size), math.log(vocab_size)
    bound = floor + TRAIN_MARGIN
    if not np.isfinite(table).all():
        fail("`train_bigram` returned a table with NaN or infinite values: the steps blew up. Are the gradients "
             "accumulating (call model.zero_grad() every step), or is the learning rate too large?")
    logits = torch.from_numpy(table)
    loss = float(torch.nn.functional.cross_entropy(logits[tokens[:-1]], tokens[1:]))
    if loss <= bound:
        return
    msg = (f"`train_bigram`: your model's loss on the corpus is {loss:.3f}, but {bound:.3f} is needed (the best a "
           f"bigram table can do here is {floor:.3f}; a uniform guess costs ln {vocab_size} = {start:.3f}). ")
    if len(losses) > 1 and np.min(losses[1:11]) > losses[0]:
        fail(msg + "The loss went UP from the first step on: learning rate sign. Each step must go against "
             "the gradient, param − lr × grad.")
    half = losses[len(losses) // 2:]
    if loss > start or (len(half) and (np.max(half) > start or np.std(half) > 0.3)):
        fail(msg + "The losses jump up and down instead of settling: gradients accumulate. PyTorch ADDS every "
             "backward() into .grad, so without model.zero_grad() (or p.grad = None) each step also repeats all "
             "the earlier steps' gradients.")
    fail(msg + f"Take {steps} steps of plain SGD with the given learning rate on batches of random "
         "(current, next) pairs drawn from the whole corpus, and return the model you trained.")


check_train_bigram = register(Check(
    name="train_bigram", reference=train.train_bigram, cases=_train_cases, output=as_trained,
    compare=_compare_train, seeded=5,
    passed=f"your bigram model is within {TRAIN_MARGIN} nats of the best possible bigram loss."))
