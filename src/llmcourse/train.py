"""Learning from raw text: the loss, its gradients by hand and by a small autograd, optimiser steps, and a trainer
that fits `gpt.TinyGPT` to Shakespeare's plays one character at a time.

Every position of a text is a training example: the characters before it are the question, the next character
is the answer, so no labels are needed. The loss is the surprise −log p(next); gradient descent moves every
parameter a little against its gradient; backpropagation finds all the gradients in one backward sweep.

Explained in chapter 06_training.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from llmcourse import attention, data, gpt

# --- the loss ------------------------------------------------------------------------------------------


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of −log softmax(logits)[target]: logits (B, V) float, targets (B,) int -> scalar.

    Subtracting each row's maximum first changes nothing mathematically (softmax is shift-invariant) and keeps
    exp() from overflowing for large logits. Explained in chapter 06_training.
    """
    shifted = logits - logits.max(dim=-1, keepdim=True).values          # (B, V), every row's max is 0
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()  # (B, V) log softmax
    return -log_probs[torch.arange(len(targets)), targets].mean()


def linear_softmax_backward(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
                            targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of cross_entropy(x @ W + b, targets) by hand: x (B, d), W (d, V), b (V,), targets (B,).

    The gradient of the mean loss with respect to the logits is (softmax − one-hot) / B; the chain rule carries
    it back through the linear layer. Returns (dx (B, d), dW (d, V), db (V,)). Explained in chapter 06_training.
    """
    probs = torch.softmax(x @ W + b, dim=-1)                             # (B, V)
    dlogits = probs.clone()
    dlogits[torch.arange(len(targets)), targets] -= 1                   # softmax − one-hot
    dlogits = dlogits / len(targets)                                     # the loss is a mean over the batch
    return dlogits @ W.T, x.T @ dlogits, dlogits.sum(dim=0)


# --- optimiser steps -----------------------------------------------------------------------------------


def sgd_step(param: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
    """One step of gradient descent: the parameter moved against its gradient. Explained in chapter 06_training."""
    return param - lr * grad


def adam_step(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int, lr: float,
              beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step (Kingma & Ba 2015) at step t = 1, 2, ...: returns (param, m, v), all of param's shape.

    m and v are running means of the gradient and of its square; dividing them by 1 − beta**t corrects their
    bias towards 0 in the first steps. Explained in chapter 06_training.
    """
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


# --- a tiny model to train by hand ---------------------------------------------------------------------


class Bigram(nn.Module):
    """The smallest language model: a (V, V) table of logits for the next token given the current one, all
    zeros at the start (a uniform guess, loss ln V). tokens (...) -> logits (..., V)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(vocab_size, vocab_size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]


def markov_corpus(n_tokens: int = 20000, vocab_size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded text from a random Markov chain whose next token has three likely choices.

    Returns (tokens (n_tokens,) int64, transition matrix (V, V)). The best any bigram model can do is the
    chain's entropy rate, `markov_entropy(P)`. Explained in chapter 06_training.
    """
    gen = torch.Generator().manual_seed(seed)
    P = torch.rand(vocab_size, vocab_size, generator=gen) ** 8       # a few large entries per row
    P = P / P.sum(dim=1, keepdim=True)
    tokens = torch.empty(n_tokens, dtype=torch.long)
    tokens[0] = 0
    draws = torch.rand(n_tokens, generator=gen)
    cdf = P.cumsum(dim=1)
    for i in range(1, n_tokens):
        tokens[i] = min(int(torch.searchsorted(cdf[tokens[i - 1]], draws[i])), vocab_size - 1)
    return tokens, P


def markov_entropy(P: torch.Tensor, tokens: torch.Tensor) -> float:
    """Mean −log P(next | current) over a text: the loss of the true chain, the floor for a bigram model."""
    return float(-P[tokens[:-1], tokens[1:]].log().mean())


def bigram_loss(model: nn.Module, tokens: torch.Tensor) -> float:
    """Mean next-token cross-entropy of a model on every position of a text (torch's, for evaluation)."""
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(tokens[:-1]), tokens[1:]))


def train_bigram(tokens: torch.Tensor, vocab_size: int, steps: int, lr: float, batch_size: int,
                 seed: int = 0) -> tuple[nn.Module, list[float]]:
    """Plain SGD on a `Bigram` model: random (current, next) pairs, loss, backward, step, zero the gradients.

    Returns (the trained model, the loss of every step). Explained in chapter 06_training.
    """
    gen = torch.Generator().manual_seed(seed)
    model = Bigram(vocab_size)
    losses = []
    for _ in range(steps):
        i = torch.randint(0, len(tokens) - 1, (batch_size,), generator=gen)    # (B,) positions
        loss = cross_entropy(model(tokens[i]), tokens[i + 1])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(sgd_step(p, p.grad, lr))
        losses.append(loss.item())
    return model, losses


# --- a small reverse-mode autograd ---------------------------------------------------------------------


def _unbroadcast(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a gradient over the dimensions that broadcasting added or stretched, back to `shape`."""
    while grad.dim() > len(shape):
        grad = grad.sum(dim=0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(dim=i, keepdim=True)
    return grad


class Value:
    """A tensor that remembers how it was computed, so that `backward()` can fill in `.grad` for every tensor
    it depends on (reverse-mode automatic differentiation, as in Karpathy's micrograd, on whole tensors).

    Each operation returns a new Value whose `_backward` adds its share of the gradient to its inputs
    (the chain rule: d loss / d input = d loss / d output × d output / d input). Explained in chapter 06_training.
    """

    def __init__(self, data: torch.Tensor, parents: tuple["Value", ...] = (), op: str = ""):
        self.data = torch.as_tensor(data, dtype=torch.float64)
        self.grad = torch.zeros_like(self.data)
        self._parents, self._op = parents, op
        self._backward = lambda: None

    def __repr__(self) -> str:
        return f"Value(shape={tuple(self.data.shape)}, op={self._op!r})"

    @staticmethod
    def lift(x) -> "Value":
        return x if isinstance(x, Value) else Value(torch.as_tensor(x, dtype=torch.float64))

    def __add__(self, other) -> "Value":
        other = Value.lift(other)
        out = Value(self.data + other.data, (self, other), "+")

        def backward():
            self.grad += _unbroadcast(out.grad, self.data.shape)
            other.grad += _unbroadcast(out.grad, other.data.shape)
        out._backward = backward
        return out

    def __mul__(self, other) -> "Value":
        other = Value.lift(other)
        out = Value(self.data * other.data, (self, other), "*")

        def backward():
            self.grad += _unbroadcast(out.grad * other.data, self.data.shape)
            other.grad += _unbroadcast(out.grad * self.data, other.data.shape)
        out._backward = backward
        return out

    __radd__, __rmul__ = __add__, __mul__

    def __matmul__(self, other: "Value") -> "Value":
        out = Value(self.data @ other.data, (self, other), "@")        # (n, k) @ (k, m) -> (n, m)

        def backward():
            self.grad += out.grad @ other.data.T                         # (n, m) @ (m, k)
            other.grad += self.data.T @ out.grad                         # (k, n) @ (n, m)
        out._backward = backward
        return out

    def relu(self) -> "Value":
        out = Value(self.data.clamp(min=0), (self,), "relu")

        def backward():
            self.grad += out.grad * (self.data > 0)
        out._backward = backward
        return out

    def tanh(self) -> "Value":
        out = Value(self.data.tanh(), (self,), "tanh")

        def backward():
            self.grad += out.grad * (1 - out.data ** 2)
        out._backward = backward
        return out

    def sum(self) -> "Value":
        out = Value(self.data.sum(), (self,), "sum")

        def backward():
            self.grad += out.grad.expand_as(self.data)
        out._backward = backward
        return out

    def log_softmax(self) -> "Value":
        """Over the last dimension, stably: x − max − log Σ exp(x − max)."""
        shifted = self.data - self.data.max(dim=-1, keepdim=True).values
        out = Value(shifted - shifted.exp().sum(dim=-1, keepdim=True).log(), (self,), "log_softmax")

        def backward():  # d/dx_j of log p_i = [i = j] − p_j
            self.grad += out.grad - out.data.exp() * out.grad.sum(dim=-1, keepdim=True)
        out._backward = backward
        return out

    def cross_entropy(self, targets: torch.Tensor) -> "Value":
        """Mean of −log_softmax(self)[target] over the rows: logits (B, V), targets (B,) -> scalar Value."""
        log_probs = self.log_softmax()
        rows = torch.arange(len(targets))
        out = Value(-log_probs.data[rows, targets].mean(), (log_probs,), "cross_entropy")

        def backward():
            log_probs.grad[rows, targets] -= out.grad / len(targets)
        out._backward = backward
        return out

    def backward(self) -> None:
        """Fill `.grad` of every Value this one depends on: d self / d that Value (self must be a scalar)."""
        order, seen = [], set()

        def visit(v: Value) -> None:                                     # topological order: inputs first
            if id(v) not in seen:
                seen.add(id(v))
                for p in v._parents:
                    visit(p)
                order.append(v)
        visit(self)
        self.grad = torch.ones_like(self.data)
        for v in reversed(order):                                        # outputs first: the chain rule
            v._backward()


# --- the character-level Shakespeare corpus ------------------------------------------------------------

POEMS = ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets")


def shakespeare_plays() -> str:
    """The 37 plays of the `shakespeare` package joined by blank lines: its 42 texts minus the five poems.

    About 4.85 million characters, 83 distinct ones. Explained in chapter 06_training.
    """
    files = [p for p in data.shakespeare_files() if p.name.removesuffix("_gut.txt") not in POEMS]
    return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


@dataclass(frozen=True)
class CharData:
    """A text as character ids, split 90/10 into training and validation (the first 90% trains)."""
    chars: str                  # the vocabulary, sorted
    train: torch.Tensor         # (0.9 N,) int64
    val: torch.Tensor           # (0.1 N,) int64

    def encode(self, text: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.chars)}
        return [index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def char_data(text: str, train_share: float = 0.9) -> CharData:
    """Character ids of a text and its train/validation split. Explained in chapter 06_training."""
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n = int(train_share * len(ids))
    return CharData(chars, ids[:n], ids[n:])


def get_batch(ids: torch.Tensor, block: int, batch: int,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` random windows of `block` characters and the same windows shifted by one: (batch, block) twice.

    Each window holds `block` next-character questions at once. Explained in chapter 06_training.
    """
    starts = torch.randint(0, len(ids) - block - 1, (batch,), generator=gen)     # (batch,)
    rows = starts[:, None] + torch.arange(block)                                 # (batch, block)
    return ids[rows], ids[rows + 1]


# --- the trainer ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """nanoGPT's CPU configuration for character-level Shakespeare (its README), as plain values."""
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    block: int = 64                 # characters of context
    batch: int = 12                 # windows per step
    iters: int = 2000
    lr: float = 1e-3                # peak learning rate, after warm-up
    min_lr: float = 1e-4            # at the end of the cosine decay
    warmup: int = 100
    weight_decay: float = 0.1       # on matrices only, not on biases, LayerNorms or position embeddings
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20            # batches per estimate of each split's loss
    sample_at: tuple = (0, 200, 1000, 2000)
    sample_chars: int = 300
    seed: int = 1337
    threads: int = 1                # one thread: on 2 shared cores, two threads stall each other badly


def learning_rate(it: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr over cfg.warmup steps, then cosine decay to cfg.min_lr at cfg.iters."""
    if it < cfg.warmup:
        return cfg.lr * (it + 1) / (cfg.warmup + 1)
    progress = min(1.0, (it - cfg.warmup) / max(1, cfg.iters - cfg.warmup))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def build_model(vocab_size: int, cfg: TrainConfig) -> gpt.TinyGPT:
    """`gpt.TinyGPT` initialised like GPT-2: weights N(0, 0.02), biases 0, output projections of each residual
    branch scaled by 1/sqrt(2 n_layers), and the output head sharing the token embedding's matrix."""
    torch.manual_seed(cfg.seed)
    model = gpt.TinyGPT(vocab_size, cfg.block, cfg.n_layers, cfg.n_heads, cfg.d_model)
    for name, p in model.named_parameters():
        if p.dim() == 1:
            nn.init.zeros_(p) if name.endswith("bias") else nn.init.ones_(p)
        else:
            std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("attn.o.weight", "mlp.2.weight")) else 0.02
            nn.init.normal_(p, std=std)
    model.head.weight = model.tok.weight                                  # weight tying, (V, d_model)
    return model


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices only (nanoGPT's choice), fused into one kernel."""
    params = {id(p): (n, p) for n, p in model.named_parameters()}.values()     # tied weights once
    decay = [p for n, p in params if p.dim() >= 2 and not n.startswith("pos")]
    rest = [p for n, p in params if not (p.dim() >= 2 and not n.startswith("pos"))]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, cfg.beta2),
                             fused=True)                                  # one kernel for all parameters


@torch.no_grad()
def estimate_loss(model: nn.Module, ids: torch.Tensor, cfg: TrainConfig, seed: int) -> float:
    """Mean loss over cfg.eval_iters random batches of a split (the same batches every time for one seed)."""
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(cfg.eval_iters):
        x, y = get_batch(ids, cfg.block, cfg.batch, gen)
        logits = model(x)                                                 # (batch, block, V)
        losses.append(nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item())
    return sum(losses) / len(losses)


@torch.no_grad()
def sample(model: gpt.TinyGPT, prompt: list[int], n: int, seed: int, block: int) -> list[int]:
    """n characters drawn one at a time from the model's next-character distribution (temperature 1)."""
    gen = torch.Generator().manual_seed(seed)
    ids = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([ids[-block:]]))[0, -1]              # (V,)
        ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
    return ids[len(prompt):]


def fit(model: gpt.TinyGPT, chars: CharData, cfg: TrainConfig, progress: bool = True) -> dict:
    """Train a TinyGPT on character windows with AdamW, warm-up + cosine decay and gradient clipping,
    estimating both splits' losses every cfg.eval_interval steps and sampling at cfg.sample_at.

    Returns {"losses": loss of every step, "evals": [(step, train loss, val loss)], "samples": {step: text},
    "seconds": training time without evaluation and sampling, "ms_per_iter"}. Explained in chapter 06_training.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses, evals, samples, seconds = [], [], {}, 0.0
    bar = tqdm(range(cfg.iters + 1), desc="training", disable=not progress, mininterval=1.0)
    for it in bar:
        if it % cfg.eval_interval == 0 or it == cfg.iters:       # both splits, same batches
            model.eval()
            train_loss = estimate_loss(model, chars.train, cfg, seed=1)
            evals.append((it, train_loss, estimate_loss(model, chars.val, cfg, seed=2)))
        if it in cfg.sample_at:                                  # what it writes now
            ids = sample(model, chars.encode("\n"), cfg.sample_chars, it, cfg.block)
            samples[it] = chars.decode(ids)
        if it == cfg.iters:
            break
        model.train()
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = learning_rate(it, cfg)
        x, y = get_batch(chars.train, cfg.block, cfg.batch, gen)  # (batch, block) each
        logits = model(x)                                          # (batch, block, V)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()                                            # backpropagation
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        seconds += time.perf_counter() - start
        losses.append(loss.item())
        if it % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{evals[-1][2]:.3f}")
    torch.set_num_threads(threads)
    return {"losses": losses, "evals": evals, "samples": samples, "seconds": seconds,
            "ms_per_iter": 1000 * seconds / max(1, cfg.iters)}


def code_version() -> str:
    """A hash of the code a training run depends on (this module, the model, attention), for cache keys."""
    source = "".join(inspect.getsource(m) for m in (gpt, attention)) + inspect.getsource(fit)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def train_shakespeare(code: str = "", progress: bool = True, **config) -> dict:
    """Train the character-level GPT on the plays with `TrainConfig(**config)`; the history (losses, evaluations,
    samples, times), not the weights: nothing reads them, and without them the result is small enough to ship
    with the package (data.SHIP_CACHE), so a reader's first build of the book does not retrain. Call it through
    `data.cached(train_shakespeare, code=code_version(), **config)`: the key includes the config and the code.
    Explained in chapter 06_training."""
    cfg = TrainConfig(**config)
    chars = char_data(shakespeare_plays())
    model = build_model(len(chars.chars), cfg)
    result = fit(model, chars, cfg, progress=progress)
    return {"config": asdict(cfg), "chars": chars.chars,
            "n_params": sum(p.numel() for p in model.parameters()), **result}
