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
