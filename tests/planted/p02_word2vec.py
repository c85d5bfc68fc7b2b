"""Typical mistakes in exercise 02_word2vec."""

SOLVED_EVALUATE = '''
def evaluate_analogies(E, words, questions):
    known = set(words)
    correct = answered = skipped = 0
    for a, b, c, d in questions:
        if not all(w in known for w in (a, b, c, d)):
            skipped += 1
            continue
        answered += 1
        correct += analogy(E, words, a, b, c, topn=1)[0] == d
    return correct, answered, skipped
'''

SOLVED_ANALOGY = '''
def analogy(E, words, a, b, c, topn=5):
    U = E / E.norm(dim=-1, keepdim=True)
    index = {w: i for i, w in enumerate(words)}
    target = U[index[b]] - U[index[a]] + U[index[c]]
    scores = U @ (target / target.norm())
    for w in (a, b, c):
        scores[index[w]] = -float("inf")
    return [words[i] for i in scores.topk(topn).indices.tolist()]
'''

PLANTED = {
    "loss_negative_sign": dict(
        cell="sgns_loss",
        source='''
def sgns_loss(center, context, negatives):
    pos = (center * context).sum(-1)
    neg = (negatives * center[:, None, :]).sum(-1)
    logsig = torch.nn.functional.logsigmoid
    return -(logsig(pos).sum() + logsig(neg).sum())
''',
        fails=["test_sgns_loss", "test_loss_hidden"],
        keeps=["test_sgns_gradients", "test_train_step", "test_analogy", "test_train"],
        message="sign error in the negatives' term"),
    "gradients_sign_error": dict(
        cell="sgns_gradients",
        source='''
def sgns_gradients(center, context, negatives):
    g_pos = 1 - torch.sigmoid((center * context).sum(-1))
    g_neg = torch.sigmoid((negatives * center[:, None, :]).sum(-1))
    grad_center = g_pos[:, None] * context + (g_neg[:, :, None] * negatives).sum(1)
    grad_context = g_pos[:, None] * center
    grad_negatives = g_neg[:, :, None] * center[:, None, :]
    return grad_center, grad_context, grad_negatives
''',
        fails=["test_sgns_gradients", "test_loss_hidden", "test_train_step", "test_train"],
        keeps=["test_sgns_loss", "test_negative_distribution", "test_analogy", "test_evaluate_analogies"],
        message="sign error in the real pair's term"),
    "negatives_not_normalised": dict(
        cell="negative_distribution",
        source='''
def negative_distribution(counts, power=0.75):
    return counts.double() ** power
''',
        fails=["test_negative_distribution", "test_step_hidden"],
        keeps=["test_sgns_loss", "test_train_step", "test_analogy"],
        message="not normalised"),
    "step_loses_repeated_words": dict(
        cell="train_step",
        source='''
def train_step(W_in, W_out, centers, contexts, negatives, lr):
    g_c, g_o, g_n = sgns_gradients(W_in[centers], W_out[contexts], W_out[negatives])
    W_in[centers] -= lr * g_c
    W_out[contexts] -= lr * g_o
    W_out[negatives.reshape(-1)] -= lr * g_n.reshape(-1, g_n.shape[-1])
    return W_in, W_out
''',
        fails=["test_train_step", "test_step_hidden"],
        keeps=["test_sgns_gradients", "test_negative_distribution", "test_analogy", "test_evaluate_analogies"],
        message="must receive the SUM of its updates"),
    "analogy_keeps_query_words": dict(
        cell="analogy",
        source='''
def analogy(E, words, a, b, c, topn=5):
    U = E / E.norm(dim=-1, keepdim=True)
    index = {w: i for i, w in enumerate(words)}
    target = U[index[b]] - U[index[a]] + U[index[c]]
    scores = U @ (target / target.norm())
    return [words[i] for i in scores.topk(topn).indices.tolist()]
''' + SOLVED_EVALUATE,
        fails=["test_analogy", "test_analogy_hidden"],
        keeps=["test_sgns_loss", "test_sgns_gradients", "test_train_step", "test_train"],
        message="exclude the three query words"),
    "analogy_not_normalised": dict(
        cell="analogy",
        source='''
def analogy(E, words, a, b, c, topn=5):
    index = {w: i for i, w in enumerate(words)}
    scores = E @ (E[index[b]] - E[index[a]] + E[index[c]])
    for w in (a, b, c):
        scores[index[w]] = -float("inf")
    return [words[i] for i in scores.topk(topn).indices.tolist()]
''' + SOLVED_EVALUATE,
        fails=["test_analogy", "test_analogy_hidden"],
        keeps=["test_sgns_loss", "test_train_step", "test_train"],
        message="normalise the vectors first"),
    "evaluate_counts_unknown": dict(
        cell="analogy",
        source=SOLVED_ANALOGY + '''
def evaluate_analogies(E, words, questions):
    known = set(words)
    correct = 0
    for a, b, c, d in questions:
        if all(w in known for w in (a, b, c, d)):
            correct += analogy(E, words, a, b, c, topn=1)[0] == d
    return correct, len(questions), 0
''',
        fails=["test_evaluate_analogies", "test_analogy_hidden"],
        keeps=["test_analogy", "test_train_step", "test_train"],
        message="are skipped (counted in `skipped`)"),
    "train_zero_init": dict(
        cell="train",
        source='''
def train(sentences, dim=20, window=3, negative=5, epochs=10, lr=0.05, batch_size=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    words, counts = build_vocab(sentences)
    index = {w: i for i, w in enumerate(words)}
    ids = torch.tensor([index[w] for s in sentences for w in s])
    sentence_of = torch.tensor([k for k, s in enumerate(sentences) for _ in s])
    probs = negative_distribution(counts)
    W_in = torch.zeros(len(words), dim)
    W_out = torch.zeros(len(words), dim)
    for epoch in range(epochs):
        centers, contexts = skipgram_pairs(ids, sentence_of, window, gen)
        order = torch.randperm(len(centers), generator=gen)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            negatives = torch.multinomial(probs, len(batch) * negative, replacement=True, generator=gen)
            train_step(W_in, W_out, centers[batch], contexts[batch], negatives.view(len(batch), negative), lr)
    return words, W_in
''',
        fails=["test_train", "test_train_hidden"],
        keeps=["test_sgns_loss", "test_sgns_gradients", "test_train_step", "test_analogy"],
        message="all-zero vectors"),
    "step_wraps_reference": dict(
        cell="train_step",
        source='''
from llmcourse import vectors as V

def train_step(W_in, W_out, centers, contexts, negatives, lr):
    return V.train_step(W_in, W_out, centers, contexts, negatives, lr)
''',
        fails=["test_train_step", "test_step_hidden"],
        keeps=["test_sgns_loss", "test_analogy"],
        message="calls llmcourse's own reference implementation"),
}

SOLVED_TRAIN = '''
def train(sentences, dim=20, window=3, negative=5, epochs=10, lr=0.05, batch_size=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    words, counts = build_vocab(sentences)
    index = {w: i for i, w in enumerate(words)}
    ids = torch.tensor([index[w] for s in sentences for w in s])
    sentence_of = torch.tensor([k for k, s in enumerate(sentences) for _ in s])
    probs = negative_distribution(counts)
    W_in = (torch.rand(len(words), dim, generator=gen) - 0.5) / dim
    W_out = torch.zeros(len(words), dim)
    for epoch in range(epochs):
        centers, contexts = skipgram_pairs(ids, sentence_of, window, gen)
        order = torch.randperm(len(centers), generator=gen)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            negatives = torch.multinomial(probs, len(batch) * negative, replacement=True, generator=gen)
            done = (epoch + start / len(order)) / epochs
            W_in, W_out = train_step(W_in, W_out, centers[batch], contexts[batch],
                                     negatives.view(len(batch), negative), lr * (1 - done))
    return words, W_in
'''

PLANTED.update({
    "step_not_in_place": dict(
        # returns new matrices and leaves the caller's unchanged: `train` then learns nothing, but only
        # train_step's own test can say why
        cell="train_step",
        source='''
def train_step(W_in, W_out, centers, contexts, negatives, lr):
    W_in, W_out = W_in.clone(), W_out.clone()
    g_c, g_o, g_n = sgns_gradients(W_in[centers], W_out[contexts], W_out[negatives])
    W_in.index_add_(0, centers, g_c, alpha=-lr)
    W_out.index_add_(0, contexts, g_o, alpha=-lr)
    W_out.index_add_(0, negatives.reshape(-1), g_n.reshape(-1, g_n.shape[-1]), alpha=-lr)
    return W_in, W_out
''',
        fails=["test_train_step", "test_step_hidden", "test_train"],
        keeps=["test_sgns_gradients", "test_negative_distribution", "test_analogy"],
        message="left the caller's W_in unchanged"),
    "train_returns_W_out": dict(
        cell="train",
        source=SOLVED_TRAIN.replace("return words, W_in", "return words, W_out"),
        fails=["test_train", "test_train_hidden"],
        keeps=["test_sgns_loss", "test_sgns_gradients", "test_train_step", "test_analogy"],
        message="those are W_out"),
})
