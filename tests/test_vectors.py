"""The reference code of chapter 02_word2vec: SGNS loss and gradient, sampling, training, analogies."""
from __future__ import annotations

import pytest
import torch

from llmcourse import data, vectors


def test_gradients_equal_autograd():
    gen = torch.Generator().manual_seed(0)
    u, v, n = (torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_() for s in ((5, 7), (5, 7), (5, 3, 7)))
    vectors.sgns_loss(u, v, n).backward()
    for got, want in zip(vectors.sgns_gradients(u.detach(), v.detach(), n.detach()), (u.grad, v.grad, n.grad)):
        torch.testing.assert_close(got, want)


def test_loss_is_small_for_aligned_pairs():
    u = torch.tensor([[3.0, 0.0]])
    assert vectors.sgns_loss(u, u, -u[:, None, :]).item() < 0.001
    assert vectors.sgns_loss(u, -u, u[:, None, :]).item() > 17


def test_negative_distribution_and_table():
    p = vectors.negative_distribution(torch.tensor([16, 1]))
    torch.testing.assert_close(p, torch.tensor([8 / 9, 1 / 9], dtype=torch.float64))
    table = vectors.negative_table(p, size=900)
    assert len(table) == 900 and (table == 0).sum() == 800


def test_keep_probabilities_like_word2vec():
    keep = vectors.keep_probabilities(torch.tensor([1_000_000, 10, 1]), sample=1e-3)
    assert keep[0] < 0.1 and keep[1] == 1 and keep[2] == 1
    assert (vectors.keep_probabilities(torch.tensor([5, 5]), sample=0) == 1).all()


def test_train_step_sums_repeated_words():
    W_in, W_out = torch.zeros(3, 2), torch.ones(3, 2)
    W_in[0] = torch.tensor([1.0, 0.0])
    centers, contexts, negatives = torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([[2], [2]])
    g_c, _, _ = vectors.sgns_gradients(W_in[centers], W_out[contexts], W_out[negatives])
    expected = W_in[0] - 0.1 * g_c.sum(0)
    vectors.train_step(W_in, W_out, centers, contexts, negatives, 0.1)
    torch.testing.assert_close(W_in[0], expected)


def test_skipgram_pairs_stay_in_sentences():
    ids, sent = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 0, 0, 1, 1])
    c, o = vectors.skipgram_pairs(ids, sent, window=1, gen=torch.Generator().manual_seed(0))
    assert sorted(zip(c.tolist(), o.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)]
    c, o = vectors.skipgram_pairs(ids, sent, window=5, gen=torch.Generator().manual_seed(0))
    assert all(sent[a] == sent[b] for a, b in zip(c.tolist(), o.tolist()))


def test_analogy_excludes_queries_and_uses_directions():
    words = ["man", "woman", "king", "queen", "huge"]
    E = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1], [0, 100, 30]])
    assert vectors.analogy(E, words, "man", "king", "woman", topn=1) == ["queen"]
    assert vectors.rank_of(E, words, "man", "king", "woman", "queen") == 1
    assert vectors.analogy(E, words, "man", "king", "woman", topn=1, method="mul") == ["queen"]
    assert vectors.nearest(E, words, "queen", topn=1)[0][0] == "huge"


def test_evaluation_counts_like_gensim():
    """Same (correct, answered) as gensim's evaluate_word_analogies on the same vectors and questions."""
    kv = data.glove_50d()
    sections = vectors.read_analogies(data.google_analogies_path())
    questions = sections["capital-common-countries"][:60] + sections["gram3-comparative"][:60] + [("zzzq", "a", "b", "c")]
    path = data.CACHE_DIR / "test-questions.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(": part\n" + "\n".join(" ".join(q) for q in questions) + "\n")
    _, gensim_sections = kv.evaluate_word_analogies(str(path), restrict_vocab=50_000)
    ours = vectors.evaluate_analogies(torch.from_numpy(kv.vectors), kv.index_to_key, questions, restrict_vocab=50_000)
    assert ours[0] == len(gensim_sections[0]["correct"])
    assert ours[1] == len(gensim_sections[0]["correct"]) + len(gensim_sections[0]["incorrect"])
    assert ours[2] >= 1


def test_glove_answers_the_classic_analogy():
    kv = data.glove_50d()
    assert len(kv) == 400_000 and kv.vector_size == 50
    assert vectors.analogy(torch.from_numpy(kv.vectors), kv.index_to_key, "man", "king", "woman", 1) == ["queen"]


def test_corpora_load():
    brown, plays = data.brown_sentences(), data.shakespeare_sentences()
    assert 950_000 < sum(map(len, brown)) < 1_100_000 and brown[0][:3] == ["the", "fulton", "county"]
    assert 850_000 < sum(map(len, plays)) < 950_000
    assert data.words("Who's there? 1601, O'er") == ["who's", "there", "o'er"]


@pytest.mark.parametrize("seed", [0, 7])
def test_reference_training_solves_synthetic_analogies(seed):
    words, E = vectors.train(vectors.synthetic_corpus(2000, seed), seed=seed)
    correct, answered, skipped = vectors.evaluate_analogies(E, words, vectors.synthetic_analogies())
    assert skipped == 0 and correct >= 0.9 * answered


def test_train_sgns_returns_keyed_vectors():
    kv = vectors.train_sgns(vectors.synthetic_corpus(300), dim=8, epochs=1, min_count=1, progress=False)
    assert kv.vector_size == 8 and kv.index_to_key[0] == "the" and len(kv.losses) >= 1



# --- the fast path: the same training as train_sgns, in distribution ---------------------------------------


def _zipf_sentences(n_words: int = 60_000, vocab: int = 400, seed: int = 0) -> list[list[str]]:
    """Sentences of 3 to 30 words drawn with Zipf frequencies, words "w0" (the commonest) to "w399"."""
    gen = torch.Generator().manual_seed(seed)
    p = 1 / torch.arange(1, vocab + 1).double()
    ids = torch.multinomial(p / p.sum(), n_words, replacement=True, generator=gen).tolist()
    sentences, start = [], 0
    while start < n_words:
        n = int(torch.randint(3, 31, (), generator=gen))
        sentences.append([f"w{i}" for i in ids[start:start + n]])
        start += n
    return sentences


def _offset_shares(centers, contexts, window):
    """Share of the pairs at each distance 1..window in the text (ids are positions)."""
    h = torch.bincount((contexts.long() - centers.long()).abs(), minlength=window + 1)[1:].double()
    return h / h.sum()


def test_fast_pairs_shrink_windows_like_train_sgns():
    """Each centre draws a window r in 1..5, so distance k is used in proportion to 5 - k + 1 (5:4:3:2:1)."""
    N, window = 100_000, 5
    gen = torch.Generator().manual_seed(0)
    ids = torch.arange(N)  # each token its own word: context - centre is the pair's offset in the text
    sentence_of = (torch.rand(N, generator=gen) < 0.005).cumsum(0)  # sentences of about 200 words
    c, o = vectors.epoch_pairs(ids, sentence_of, torch.ones(N), window, gen)
    c_ref, o_ref = vectors.skipgram_pairs(ids, sentence_of, window, gen)
    want = torch.arange(window, 0, -1).double() / sum(range(1, window + 1))  # (5, 4, 3, 2, 1) / 15
    torch.testing.assert_close(_offset_shares(c_ref, o_ref, window), want, atol=0.01, rtol=0)
    torch.testing.assert_close(_offset_shares(c, o, window), want, atol=0.01, rtol=0)
    assert abs(len(c) / len(c_ref) - 1) < 0.01
    assert (sentence_of[c.long()] == sentence_of[o.long()]).all()


def test_fast_pairs_subsample_like_train_sgns():
    """In one long sentence every kept token is in some pair: the share of tokens used is the keep rate."""
    N = 100_000
    gen = torch.Generator().manual_seed(0)
    keep = torch.rand(N, generator=gen).clamp(min=0.1)  # (N,) each position's chance to be kept
    c, _ = vectors.epoch_pairs(torch.arange(N), torch.zeros(N, dtype=torch.long), keep, 5, gen)
    used = torch.bincount(c.long(), minlength=N) > 0
    for part in (keep < 0.5, keep >= 0.5):  # rare and frequent words alike
        assert abs(used[part].double().mean() - keep[part].double().mean()) < 0.01


def test_fast_training_draws_like_train_sgns(monkeypatch):
    """Every step of train_sgns_fast, recorded: the same vocabulary, centre words, pairs per epoch, negatives
    from count^0.75 and a learning rate decaying linearly from lr, as train_sgns."""
    steps, step = [], vectors.sgns_fused_step

    def recorder(W_in, W_out, c, o, n, lr):
        steps.append((c.clone(), n.clone(), lr.item()))
        return step(W_in, W_out, c, o, n, lr)

    monkeypatch.setattr(vectors, "sgns_fused_step", recorder)
    sentences, epochs = _zipf_sentences(), 2
    kv = vectors.train_sgns_fast(sentences, dim=8, epochs=epochs, min_count=1, batch_size=4096, compile=False,
                                 progress=False)
    words, counts = vectors.build_vocab(sentences, 1)
    assert kv.index_to_key == words
    index = {w: i for i, w in enumerate(words)}
    ids = torch.tensor([index[w] for s in sentences for w in s])
    sentence_of = torch.tensor([k for k, s in enumerate(sentences) for _ in s])
    gen = torch.Generator().manual_seed(0)
    kept = torch.rand(len(ids), generator=gen) < vectors.keep_probabilities(counts)[ids]  # train_sgns's epoch
    c_ref, _ = vectors.skipgram_pairs(ids[kept], sentence_of[kept], 5, gen)
    centers = torch.cat([c for c, _, _ in steps]).long()
    assert abs(len(centers) / (epochs * len(c_ref)) - 1) < 0.02, "not as many pairs per epoch as train_sgns"

    def shares(x):
        return torch.bincount(x, minlength=len(words)).double() / len(x)

    assert (shares(centers) - shares(c_ref)).abs().sum() / 2 < 0.05, "centre words not subsampled as in train_sgns"
    negatives = torch.cat([n.reshape(-1) for _, n, _ in steps]).long()
    tv = (shares(negatives) - vectors.negative_distribution(counts)).abs().sum() / 2
    assert tv < 0.01, f"negatives not drawn in proportion to count^0.75 (total variation {tv:.3f})"
    lrs = torch.tensor([lr for _, _, lr in steps], dtype=torch.float64)
    done = torch.tensor([0] + [len(c) for c, _, _ in steps[:-1]]).cumsum(0)
    expected_pairs = epochs * vectors.keep_probabilities(counts)[ids].sum() * (5 + 1)  # as train_sgns
    torch.testing.assert_close(lrs, (0.025 * (1 - done / expected_pairs)).clamp(min=1e-4), atol=1e-7, rtol=0)

def test_fused_step_equals_train_step():
    gen = torch.Generator().manual_seed(0)
    W_in, W_out = torch.randn(30, 6, generator=gen), torch.randn(30, 6, generator=gen)
    c, o, n = torch.randint(0, 30, (50,), generator=gen), torch.randint(0, 30, (50,), generator=gen), \
        torch.randint(0, 30, (50, 4), generator=gen)
    want_in, want_out = vectors.train_step(W_in.clone(), W_out.clone(), c, o, n, 0.1)
    vectors.sgns_fused_step(W_in, W_out, c, o, n, torch.tensor(0.1))
    torch.testing.assert_close(W_in, want_in)
    torch.testing.assert_close(W_out, want_out)


def test_alias_table_draws_the_distribution():
    probs = vectors.negative_distribution(torch.tensor([1000, 300, 20, 5, 5, 1]))
    threshold, alias = vectors.alias_table(probs)
    topped_up = torch.zeros(6, dtype=torch.float64).index_add_(0, alias.long(), 1 - threshold.double())
    columns = threshold.double() + topped_up  # (6,) each word's total share of the 6 columns
    torch.testing.assert_close(columns / 6, probs, atol=1e-6, rtol=0)
    n = vectors.draw_negatives(threshold, alias, (200_000,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.bincount(n.long(), minlength=6).double() / 200_000, probs, atol=0.004, rtol=0)


def test_fast_training_learns_like_train_sgns():
    """On the synthetic corpus, from the same start: the same analogies solved, the same losses, and closer
    neighbourhoods than two seeds of train_sgns share (measured: 0.65 of the top-5 neighbours against 0.39)."""
    config = dict(dim=20, window=3, epochs=10, min_count=1, lr=0.025, batch_size=128, threads=1, progress=False)
    sentences = vectors.synthetic_corpus(2000, seed=0)
    slow = vectors.train_sgns(sentences, seed=0, **config)
    fast = vectors.train_sgns_fast(sentences, seed=0, compile=False, **config)
    assert fast.index_to_key == slow.index_to_key
    for kv in (slow, fast):
        correct, answered, skipped = vectors.evaluate_analogies(torch.from_numpy(kv.vectors), kv.index_to_key,
                                                                vectors.synthetic_analogies())
        assert skipped == 0 and correct >= 0.9 * answered
    assert len(fast.losses) == len(slow.losses)
    mean = lambda losses: sum(losses[1:]) / len(losses[1:])  # noqa: E731  (the first is before any step)
    assert abs(mean(fast.losses) / mean(slow.losses) - 1) < 0.03

    def neighbours(kv):
        U = vectors.unit_rows(torch.from_numpy(kv.vectors))
        return (U @ U.T).fill_diagonal_(-2).topk(5).indices  # (V, 5)

    shared = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(neighbours(fast), neighbours(slow))]
    assert sum(shared) / (5 * len(shared)) > 0.5


def test_compiled_step_equals_the_uncompiled_one():
    """What torch.compile makes of sgns_fused_step computes the same update (one compile: seconds once
    torch's inductor cache is warm)."""
    gen = torch.Generator().manual_seed(0)
    W_in, W_out = torch.randn(40, 8, generator=gen), torch.randn(40, 8, generator=gen)
    c, o, n = (torch.randint(0, 40, shape, generator=gen, dtype=torch.int32) for shape in ((64,), (64,), (64, 3)))
    want_in, want_out = W_in.clone(), W_out.clone()
    vectors.sgns_fused_step(want_in, want_out, c, o, n, torch.tensor(0.1))
    vectors._step(compile=True)(W_in, W_out, c, o, n, torch.tensor(0.1))
    torch.testing.assert_close(W_in, want_in)
    torch.testing.assert_close(W_out, want_out)
