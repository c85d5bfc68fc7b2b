"""Typical mistakes in exercise 01_tokens."""

SOLVED_ENCODE = '''
def encode(text, merges):
    rank = {pair: i for i, pair in enumerate(merges)}
    out = []
    for chunk in pretokenize(text):
        ids = list(chunk.encode("utf-8"))
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
            if pair not in rank:
                break
            ids = merge(ids, pair, 256 + rank[pair])
        out.extend(ids)
    return out
'''

SOLVED_DECODE = '''
def decode(ids, merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[a] + vocab[b]
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
'''

VECTOR_TESTS = ["test_cosine_similarity", "test_sinusoidal_positions", "test_vectors_hidden"]

PLANTED = {
    "count_pairs_no_overlap": dict(
        cell="count_pairs",
        source='''
def count_pairs(ids):
    counts, i = {}, 0
    while i + 1 < len(ids):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts
''',
        fails=["test_count_pairs"], keeps=["test_merge"] + VECTOR_TESTS, message="pairs overlap when counting"),
    "merge_no_skip": dict(
        cell="merge",
        source='''
def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out
''',
        fails=["test_merge"], keeps=["test_count_pairs"] + VECTOR_TESTS, message="two positions on"),
    "train_bpe_largest_tie": dict(
        cell="train_bpe",
        source='''
def train_bpe(text, num_merges):
    chunks = [list(chunk.encode("utf-8")) for chunk in pretokenize(text)]
    merges = []
    for step in range(num_merges):
        counts = {}
        for ids in chunks:
            for pair, n in count_pairs(ids).items():
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break
        pair = max(counts, key=lambda p: (counts[p], p))
        chunks = [merge(ids, pair, 256 + step) for ids in chunks]
        merges.append(pair)
    return merges
''',
        fails=["test_train_bpe"], keeps=["test_count_pairs", "test_merge", "test_encode", "test_decode"] + VECTOR_TESTS,
        message="takes the smallest pair"),
    "encode_bytes_only": dict(
        cell="encode_decode",
        source='''
def encode(text, merges):
    return list(text.encode("utf-8"))
''' + SOLVED_DECODE,
        fails=["test_encode"], keeps=["test_decode", "test_train_bpe"] + VECTOR_TESTS, message="apply the learned merges"),
    "decode_per_token": dict(
        cell="encode_decode",
        source=SOLVED_ENCODE + '''
def decode(ids, merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[a] + vocab[b]
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)
''',
        fails=["test_decode"], keeps=["test_encode", "test_train_bpe"] + VECTOR_TESTS, message="join the bytes of all tokens first"),
    "cosine_unnormalised": dict(
        cell="cosine_similarity",
        source='''
def cosine_similarity(a, b):
    return (a * b).sum(dim=-1)
''',
        fails=["test_cosine_similarity", "test_vectors_hidden"], keeps=["test_sinusoidal_positions", "test_encode"],
        message="divide it by the product of the two vectors' lengths"),
    "positions_sin_cos_swapped": dict(
        cell="sinusoidal_positions",
        source='''
def sinusoidal_positions(n_positions, d_model):
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angles = pos / 10000 ** (two_i / d_model)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.cos(angles)
    pe[:, 1::2] = torch.sin(angles)
    return pe
''',
        fails=["test_sinusoidal_positions", "test_vectors_hidden"], keeps=["test_cosine_similarity", "test_encode"],
        message="sin and cos are swapped"),
    "cosine_wraps_reference": dict(
        cell="cosine_similarity",
        source='''
import llmcourse.tokens as T

def cosine_similarity(a, b):
    return T.cosine_similarity(a, b)
''',
        fails=["test_cosine_similarity", "test_vectors_hidden"], keeps=["test_sinusoidal_positions"],
        message="calls llmcourse's own reference implementation"),
}

SOLVED_TRAIN_BODY = '''
    merges = []
    for step in range(num_merges):
        counts = {}
        for ids in chunks:
            for pair, n in count_pairs(ids).items():
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        chunks = [merge(ids, pair, 256 + step) for ids in chunks]
        merges.append(pair)
    return merges
'''

PLANTED.update({
    "train_bpe_distinct_chunks": dict(
        cell="train_bpe",
        source='''
def train_bpe(text, num_merges):
    chunks = [list(chunk.encode("utf-8")) for chunk in set(pretokenize(text))]''' + SOLVED_TRAIN_BODY,
        fails=["test_train_bpe"], keeps=["test_count_pairs", "test_merge", "test_encode", "test_decode"] + VECTOR_TESTS,
        message="you counted each distinct chunk once"),
    "encode_whole_text": dict(
        cell="encode_decode",
        source='''
def encode(text, merges):
    rank = {pair: i for i, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while len(ids) > 1:
        pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
        if pair not in rank:
            break
        ids = merge(ids, pair, 256 + rank[pair])
    return ids
''' + SOLVED_DECODE,
        fails=["test_encode"], keeps=["test_decode", "test_train_bpe"] + VECTOR_TESTS, message="you merged over the whole text"),
    "encode_most_frequent_pair": dict(
        cell="encode_decode",
        source='''
def encode(text, merges):
    rank = {pair: i for i, pair in enumerate(merges)}
    out = []
    for chunk in pretokenize(text):
        ids = list(chunk.encode("utf-8"))
        while True:
            counts = count_pairs(ids)
            learned = [pair for pair in counts if pair in rank]
            if not learned:
                break
            pair = max(learned, key=lambda p: counts[p])
            ids = merge(ids, pair, 256 + rank[pair])
        out.extend(ids)
    return out
''' + SOLVED_DECODE,
        fails=["test_encode"], keeps=["test_decode", "test_train_bpe"] + VECTOR_TESTS,
        message="you merged the pair that occurs most often in the chunk"),
})
