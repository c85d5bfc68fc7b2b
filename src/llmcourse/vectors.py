"""Word vectors: skip-gram with negative sampling (word2vec), analogies, their evaluation.

Explained in chapter 02_word2vec. The small functions (the loss, its gradient, the negative-sampling
distribution, one training step, `analogy`, `evaluate_analogies`) are what the student writes in exercise
02_word2vec; `train_sgns` puts them together, vectorised, to train on a real corpus like gensim's Word2Vec.

Skip-gram with negative sampling (Mikolov et al., 2013): every word has two vectors, an input vector
(rows of `W_in`, the word vectors we keep) and an output vector (rows of `W_out`). For a centre word `c`
seen with a context word `o` and K "negative" words `n_1..n_K` drawn at random, the loss is

    L = -log σ(u_c · v_o) - Σ_k log σ(-u_c · v_{n_k}),     u = W_in rows, v = W_out rows,

small when the real pair scores high and the random pairs score low.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import random
import time
import warnings
from collections import Counter

import numpy as np
import torch
from tqdm import tqdm

# --- the loss and its gradient ------------------------------------------------------------------------


def sgns_loss(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Skip-gram negative-sampling loss, summed over the batch: a scalar tensor.

    center: (B, d) input vectors u_c; context: (B, d) output vectors v_o; negatives: (B, K, d) output
    vectors of the K negative words of each pair.
    """
    pos = (center * context).sum(-1)  # (B,)    u_c · v_o
    neg = torch.bmm(negatives, center[:, :, None])[..., 0]  # (B, K)  u_c · v_n
    return -(torch.nn.functional.logsigmoid(pos).sum() + torch.nn.functional.logsigmoid(-neg).sum())


def sgns_gradients(center: torch.Tensor, context: torch.Tensor,
                   negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of `sgns_loss` with respect to center (B, d), context (B, d) and negatives (B, K, d).

    With σ' = σ(1 - σ): d/dx[-log σ(x)] = σ(x) - 1 and d/dx[-log σ(-x)] = σ(x), so
    dL/du_c = (σ(u_c·v_o) - 1) v_o + Σ_k σ(u_c·v_k) v_k,  dL/dv_o = (σ(u_c·v_o) - 1) u_c,  dL/dv_k = σ(u_c·v_k) u_c.
    """
    g_pos = torch.sigmoid((center * context).sum(-1)) - 1  # (B,)
    g_neg = torch.sigmoid(torch.bmm(negatives, center[:, :, None])[..., 0])  # (B, K)
    grad_center = g_pos[:, None] * context + torch.bmm(g_neg[:, None, :], negatives)[:, 0]  # (B, d)
    grad_context = g_pos[:, None] * center  # (B, d)
    grad_negatives = g_neg[:, :, None] * center[:, None, :]  # (B, K, d)
    return grad_center, grad_context, grad_negatives


def negative_distribution(counts: torch.Tensor, power: float = 0.75) -> torch.Tensor:
    """Probabilities of drawing each word as a negative: count^0.75, normalised to sum to 1. (V,) -> (V,).

    The power 0.75 (Mikolov et al., 2013) draws rare words more often than their frequency would.
    """
    weights = counts.double() ** power
    return weights / weights.sum()


def negative_table(probs: torch.Tensor, size: int = 10_000_000) -> torch.Tensor:
    """word2vec.c's unigram table: `size` word ids, word w filling a share probs[w] of it, so that drawing
    negatives is indexing the table at random positions (faster than sampling from probs each time)."""
    ends = (probs.cumsum(0) * size).round().long()  # (V,) where each word's stretch ends
    return torch.repeat_interleave(torch.arange(len(probs)), torch.diff(ends, prepend=torch.zeros(1, dtype=torch.long)))


def train_step(W_in: torch.Tensor, W_out: torch.Tensor, centers: torch.Tensor, contexts: torch.Tensor,
               negatives: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch of pairs, in place; returns (W_in, W_out).

    W_in, W_out: (V, d); centers, contexts: (B,) word ids; negatives: (B, K) word ids. A word that occurs
    several times in the batch receives the sum of its gradients (`index_add_`), as if the pairs were
    processed one after another with a tiny learning rate.
    """
    g_c, g_o, g_n = sgns_gradients(W_in[centers], W_out[contexts], W_out[negatives])
    W_in.index_add_(0, centers, g_c, alpha=-lr)
    W_out.index_add_(0, contexts, g_o, alpha=-lr)
    W_out.index_add_(0, negatives.reshape(-1), g_n.reshape(-1, g_n.shape[-1]), alpha=-lr)
    return W_in, W_out


# --- vocabulary, subsampling, pairs --------------------------------------------------------------------


def build_vocab(sentences: list[list[str]], min_count: int = 1) -> tuple[list[str], torch.Tensor]:
    """Words seen at least `min_count` times, most frequent first (ties alphabetical), and their counts (V,)."""
    counts = Counter(itertools.chain.from_iterable(sentences))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return words, torch.tensor([counts[w] for w in words])


def keep_probabilities(counts: torch.Tensor, sample: float = 1e-3) -> torch.Tensor:
    """word2vec's subsampling of frequent words: the chance of keeping each occurrence of each word (V,).

    With f = count / total, keep = (sqrt(f / sample) + 1) · sample / f, capped at 1 (the formula of
    word2vec.c and gensim): "the" is mostly dropped, rare words always kept.
    """
    if sample <= 0:
        return torch.ones(len(counts), dtype=torch.float64)
    f = counts.double() / counts.sum()
    return (((f / sample).sqrt() + 1) * sample / f).clamp(max=1)


def skipgram_pairs(ids: torch.Tensor, sentence_of: torch.Tensor, window: int,
                   gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (centre, context) pairs of a token stream, word2vec's way: each centre word draws an effective
    window r in 1..window and pairs with the words at distance <= r inside its own sentence.

    ids, sentence_of: (N,) word id and sentence number of each token. Returns centers, contexts: (P,).
    """
    reach = torch.randint(1, window + 1, ids.shape, generator=gen)  # (N,) effective window per centre
    centers, contexts = [], []
    for offset in range(1, window + 1):
        same = sentence_of[offset:] == sentence_of[:-offset]  # (N - offset,) both tokens in one sentence
        right = same & (reach[:-offset] >= offset)  # centre i, context i + offset
        left = same & (reach[offset:] >= offset)  # centre i + offset, context i
        centers += [ids[:-offset][right], ids[offset:][left]]
        contexts += [ids[offset:][right], ids[:-offset][left]]
    return torch.cat(centers), torch.cat(contexts)


def train(sentences: list[list[str]], dim: int = 20, window: int = 3, negative: int = 5, epochs: int = 10,
          lr: float = 0.05, batch_size: int = 256, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """The plain training loop of exercise 02_word2vec (no subsampling): returns (words, W_in (V, d)).

    Every epoch: all skip-gram pairs in a random order, `batch_size` at a time, `negative` negatives per
    pair drawn from `negative_distribution`, learning rate decaying linearly from `lr` towards 0.
    """
    gen = torch.Generator().manual_seed(seed)
    words, counts = build_vocab(sentences)
    index = {w: i for i, w in enumerate(words)}
    ids = torch.tensor([index[w] for s in sentences for w in s])  # (N,)
    sentence_of = torch.tensor([k for k, s in enumerate(sentences) for _ in s])  # (N,)
    probs = negative_distribution(counts)
    W_in = (torch.rand(len(words), dim, generator=gen) - 0.5) / dim  # (V, d)
    W_out = torch.zeros(len(words), dim)  # (V, d)
    for epoch in range(epochs):
        centers, contexts = skipgram_pairs(ids, sentence_of, window, gen)
        order = torch.randperm(len(centers), generator=gen)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            negatives = torch.multinomial(probs, len(batch) * negative, replacement=True, generator=gen)
            done = (epoch + start / len(order)) / epochs  # share of training done
            train_step(W_in, W_out, centers[batch], contexts[batch], negatives.view(len(batch), negative),
                       lr * (1 - done))
    return words, W_in


# --- training on a corpus ------------------------------------------------------------------------------


def train_sgns(sentences: list[list[str]], dim: int = 100, window: int = 5, negative: int = 5, epochs: int = 5,
               min_count: int = 5, sample: float = 1e-3, lr: float = 0.025, min_lr: float = 1e-4,
               batch_size: int = 8192, threads: int = 2, seed: int = 0, progress: bool = True):
    """Our word2vec (skip-gram, negative sampling) on `sentences`; returns gensim `KeyedVectors` of W_in.

    Same recipe and defaults as gensim's `Word2Vec(sg=1)`: vocabulary of words seen `min_count` times,
    frequent words subsampled afresh each epoch, effective windows drawn per centre word, K = `negative`
    negatives per pair from count^0.75, learning rate decaying linearly from `lr` to `min_lr`. Pairs are
    shuffled and updated `batch_size` at a time (gensim updates one pair at a time, on `threads` threads).
    """
    from gensim.models import KeyedVectors

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    words, counts = build_vocab(sentences, min_count)
    index = {w: i for i, w in enumerate(words)}
    tokens = [(index[w], s) for s, sent in enumerate(sentences) for w in sent if w in index]
    ids, sentence_of = torch.tensor(tokens).T  # (N,), (N,)
    keep, table = keep_probabilities(counts, sample), negative_table(negative_distribution(counts))
    V = len(words)
    W_in = (torch.rand(V, dim, generator=gen) - 0.5) / dim  # (V, d) small random, as word2vec.c
    W_out = torch.zeros(V, dim)  # (V, d)
    # Pairs per epoch vary with the random subsampling; the learning rate decays with the pairs done.
    expected_pairs = epochs * keep[ids].sum().item() * (window + 1)
    done, losses = 0, []
    bar = tqdm(total=epochs * len(ids), desc="our SGNS", unit="word", unit_scale=True, disable=not progress)
    for _ in range(epochs):
        kept = torch.rand(len(ids), generator=gen) < keep[ids]  # (N,) subsampling
        centers, contexts = skipgram_pairs(ids[kept], sentence_of[kept], window, gen)
        order = torch.randperm(len(centers), generator=gen)
        centers, contexts = centers[order], contexts[order]
        for start in range(0, len(centers), batch_size):
            c, o = centers[start:start + batch_size], contexts[start:start + batch_size]
            n = table[torch.randint(0, len(table), (len(c), negative), generator=gen)]  # (b, K) negatives
            step_lr = max(min_lr, lr * (1 - done / expected_pairs))
            if start % (100 * batch_size) == 0:
                losses.append(sgns_loss(W_in[c], W_out[o], W_out[n]).item() / len(c))
            train_step(W_in, W_out, c, o, n, step_lr)
            done += len(c)
        bar.update(len(ids))
    bar.close()
    kv = KeyedVectors(vector_size=dim, count=0)
    kv.add_vectors(words, W_in.numpy())
    kv.losses = losses  # mean loss per pair, sampled during training
    return kv


# --- the fast path: the same training, fused and compiled ----------------------------------------------
# `train_sgns` above is the readable reference; `train_sgns_fast` trains the same model with the same recipe
# several times faster (benchmarks/word2vec.py). Where `train_sgns`'s time goes, profiled on the chapter's
# corpus: in each step, gathering rows (28%), the products (mul, bmm: 37%), `index_add_` (12%), sums and
# sigmoid (17%) each write a (batch, 1+K, d) tensor that the next reads back, so the step is bound by memory
# traffic; on a busy 2-core machine torch's OpenMP threads wait for each other on every small op (3 times
# the processor time of one thread); making the pairs takes under 5%. The fast path fuses the step into a few
# compiled loops (`torch.compile`) on one thread, draws negatives from a cache-sized alias table instead of the
# 10M-entry unigram table, and makes the next epoch's pairs on a second thread meanwhile.


def sgns_fused_step(W_in: torch.Tensor, W_out: torch.Tensor, centers: torch.Tensor, contexts: torch.Tensor,
                    negatives: torch.Tensor, lr: torch.Tensor) -> None:
    """`train_step` with the context and the K negatives as one (B, 1+K) block of output words, in place.

    centers, contexts: (B,) word ids; negatives: (B, K); lr: a 0-d tensor (a float would make torch.compile
    compile again for every new value). The same sums of gradients as `train_step`, from the same old rows.
    """
    outputs = torch.cat([contexts[:, None], negatives], 1)  # (B, 1+K)
    u, v = W_in[centers], W_out[outputs]  # (B, d), (B, 1+K, d)
    label = (torch.arange(outputs.shape[1]) == 0).to(u.dtype)  # (1+K,) 1 for the context, 0 for negatives
    g = (torch.sigmoid((v * u[:, None]).sum(-1)) - label) * lr  # (B, 1+K) lr times dL/d(u·v)
    W_in.index_put_((centers,), -(g[..., None] * v).sum(1), accumulate=True)
    W_out.index_put_((outputs.reshape(-1),), -(g[..., None] * u[:, None]).reshape(-1, u.shape[1]),
                     accumulate=True)


_COMPILED: dict = {}


def _step(compile: bool):
    """`sgns_fused_step`, compiled once per process if `compile` (the vocabulary size left dynamic)."""
    if compile and "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(sgns_fused_step, dynamic=False)
    return _COMPILED["step"] if compile else sgns_fused_step


def token_stream(sentences: list[list[str]], index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Word ids and sentence numbers (N,), (N,) of the words of `sentences` that are in `index`, in order."""
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    words = itertools.chain.from_iterable(sentences)
    ids = np.fromiter(map(index.get, words, itertools.repeat(-1)), dtype=np.int64, count=int(lengths.sum()))
    sentence_of = np.repeat(np.arange(len(sentences)), lengths)
    known = ids >= 0
    return torch.from_numpy(ids[known]), torch.from_numpy(sentence_of[known])


def alias_table(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker's alias method: (V,) probabilities -> (V,) thresholds and (V,) aliases such that drawing i
    uniformly, then keeping i if a uniform number is below threshold[i] and taking alias[i] otherwise, draws
    i with probability probs[i]. Exact like `negative_table`, but two small arrays that stay in the cache."""
    V = len(probs)
    scaled = (probs * V).tolist()  # each column holds 1: its own word's share, topped up by one alias
    threshold, alias = [1.0] * V, list(range(V))
    small = [i for i, p in enumerate(scaled) if p < 1]
    large = [i for i, p in enumerate(scaled) if p >= 1]
    while small and large:
        i, j = small.pop(), large[-1]
        threshold[i], alias[i] = scaled[i], j  # column i: word i for scaled[i], word j for the rest
        scaled[j] -= 1 - scaled[i]
        if scaled[j] < 1:
            small.append(large.pop())
    return torch.tensor(threshold, dtype=torch.float32), torch.tensor(alias, dtype=torch.int32)


def draw_negatives(threshold: torch.Tensor, alias: torch.Tensor, shape: tuple[int, ...],
                   gen: torch.Generator) -> torch.Tensor:
    """Word ids of `shape` drawn from the distribution of `alias_table`, int32."""
    column = torch.randint(0, len(alias), shape, generator=gen, dtype=torch.int32)
    return torch.where(torch.rand(shape, generator=gen) < threshold[column], column, alias[column])


def shrunk_window_pairs(ids: torch.Tensor, sentence_of: torch.Tensor, window: int,
                        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`skipgram_pairs`, with one `nonzero` per offset and side: (P,), (P,) int32, grouped by offset."""
    reach = torch.randint(1, window + 1, ids.shape, generator=gen, dtype=torch.int8)  # (N,)
    ids = ids.int()
    centers, contexts = [], []
    for offset in range(1, window + 1):
        same = sentence_of[offset:] == sentence_of[:-offset]  # (N - offset,)
        right = (same & (reach[:-offset] >= offset)).nonzero()[:, 0]  # centre i, context i + offset
        left = (same & (reach[offset:] >= offset)).nonzero()[:, 0] + offset  # centre i + offset, context i
        centers += [ids[right], ids[left]]
        contexts += [ids[right + offset], ids[left - offset]]
    return torch.cat(centers), torch.cat(contexts)


def epoch_pairs(ids: torch.Tensor, sentence_of: torch.Tensor, keep: torch.Tensor, window: int,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's shuffled (centre, context) pairs, as `train_sgns` makes them: subsample, then pairs in
    shrunk windows, then a random order. (P,), (P,) int32."""
    kept = torch.rand(len(ids), generator=gen) < keep[ids]  # (N,) subsampling
    centers, contexts = shrunk_window_pairs(ids[kept], sentence_of[kept], window, gen)
    order = torch.randperm(len(centers), generator=gen)
    return centers[order], contexts[order]


def train_sgns_fast(sentences: list[list[str]], dim: int = 100, window: int = 5, negative: int = 5,
                    epochs: int = 5, min_count: int = 5, sample: float = 1e-3, lr: float = 0.025,
                    min_lr: float = 1e-4, batch_size: int = 8192, threads: int = 2, seed: int = 0,
                    progress: bool = True, compile: bool = True):
    """`train_sgns`, faster: the same vocabulary, subsampling, windows, negatives, batches and learning rate,
    returned the same way (KeyedVectors with `.losses`). Explained in chapter 02_word2vec.

    The step is `sgns_fused_step`, compiled by torch.compile (`compile=False`, or a machine without a C++
    compiler, runs it as is: the same maths, slower). It runs on one thread; with threads >= 2 a second
    thread makes the next epoch's pairs meanwhile. The random draws are not `train_sgns`'s, so the vectors
    are other numbers from the same distribution (tests/test_vectors.py compares the two).
    """
    from gensim.models import KeyedVectors

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on small ops, torch's own threads wait more than they work
    torch.manual_seed(seed)
    gen, pair_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    words, counts = build_vocab(sentences, min_count)
    ids, sentence_of = token_stream(sentences, {w: i for i, w in enumerate(words)})
    keep, (threshold, alias) = keep_probabilities(counts, sample), alias_table(negative_distribution(counts))
    W_in = (torch.rand(len(words), dim, generator=gen) - 0.5) / dim  # (V, d) small random, as word2vec.c
    W_out = torch.zeros(len(words), dim)  # (V, d)
    if compile:  # one compiled step for every vocabulary size
        torch._dynamo.mark_dynamic(W_in, 0)
        torch._dynamo.mark_dynamic(W_out, 0)
    expected_pairs = epochs * keep[ids].sum().item() * (window + 1)
    step, step_lr, done, losses = _step(compile), torch.tensor(lr), 0, []
    make = lambda: epoch_pairs(ids, sentence_of, keep, window, pair_gen)  # noqa: E731
    bar = tqdm(total=epochs * len(ids), desc="our SGNS, fast", unit="word", unit_scale=True, disable=not progress)
    for centers, contexts in _epochs_of_pairs(make, epochs, background=threads >= 2):
        for start in range(0, len(centers), batch_size):
            c, o = centers[start:start + batch_size], contexts[start:start + batch_size]
            n = draw_negatives(threshold, alias, (len(c), negative), gen)  # (b, K)
            step_lr.fill_(max(min_lr, lr * (1 - done / expected_pairs)))
            if start % (100 * batch_size) == 0:
                losses.append(sgns_loss(W_in[c], W_out[o], W_out[n]).item() / len(c))
            if len(c) < batch_size:  # the epoch's last, smaller batch: not worth compiling again
                sgns_fused_step(W_in, W_out, c, o, n, step_lr)
            else:
                step = _run_step(step, W_in, W_out, c, o, n, step_lr)
            done += len(c)
        bar.update(len(ids))
    bar.close()
    torch.set_num_threads(old_threads)
    kv = KeyedVectors(vector_size=dim, count=0)
    kv.add_vectors(words, W_in.numpy())
    kv.losses = losses  # mean loss per pair, sampled during training
    return kv


def _run_step(step, *args):
    """step(*args), falling back to the uncompiled step (with a warning) if torch.compile cannot compile it.
    Returns the step to use next."""
    try:
        step(*args)
    except Exception as error:  # torch.compile needs a C++ compiler; the same maths runs without one
        if step is sgns_fused_step:
            raise
        warnings.warn(f"train_sgns_fast: torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                      "training with the uncompiled step, several times slower")
        step = sgns_fused_step
        step(*args)
    return step


def _epochs_of_pairs(make, epochs: int, background: bool):
    """make() once per epoch, yielded in turn; with `background`, each epoch's pairs are made on a second
    thread while the previous epoch trains (torch releases the GIL inside its ops). One generator is used in
    the same order either way, so seeded runs repeat."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(make) if background else None
        for left in range(epochs - 1, -1, -1):  # epochs still to make after this one
            pairs = ahead.result() if background else make()
            if background and left:
                ahead = pool.submit(make)
            yield pairs


def corpus_sentences(max_words: int | None = None) -> list[list[str]]:
    """The chapter's training corpus: Brown (about 1.0M words) then Shakespeare's plays (0.9M)."""
    from llmcourse import data

    sentences, total = [], 0
    for s in data.brown_sentences() + data.shakespeare_sentences():
        if max_words is not None and total >= max_words:
            break
        sentences.append(s)
        total += len(s)
    return sentences


def train_both(dim: int = 50, window: int = 5, negative: int = 5, epochs: int = 5, min_count: int = 5,
               sample: float = 1e-3, batch_size: int = 8192, threads: int = 2, seed: int = 0,
               max_words: int | None = None, fast: bool = False) -> dict:
    """Ours and gensim's skip-gram on the same corpus with the same hyper-parameters, timed.

    Ours is `train_sgns`, or `train_sgns_fast` if `fast`. Returns {"ours": KeyedVectors, "gensim":
    KeyedVectors, "seconds": {...}, "words": corpus words, ...}. On 2 idle cores, about 20 s for gensim's,
    a minute for `train_sgns` and half a minute for `train_sgns_fast`: call it through `llmcourse.data.cached`.
    """
    from gensim.models import Word2Vec

    sentences = corpus_sentences(max_words)
    n_words = sum(map(len, sentences))
    start = time.perf_counter()
    ours = (train_sgns_fast if fast else train_sgns)(
        sentences, dim=dim, window=window, negative=negative, epochs=epochs, min_count=min_count, sample=sample,
        batch_size=batch_size, threads=threads, seed=seed)
    seconds = {"ours": time.perf_counter() - start}
    start = time.perf_counter()
    theirs = Word2Vec(sentences, vector_size=dim, window=window, negative=negative, epochs=epochs, sg=1, hs=0,
                      min_count=min_count, sample=sample, workers=threads, seed=seed)
    seconds["gensim"] = time.perf_counter() - start
    return {"ours": ours, "gensim": theirs.wv, "seconds": seconds, "words": n_words, "epochs": epochs,
            "threads": threads, "fast": fast}


def compact_run(**config) -> dict:
    """`train_both(**config)` in the form that ships with the package (llmcourse/toys/cache, 4 MB instead of
    9): each model as its words and its vectors in 16-bit floats, ours with its losses; the timings as run."""
    run = train_both(**config)
    for name in ("ours", "gensim"):
        kv = run[name]
        run[name] = {"words": list(kv.index_to_key), "vectors": kv.vectors.astype(np.float16),
                     "losses": getattr(kv, "losses", None)}
    return run


def word2vec_run(**config) -> dict:
    """`train_both(**config)`, read from the cache or from the run that ships with the package
    (`compact_run`, rerun whenever this module changes): {"ours", "gensim"} as KeyedVectors (float32, from the
    stored 16-bit values), "seconds", "words", ... as `train_both` returns them."""
    from gensim.models import KeyedVectors

    from llmcourse import data

    run = dict(data.cached(compact_run, **config))
    for name in ("ours", "gensim"):
        saved = run[name]
        kv = KeyedVectors(vector_size=saved["vectors"].shape[1], count=0)
        kv.add_vectors(saved["words"], saved["vectors"].astype(np.float32))
        if saved["losses"] is not None:
            kv.losses = saved["losses"]
        run[name] = kv
    return run


# --- analogies -----------------------------------------------------------------------------------------


def unit_rows(E: torch.Tensor) -> torch.Tensor:
    """Each row divided by its length: (V, d) -> (V, d) with |row| = 1 (cosine = dot product)."""
    E = torch.as_tensor(E, dtype=torch.float32)
    return E / E.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def analogy_scores(E: torch.Tensor, words: list[str], a: str, b: str, c: str, method: str = "add") -> torch.Tensor:
    """Score of every word as the answer to "a is to b as c is to ?" (V,); the three query words get -inf.

    "add" (3CosAdd, Mikolov et al., 2013): cos(x, b - a + c) on unit vectors.
    "mul" (3CosMul, Levy & Goldberg, 2014): cos'(x, b) cos'(x, c) / (cos'(x, a) + 0.001), cos' = (1 + cos) / 2.
    """
    U = unit_rows(E)  # (V, d)
    index = {w: i for i, w in enumerate(words)}
    ua, ub, uc = U[index[a]], U[index[b]], U[index[c]]
    if method == "add":
        scores = U @ unit_rows((ub - ua + uc)[None])[0]  # (V,)
    else:
        cos = lambda u: (1 + U @ u) / 2  # noqa: E731
        scores = cos(ub) * cos(uc) / (cos(ua) + 1e-3)
    scores[[index[a], index[b], index[c]]] = -torch.inf
    return scores


def analogy(E: torch.Tensor, words: list[str], a: str, b: str, c: str, topn: int = 5,
            method: str = "add") -> list[str]:
    """The `topn` best answers to "a is to b as c is to ?", best first: analogy(E, words, "man", "king",
    "woman") is ["queen", ...] for good vectors. E: (V, d), one row per word of `words`."""
    scores = analogy_scores(E, words, a, b, c, method)
    return [words[i] for i in scores.topk(topn).indices.tolist()]


def rank_of(E: torch.Tensor, words: list[str], a: str, b: str, c: str, answer: str, method: str = "add") -> int:
    """Where `answer` comes in the ranking of "a : b :: c : ?" (1 = top), query words excluded."""
    scores = analogy_scores(E, words, a, b, c, method)
    return int((scores > scores[words.index(answer)]).sum()) + 1


def nearest(E: torch.Tensor, words: list[str], word: str, topn: int = 10) -> list[tuple[str, float]]:
    """The `topn` words with the highest cosine similarity to `word`, itself excluded."""
    U = unit_rows(E)
    i = words.index(word)
    cos = U @ U[i]  # (V,)
    cos[i] = -torch.inf
    top = cos.topk(topn)
    return [(words[j], round(s, 3)) for j, s in zip(top.indices.tolist(), top.values.tolist())]


# --- evaluation on the Google analogy set ---------------------------------------------------------------

SEMANTIC = ("capital-common-countries", "capital-world", "currency", "city-in-state", "family")


def read_analogies(path) -> dict[str, list[tuple[str, str, str, str]]]:
    """questions-words.txt as {section: [(a, b, c, d), ...]}, lowercased ("athens greece baghdad iraq")."""
    sections: dict[str, list] = {}
    for line in open(path, encoding="utf-8"):
        if line.startswith(":"):
            current = sections.setdefault(line[1:].strip(), [])
        elif line.strip():
            current.append(tuple(line.lower().split()))
    return sections


def evaluate_analogies(E: torch.Tensor, words: list[str], questions: list[tuple[str, str, str, str]],
                       restrict_vocab: int = 300_000, batch: int = 512) -> tuple[int, int, int]:
    """(correct, answered, skipped) on analogy questions a : b :: c : d, the way gensim's
    `evaluate_word_analogies` counts: only the `restrict_vocab` most frequent words take part (rows of E
    are most frequent first); a question with a word outside them is skipped; the answer is the top
    3CosAdd word other than a, b and c."""
    words = list(words[:restrict_vocab])
    U = unit_rows(E[:restrict_vocab])  # (V, d)
    index = {w: i for i, w in enumerate(words)}
    asked = [q for q in questions if all(w in index for w in q)]
    ids = torch.tensor([[index[w] for w in q] for q in asked]).view(-1, 4)  # (Q, 4)
    correct = 0
    for start in range(0, len(ids), batch):
        a, b, c, d = ids[start:start + batch].T  # (q,) each
        scores = unit_rows(U[b] - U[a] + U[c]) @ U.T  # (q, V)
        for col in (a, b, c):
            scores[torch.arange(len(col)), col] = -torch.inf
        correct += int((scores.argmax(1) == d).sum())
    return correct, len(asked), len(questions) - len(asked)


def google_analogy_accuracy(kv, restrict_vocab: int = 30_000) -> dict[str, float]:
    """Semantic, syntactic and total accuracy (%) of KeyedVectors on the Google analogy set, with the
    share of questions skipped because a word is not among the `restrict_vocab` most frequent (30,000, as in
    word2vec's own compute-accuracy tool)."""
    from llmcourse import data

    sections = read_analogies(data.google_analogies_path())
    E, words = torch.from_numpy(kv.vectors), kv.index_to_key
    totals = {"semantic": [0, 0, 0], "syntactic": [0, 0, 0]}
    for name, questions in sections.items():
        part = totals["semantic" if name in SEMANTIC else "syntactic"]
        for j, n in enumerate(evaluate_analogies(E, words, questions, restrict_vocab)):
            part[j] += n
    out = {f"{k} %": 100 * v[0] / max(v[1], 1) for k, v in totals.items()}
    correct, answered, skipped = (sum(v[j] for v in totals.values()) for j in range(3))
    out["total %"] = 100 * correct / max(answered, 1)
    out["skipped %"] = 100 * skipped / (answered + skipped)
    return out


# --- the synthetic corpus of the exercise ---------------------------------------------------------------

# Each pair shares a private topic word (its language, its role), each side its type words (city/country,
# he/she): so vector(word) ~ type + topic, and paris - france + germany ~ berlin holds by construction.
COUNTRIES = {"france": "paris", "germany": "berlin", "italy": "rome", "spain": "madrid", "japan": "tokyo",
             "china": "beijing", "egypt": "cairo", "russia": "moscow", "greece": "athens", "poland": "warsaw"}
LANGUAGES = {"france": "french", "germany": "german", "italy": "italian", "spain": "spanish", "japan": "japanese",
             "china": "chinese", "egypt": "arabic", "russia": "russian", "greece": "greek", "poland": "polish"}
GENDER = {"man": "woman", "king": "queen", "boy": "girl", "father": "mother", "son": "daughter",
          "brother": "sister", "uncle": "aunt", "prince": "princess", "husband": "wife", "actor": "actress"}
ROLES = {"man": "adult", "king": "throne", "boy": "school", "father": "children", "son": "parents",
         "brother": "siblings", "uncle": "nephew", "prince": "castle", "husband": "wedding", "actor": "film"}
_COUNTRY = ["the country {country} speaks {lang}", "{lang} is spoken in the country {country}",
            "the nation of {country} is a {lang} land"]
_CITY = ["the city {city} speaks {lang}", "{lang} is spoken in the city {city}", "the town of {city} is a {lang} city"]
_MALE = ["he is the {m} of the {role}", "the {role} has a {m} and he smiles", "his {role} , his {m} , him"]
_FEMALE = ["she is the {f} of the {role}", "the {role} has a {f} and she smiles", "her {role} , her {f} , her"]


def synthetic_corpus(n_sentences: int = 3000, seed: int = 0) -> list[list[str]]:
    """Sentences from templates in which each country goes with its capital and each male word with its
    female counterpart, so analogy answers are known by construction (exercise 02_word2vec)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        if rng.random() < 0.5:
            country = rng.choice(sorted(COUNTRIES))
            template = rng.choice(_COUNTRY + _CITY)
            text = template.format(country=country, city=COUNTRIES[country], lang=LANGUAGES[country])
        else:
            m = rng.choice(sorted(GENDER))
            text = rng.choice(_MALE + _FEMALE).format(m=m, f=GENDER[m], role=ROLES[m])
        sentences.append(text.split())
    return sentences


def synthetic_analogies() -> list[tuple[str, str, str, str]]:
    """Every analogy the synthetic corpus implies: (france, paris, germany, berlin), (man, woman, king, queen)..."""
    out = []
    for relation in (COUNTRIES, GENDER):
        pairs = sorted(relation.items())
        out += [(a, b, c, d) for a, b in pairs for c, d in pairs if a != c]
    return out
