"""The reference code of chapter 01_tokens: BPE, cosine similarity, positional encodings."""
from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from llmcourse import data, tokens

TEXTS = ["", "a", "To be, or not to be, that is the question.", "如何进行机器学习", "🤖🤖 emoji 👍🏽 and naïve café",
         "   leading spaces\n\n\ttabs  and 123,456 numbers_with_underscores don't I'll"]


def naive_train_bpe(text: str, num_merges: int) -> list[tuple[int, int]]:
    """BPE exactly as the exercise describes it: recount every pair at every step."""
    chunks = [list(c.encode("utf-8")) for c in tokens.pretokenize(text)]
    merges = []
    for step in range(num_merges):
        counts = Counter(p for ids in chunks for p in zip(ids, ids[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        chunks = [tokens.merge(ids, pair, 256 + step) for ids in chunks]
        merges.append(pair)
    return merges


def test_count_pairs_and_merge():
    assert tokens.count_pairs([1, 2, 1, 2]) == {(1, 2): 2, (2, 1): 1}
    assert tokens.count_pairs([5, 5, 5]) == {(5, 5): 2}
    assert tokens.merge([5, 5, 5], (5, 5), 300) == [300, 5]
    assert tokens.merge([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256]


def test_pretokenize_keeps_every_character():
    for text in TEXTS:
        assert "".join(tokens.pretokenize(text)) == text
    assert tokens.pretokenize("Hello world!") == ["Hello", " world", "!"]


def test_tie_break_takes_smallest_pair():
    assert tokens.most_frequent_pair(Counter({(5, 1): 2, (2, 9): 2, (7, 7): 1})) == (2, 9)


@pytest.mark.parametrize("seed", range(3))
def test_fast_training_equals_naive_training(seed):
    rng = random.Random(seed)
    words = ["low", "lower", "newest", "wid", "学习", "机器", "🤖", "aaaa", "abab"]
    text = " ".join(rng.choice(words) for _ in range(300))
    assert tokens.train_bpe(text, 40) == naive_train_bpe(text, 40)


def test_training_on_shakespeare_equals_naive():
    text = data.shakespeare(max_chars=20_000)
    assert tokens.train_bpe(text, 60) == naive_train_bpe(text, 60)


def test_training_stops_when_nothing_is_left():
    assert tokens.train_bpe("ab", 10) == [(97, 98)]
    assert tokens.train_bpe("", 10) == []


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(text):
    merges = tokens.train_bpe(" ".join(TEXTS) * 2, 80)
    ids = tokens.encode(text, merges)
    assert all(0 <= i < 256 + len(merges) for i in ids)
    assert tokens.decode(ids, merges) == text


def test_round_trip_on_random_unicode():
    rng = random.Random(0)
    merges = tokens.train_bpe(data.shakespeare(max_chars=20_000), 100)
    for _ in range(50):
        text = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x4E00, 0x9FFF), rng.randrange(0x1F600, 0x1F64F)]))
                       for _ in range(rng.randrange(0, 30)))
        assert tokens.decode(tokens.encode(text, merges), merges) == text


def test_merges_compress_english():
    merges = tokens.train_bpe(data.shakespeare(max_chars=200_000), 200)
    sample = data.shakespeare()[1_000_000:1_010_000]
    assert len(tokens.encode(sample, merges)) < 0.6 * len(sample.encode("utf-8"))


def test_our_encoder_with_gpt2_merges_is_gpt2():
    """Our 15-line encoder, given GPT-2's merges, splits text exactly as GPT-2's real tokenizer does."""
    merges = tokens.merges_from_strings(data.gpt2_merges_bytes())
    vocab = tokens.vocabulary(merges)
    tok = data.gpt2_tokenizer()
    text = data.shakespeare()[50_000:54_000] + " 如何进行机器学习 🤖 don't  stop\n\n  it's 1,234 ok_x"
    ours = [vocab[i] for i in tokens.encode(text, merges)]
    theirs = data.gpt2_token_bytes(tok.encode(text).ids)
    assert ours == theirs
    assert b"".join(ours) == text.encode("utf-8")
    assert tok.get_vocab_size() == 50257


def test_cosine_similarity():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [2.0, 2.0], [-1.0, 0.0]])
    assert torch.allclose(tokens.cosine_similarity(a, b), torch.tensor([0.0, 1.0, -1.0]))
    x, y = torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(0)).unbind(0)[:2]
    assert torch.allclose(tokens.cosine_similarity(x, y), torch.nn.functional.cosine_similarity(x, y, dim=-1), atol=1e-6)


def test_sinusoidal_positions_formula():
    pe = tokens.sinusoidal_positions(10, 8)
    assert pe.shape == (10, 8) and pe.dtype == torch.float32
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0] * 4))
    assert torch.isclose(pe[3, 2], torch.sin(torch.tensor(3 / 10000 ** (2 / 8))))
    assert torch.isclose(pe[3, 5], torch.cos(torch.tensor(3 / 10000 ** (4 / 8))))


@pytest.mark.parametrize("offset", [1, 5, 17])
def test_relative_offset_is_a_linear_map(offset):
    pe = tokens.sinusoidal_positions(60, 16).double()
    rot = tokens.offset_rotation(offset, 16)
    assert torch.allclose(pe[offset:] , pe[:-offset] @ rot.T, atol=1e-6)


NUMBERS_AND_LETTERS = "x² + y² = z², ½ cup, Ⅻ o'clock, ①②③, ⁴⁵6, naïve Ⅳth 3²=9 ²x"


def test_pretokenize_uses_gpt2_character_classes():
    """GPT-2 splits with \\p{L} (letters) and \\p{N} (numbers, ² ½ Ⅻ included); Python's \\w counts ² and ½ as
    letters. The chunks are those of GPT-2's own pre-tokenizer (its regex, in `tokenizers`' ByteLevel)."""
    import re

    from tokenizers import pre_tokenizers

    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    for text in [NUMBERS_AND_LETTERS, *TEXTS]:
        assert tokens.pretokenize(text) == [text[a:b] for _, (a, b) in gpt2.pre_tokenize_str(text)], text
    assert tokens.pretokenize("x² + y²") == ["x", "²", " +", " y", "²"]
    python_w = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
    assert python_w.findall("x² + y²") != tokens.pretokenize("x² + y²"), "the case this test is about"


def test_our_encoder_is_gpt2_on_numbers_that_are_not_digits():
    merges = tokens.merges_from_strings(data.gpt2_merges_bytes())
    vocab = tokens.vocabulary(merges)
    ids = data.gpt2_tokenizer().encode(NUMBERS_AND_LETTERS).ids
    assert [vocab[i] for i in tokens.encode(NUMBERS_AND_LETTERS, merges)] == data.gpt2_token_bytes(ids)
