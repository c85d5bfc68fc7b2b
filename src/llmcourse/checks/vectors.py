"""Graded checks of exercise 02_word2vec: the SGNS loss and gradient, negative sampling, the training step,
analogies, their evaluation, and a whole training run on a synthetic corpus.

Explained in chapter 02_word2vec; each check compares with `llmcourse.vectors` and names typical mistakes.
"""
from __future__ import annotations

import numpy as np
import torch

from llmcourse import vectors
from llmcourse.checks.core import ATOL, Check, as_float_array, compare_arrays, diagnosis, fail, register

TRAIN_THRESHOLD = 0.8  # share of the synthetic corpus's analogies the student's vectors must solve


def as_float_arrays(value, name: str) -> list[np.ndarray]:
    """A tuple of tensors (as returned by sgns_gradients or train_step) as a list of float arrays."""
    if not isinstance(value, (tuple, list)) or not value or not all(
            isinstance(v, (torch.Tensor, np.ndarray, list)) for v in value):
        fail(f"`{name}` should return a tuple of torch tensors, but it returned a {type(value).__name__}.")
    return [as_float_array(v, name) for v in value]


def as_word_list(value, name: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) for w in value):
        fail(f"`{name}` should return a list of words (str), but it returned {type(value).__name__}: {value!r:.80}")
    return [str(w) for w in value]


def as_counts(value, name: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        fail(f"`{name}` should return three integers (correct, answered, skipped), but it returned {value!r:.80}")
    return [int(v) for v in value]


def as_words_and_vectors(value, name: str) -> tuple[list[str], np.ndarray]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        fail(f"`{name}` should return (words, W_in): the vocabulary and its (V, d) input vectors; got {type(value).__name__}.")
    return as_word_list(value[0], name), as_float_array(value[1], name)


# --- the loss and its gradient ------------------------------------------------------------------------

def _sgns_cases(seed: int = 0, shapes=((4, 8, 3), (16, 5, 1), (1, 10, 6))) -> list[tuple]:
    """(center (B, d), context (B, d), negatives (B, K, d)) for each (B, d, K)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b, d, k in shapes:
        out.append((torch.randn(b, d, generator=gen) * 0.7, torch.randn(b, d, generator=gen) * 0.7,
                    torch.randn(b, k, d, generator=gen) * 0.7))
    return out


def _logsig(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.logsigmoid(x)


def _compare_sgns_loss(args, got) -> None:
    u, v, n = (x.double() for x in args)
    pos, neg = (u * v).sum(-1), torch.einsum("bkd,bd->bk", n, u)
    want = vectors.sgns_loss(u, v, n).numpy()
    compare_arrays(got, want, "sgns_loss", what=f"for a batch of {u.shape[0]} pairs with {n.shape[1]} negatives each",
                   mistakes={
        "sign error in the negatives' term: it is log σ(−u·v_n) (a random word should score LOW), "
        "not log σ(u·v_n).": (-(_logsig(pos).sum() + _logsig(neg).sum())).numpy(),
        "sign error: the loss is MINUS the log-likelihood, −log σ(u·v_o) − Σ log σ(−u·v_n), so that it is "
        "positive and training makes it smaller.": (_logsig(pos).sum() + _logsig(-neg).sum()).numpy(),
        "sum the loss over the batch (do not take the mean): the gradients of one pair must not depend on the "
        "batch size.": (-(_logsig(pos) + _logsig(-neg).sum(-1)).mean()).numpy(),
        "the negatives' term is Σ_k log σ(−u·v_k), a log of each sigmoid; log(1 − σ(x)) = log σ(−x) is the "
        "same thing, but σ itself without the log is not.": (-(_logsig(pos).sum() + torch.sigmoid(-neg).sum())).numpy(),
    })


check_sgns_loss = register(Check(
    name="sgns_loss", reference=vectors.sgns_loss, cases=_sgns_cases,
    output=as_float_array, compare=_compare_sgns_loss, passed=f"sgns_loss matches the reference (tolerance {ATOL})."))


@diagnosis
def _autograd(u, v, n) -> list[torch.Tensor]:
    """The gradients torch computes for the reference loss: the ground truth."""
    u, v, n = (x.double().clone().requires_grad_() for x in (u, v, n))
    vectors.sgns_loss(u, v, n).backward()
    return [u.grad, v.grad, n.grad]


@diagnosis
def _gradient_mistakes(u, v, n) -> dict[str, list[torch.Tensor]]:
    """The gradients that typical sign and term mistakes give."""
    s_pos, s_neg = torch.sigmoid((u * v).sum(-1)), torch.sigmoid(torch.einsum("bkd,bd->bk", n, u))

    def grads(g_pos, g_neg):  # gradients for given dL/d(u·v_o) (B,) and dL/d(u·v_k) (B, K)
        return [g_pos[:, None] * v + torch.einsum("bk,bkd->bd", g_neg, n), g_pos[:, None] * u,
                g_neg[:, :, None] * u[:, None, :]]

    return {
        "sign error: these are the gradients of the log-likelihood, not of the loss (its negative). "
        "Training subtracts the gradient of the LOSS: dL/d(u·v_o) = σ(u·v_o) − 1.": grads(1 - s_pos, -s_neg),
        "sign error in the real pair's term: dL/d(u·v_o) = σ(u·v_o) − 1 (negative: the real pair's score "
        "must go up), not 1 − σ(u·v_o).": grads(1 - s_pos, s_neg),
        "sign error in the negatives' term: dL/d(u·v_k) = σ(u·v_k) (positive: a negative's score must go "
        "down), not σ(u·v_k) − 1 as for the real pair.": grads(s_pos - 1, s_neg - 1),
        "the centre's gradient needs both parts: (σ(u·v_o) − 1) v_o from the real pair plus Σ_k σ(u·v_k) v_k "
        "from the negatives.": [(s_pos - 1)[:, None] * v] + grads(s_pos - 1, s_neg)[1:],
    }


def _compare_sgns_gradients(args, got) -> None:
    u, v, n = (x.double() for x in args)
    want = _autograd(u, v, n)
    if len(got) != 3:
        fail(f"`sgns_gradients` should return 3 tensors (grad_center, grad_context, grad_negatives), got {len(got)}.")
    mistakes = _gradient_mistakes(u, v, n)
    names = ["grad_center", "grad_context", "grad_negatives"]
    for i, name in enumerate(names):
        compare_arrays(got[i], want[i].numpy(), "sgns_gradients", what=f"{name} (checked against torch autograd)",
                       mistakes={m: g[i].numpy() for m, g in mistakes.items()
                                 if all(np.allclose(got[j], g[j].numpy(), atol=ATOL, rtol=1e-4) for j in range(3))})


check_sgns_gradients = register(Check(
    name="sgns_gradients", reference=vectors.sgns_gradients, cases=_sgns_cases,
    output=as_float_arrays, compare=_compare_sgns_gradients,
    passed="sgns_gradients equals torch autograd's gradients of the loss."))


# --- negative sampling --------------------------------------------------------------------------------

def _negative_cases(seed: int = 0, sizes=(5, 50), powers=(0.75, 0.75)) -> list[tuple]:
    gen = torch.Generator().manual_seed(seed)
    out = [(torch.tensor([100, 10, 1]), 0.75)]
    for size, power in zip(sizes, powers):
        out.append((torch.randint(1, 1000, (size,), generator=gen), power))
    return out


def _compare_negative_distribution(args, got) -> None:
    counts, power = args
    c = counts.double()
    want = vectors.negative_distribution(counts, power).numpy()
    compare_arrays(got, want, "negative_distribution", what=f"for counts {counts.tolist()[:5]}...", mistakes={
        "not normalised: divide the weights count^0.75 by their sum, so the probabilities sum to 1.":
            (c ** power).numpy(),
        f"raise the counts to the power {power} before normalising: plain frequencies draw common words too often.":
            (c / c.sum()).numpy(),
        "raise the counts to the power first, then normalise: (count/total)^0.75 does not sum to 1.":
            ((c / c.sum()) ** power).numpy(),
    })


check_negative_distribution = register(Check(
    name="negative_distribution", reference=vectors.negative_distribution, cases=_negative_cases,
    output=as_float_array, compare=_compare_negative_distribution,
    passed="negative_distribution gives count^0.75, normalised."))


# --- one training step --------------------------------------------------------------------------------

def _step_cases(seed: int = 0, shapes=((6, 4, 8, 2), (20, 8, 32, 5))) -> list[tuple]:
    """(W_in, W_out, centers, contexts, negatives, lr) for each (V, d, B, K); ids repeat within a batch."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for v, d, b, k in shapes:
        out.append((torch.randn(v, d, generator=gen) * 0.5, torch.randn(v, d, generator=gen) * 0.5,
                    torch.randint(0, v, (b,), generator=gen), torch.randint(0, v, (b,), generator=gen),
                    torch.randint(0, v, (b, k), generator=gen), 0.1))
    return out


@diagnosis
def _step_variant(W_in, W_out, c, o, n, lr, sign=-1, accumulate=True, negatives=True):
    W_in, W_out = W_in.clone(), W_out.clone()
    g_c, g_o, g_n = vectors.sgns_gradients(W_in[c], W_out[o], W_out[n])
    if accumulate:
        W_in.index_add_(0, c, g_c, alpha=sign * lr)
        W_out.index_add_(0, o, g_o, alpha=sign * lr)
        if negatives:
            W_out.index_add_(0, n.reshape(-1), g_n.reshape(-1, g_n.shape[-1]), alpha=sign * lr)
    else:
        W_in[c] += sign * lr * g_c
        W_out[o] += sign * lr * g_o
        W_out[n.reshape(-1)] += sign * lr * g_n.reshape(-1, g_n.shape[-1])
    return [W_in.numpy(), W_out.numpy()]


def _compare_train_step(args, got) -> None:
    got, (W_in_after, W_out_after) = got
    args = tuple(a.double() if a.is_floating_point() else a for a in args[:5]) + (args[5],)
    want = _step_variant(*args)
    if len(got) != 2:
        fail(f"`train_step` should return (W_in, W_out), got {len(got)} values.")
    mistakes = {
        "sign error: the step went UP the gradient. Gradient descent subtracts: W -= lr * gradient.":
            _step_variant(*args, sign=1),
        "a word that occurs several times in the batch must receive the SUM of its updates: `W[ids] -= ...` "
        "keeps only one of them when ids repeat; use `W.index_add_(0, ids, -lr * grads)`.":
            _step_variant(*args, accumulate=False),
        "the negatives' output vectors must be updated too (W_out at the negative ids, with grad_negatives).":
            _step_variant(*args, negatives=False),
    }
    for i, name in enumerate(["W_in", "W_out"]):
        compare_arrays(got[i], want[i], "train_step", what=f"({name} after the step)",
                       mistakes={m: w[i] for m, w in mistakes.items()
                                 if all(np.allclose(got[j], w[j], atol=ATOL, rtol=1e-4) for j in range(2))})
    V, B = args[0].shape[0], args[2].shape[0]
    for name, after, before, new_value in (("W_in", W_in_after, args[0], want[0]), ("W_out", W_out_after, args[1], want[1])):
        if np.allclose(after, new_value, atol=ATOL, rtol=1e-4):
            continue
        if np.array_equal(after, before.numpy()):
            fail(f"`train_step` returned the right matrices but left the caller's {name} unchanged: update {name} and the "
                 "other matrix *in place* (`W.index_add_(...)`, `W -= ...`, not `W = W - ...` or a clone), as the exercise "
                 "asks: `train` calls train_step for its effect on the matrices.")
        fail(f"`train_step` returned the right matrices, but the caller's {name} (V={V}, batch of {B}) holds other values "
             "after the call: the matrices you return must be the ones you were given, updated in place.")


check_train_step = register(Check(
    name="train_step", reference=vectors.train_step, cases=_step_cases,
    output=as_float_arrays, compare=_compare_train_step, inputs_after=(0, 1), passed="train_step updates W_in and W_out like the reference."))


# --- analogies ----------------------------------------------------------------------------------------

def _analogy_cases(seed: int = 0, n_words: int = 40, dim: int = 6, n_queries: int = 6) -> list[tuple]:
    """Random word vectors of very different lengths, and random queries a : b :: c : ?"""
    gen = torch.Generator().manual_seed(seed)
    words = [f"w{i:02d}" for i in range(n_words)]
    E = torch.randn(n_words, dim, generator=gen) * 10 ** (2 * torch.rand(n_words, 1, generator=gen) - 1)
    out = []
    for _ in range(n_queries):
        a, b, c = torch.randperm(n_words, generator=gen)[:3].tolist()
        out.append((E, words, words[a], words[b], words[c], 3))
    return out


@diagnosis
def _analogy_variants(E, words, a, b, c, topn) -> dict[str, list[str]]:
    index = {w: i for i, w in enumerate(words)}
    U = vectors.unit_rows(E)
    raw = E.float()

    def top(scores, exclude=True):
        scores = scores.clone()
        if exclude:
            scores[[index[a], index[b], index[c]]] = -torch.inf
        return [words[i] for i in scores.topk(topn).indices.tolist()]

    return {
        "exclude the three query words from the answers (a, b and c themselves are usually closest to "
        "b − a + c; word2vec and gensim skip them).": top(U @ (U[index[b]] - U[index[a]] + U[index[c]]), False),
        "normalise the vectors first (divide each row by its length): without it, long vectors win "
        "whatever their direction, and cosine similarity is what analogies compare.":
            top(raw @ (raw[index[b]] - raw[index[a]] + raw[index[c]])),
        "the target is b − a + c (a is to b as c is to ?: king − man + woman), not a − b + c.":
            top(U @ (U[index[a]] - U[index[b]] + U[index[c]])),
    }


def _compare_analogy(args, got) -> None:
    E, words, a, b, c, topn = args
    want = vectors.analogy(E, words, a, b, c, topn)
    if got == want:
        return
    for message, wrong in _analogy_variants(E, words, a, b, c, topn).items():
        if got == wrong:
            fail(f"`analogy(E, words, {a!r}, {b!r}, {c!r}, {topn})`: {message}")
    fail(f"`analogy(E, words, {a!r}, {b!r}, {c!r}, {topn})` returned {got}, expected {want} (best first).")


check_analogy = register(Check(
    name="analogy", reference=vectors.analogy, cases=_analogy_cases,
    output=as_word_list, compare=_compare_analogy, passed="analogy finds the same answers as the reference."))


def _evaluate_cases(seed: int = 0, n_questions: int = 30) -> list[tuple]:
    """Word vectors with a planted relation (half the questions answerable) and some unknown words."""
    gen = torch.Generator().manual_seed(seed)
    n, dim = 12, 16
    base = torch.randn(n, dim, generator=gen)
    offset = torch.randn(dim, generator=gen) * 1.5
    E = torch.cat([base, base + offset + 0.3 * torch.randn(n, dim, generator=gen)])  # word i and its partner
    words = [f"x{i}" for i in range(n)] + [f"y{i}" for i in range(n)]
    questions = []
    for _ in range(n_questions):
        i, j = torch.randperm(n, generator=gen)[:2].tolist()
        q = [f"x{i}", f"y{i}", f"x{j}", f"y{j}"]
        if torch.rand(1, generator=gen).item() < 0.2:
            q[int(torch.randint(0, 4, (1,), generator=gen))] = "unknown"
        questions.append(tuple(q))
    return [(E, words, questions)]


def _compare_evaluate(args, got) -> None:
    E, words, questions = args
    want = list(vectors.evaluate_analogies(E, words, questions))
    if got == want:
        return
    correct, answered, skipped = want
    if got[0] == correct and got[1] == len(questions):
        fail(f"`evaluate_analogies` returned {tuple(got)}, expected {tuple(want)}: questions with a word that is "
             f"not in the vocabulary are skipped (counted in `skipped`), not answered: {skipped} of "
             f"{len(questions)} here.")
    if got[1:] == want[1:]:
        fail(f"`evaluate_analogies` counts {got[0]} correct answers, expected {correct} of {answered}: a question "
             "a : b :: c : d is right when d is the top answer of analogy(E, words, a, b, c), query words excluded.")
    fail(f"`evaluate_analogies` returned {tuple(got)}, expected (correct, answered, skipped) = {tuple(want)}.")


check_evaluate_analogies = register(Check(
    name="evaluate_analogies", reference=vectors.evaluate_analogies, cases=_evaluate_cases,
    output=as_counts, compare=_compare_evaluate, passed="evaluate_analogies counts like the reference."))


# --- training on the synthetic corpus -----------------------------------------------------------------

def _train_cases(n_sentences: int = 2000, seed: int = 0) -> list[tuple]:
    """A real training run, then one epoch with learning rate 0 on a small corpus: nothing is learned, so the
    input vectors W_in keep their random start while W_out stays at zero (returning W_out shows)."""
    return [(vectors.synthetic_corpus(n_sentences, seed), 20, 3, 5, 10, 0.05, 256, seed),
            (vectors.synthetic_corpus(200, seed + 1), 8, 2, 3, 1, 0.0, 64, seed)]


def _compare_train(args, got) -> None:
    sentences, lr = args[0], args[5]
    words, E = got
    vocab = {w for s in sentences for w in s}
    if set(words) != vocab or len(words) != len(vocab):
        fail(f"`train` should return every word of the corpus once ({len(vocab)} words), got {len(words)}.")
    if E.shape != (len(words), args[1]):
        fail(f"`train` returned vectors of shape {E.shape}, expected ({len(words)}, {args[1]}) (words, dim).")
    if not np.isfinite(E).all():
        fail("`train` returned NaN or infinite vectors: is the learning rate too large, or a sign wrong?")
    if lr == 0 and np.abs(E).max() < 1e-6:
        fail("`train` with lr=0 (nothing is learned) returned all-zero vectors: those are W_out, which starts at zero. "
             "Return W_in, the input vectors (with lr=0 they keep their small random start, (rand - 0.5) / dim): "
             "they are the word vectors word2vec keeps.")
    if lr == 0:
        return
    if np.abs(E).max() < 1e-6:
        fail("`train` returned all-zero vectors: if W_in and W_out both start at zero, every gradient is zero "
             "and nothing is learned. Start W_in small and random ((rand - 0.5) / dim) and W_out at zero.")
    questions = vectors.synthetic_analogies()
    correct, answered, _ = vectors.evaluate_analogies(torch.from_numpy(E), words, questions)
    if correct < TRAIN_THRESHOLD * answered:
        fail(f"your vectors solve {correct} of the corpus's {answered} analogies (paris − france + germany → "
             f"berlin, king − man + woman → queen, ...); at least {TRAIN_THRESHOLD:.0%} are needed. Check that "
             "negatives come from negative_distribution, the pairs are shuffled every epoch, the learning rate "
             "decays from lr towards 0, and that you return W_in (the input vectors).")


check_train = register(Check(
    name="train", reference=vectors.train, cases=_train_cases,
    output=as_words_and_vectors, compare=_compare_train,
    passed=f"your vectors solve at least {TRAIN_THRESHOLD:.0%} of the synthetic analogies."))
