"""Typical mistakes in exercise 05_gpt."""

BLOCK_HEAD = '''
def block_forward(x, params, n_heads):
    seq, d = x.shape
    d_head = d // n_heads

    def ln(t, g, b):
        return torch.nn.functional.layer_norm(t, (d,), g, b, eps=1e-5)

    def attention(a):
        q, k, v = ((a @ params["W" + n] + params["b" + n]).reshape(seq, n_heads, d_head).transpose(0, 1)
                   for n in "qkv")
        later = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
        w = torch.softmax((q @ k.transpose(1, 2) / d_head ** 0.5).masked_fill(later, float("-inf")), dim=-1)
        return (w @ v).transpose(0, 1).reshape(seq, d) @ params["Wo"] + params["bo"]

    def ffn(m):
        return torch.nn.functional.gelu(m @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
'''

SOLVED_DISTRIBUTION = '''
def next_token_distribution(logits, temperature, top_k, top_p):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(), logits.shape[0]).float()
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k is not None:
        probs = torch.where(probs >= torch.topk(probs, top_k).values[-1], probs, 0.0)
        probs = probs / probs.sum()
    if top_p is not None:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = order[torch.cumsum(sorted_probs, 0) - sorted_probs < top_p]
        out = torch.zeros_like(probs)
        out[keep] = probs[keep]
        probs = out / out.sum()
    return probs
'''

BLOCK_TESTS = ["test_block_forward", "test_block_hidden"]
COUNT_TESTS = ["test_count_params", "test_block_hidden"]
SAMPLING_TESTS = ["test_next_token_distribution", "test_sample", "test_sampling_hidden"]
GENERATE_TESTS = ["test_generate_greedy_cached", "test_generate_hidden"]

PLANTED = {
    "block_post_ln": dict(
        cell="block_forward",
        source=BLOCK_HEAD + '''
    h = ln(x + attention(x), params["ln1_g"], params["ln1_b"])
    return ln(h + ffn(h), params["ln2_g"], params["ln2_b"])
''',
        fails=BLOCK_TESTS, keeps=["test_count_params"] + SAMPLING_TESTS + GENERATE_TESTS,
        message="LayerNorm is applied after the residual addition"),
    "block_no_residual": dict(
        cell="block_forward",
        source=BLOCK_HEAD + '''
    h = attention(ln(x, params["ln1_g"], params["ln1_b"]))
    return h + ffn(ln(h, params["ln2_g"], params["ln2_b"]))
''',
        fails=BLOCK_TESTS, keeps=["test_count_params"] + SAMPLING_TESTS + GENERATE_TESTS,
        message="the residual is missing around attention"),
    "count_tied_twice": dict(
        cell="count_params",
        source='''
def count_params(config):
    V, T, d, L, f = (config[k] for k in ("vocab_size", "n_ctx", "d_model", "n_layers", "d_ff"))
    block = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
    return V * d + T * d + L * block + 2 * d + d * V + V
''',
        fails=COUNT_TESTS, keeps=["test_block_forward"] + SAMPLING_TESTS + GENERATE_TESTS,
        message="the tied LM head is counted twice"),
    "temperature_after_softmax": dict(
        cell="next_token_distribution",
        source=SOLVED_DISTRIBUTION.replace("probs = torch.softmax(logits / temperature, dim=-1)",
                                           "probs = torch.softmax(logits, dim=-1) / temperature\n"
                                           "    probs = probs / probs.sum()"),
        fails=SAMPLING_TESTS, keeps=BLOCK_TESTS + ["test_count_params"] + GENERATE_TESTS,
        message="the temperature is applied after the softmax"),
    "top_p_wrong_side": dict(
        cell="next_token_distribution",
        source=SOLVED_DISTRIBUTION.replace("torch.cumsum(sorted_probs, 0) - sorted_probs < top_p",
                                           "torch.cumsum(sorted_probs, 0) < top_p"),
        fails=["test_next_token_distribution", "test_sampling_hidden"],
        keeps=BLOCK_TESTS + ["test_count_params", "test_sample"] + GENERATE_TESTS,
        message="top-p keeps the wrong side of the threshold"),
    "cache_not_appended": dict(
        cell="generate_greedy_cached",
        source='''
def generate_greedy_cached(model, prompt, n_new):
    tokens = list(prompt)
    logits, cache = step(model, torch.tensor(tokens), 0, None)
    for _ in range(n_new):
        tokens.append(int(logits[-1].argmax()))
        logits, cache = step(model, torch.tensor([tokens[-1]]), len(tokens) - 1, cache)
    return tokens[len(prompt):], cache
''',
        fails=GENERATE_TESTS, keeps=BLOCK_TESTS + ["test_count_params"] + SAMPLING_TESTS,
        message="the cache is not appended to"),
    "positions_not_offset": dict(
        cell="generate_greedy_cached",
        source='''
def generate_greedy_cached(model, prompt, n_new):
    tokens = list(prompt)
    logits, cache = step(model, torch.tensor(tokens), 0, None)
    for _ in range(n_new):
        tokens.append(int(logits[-1].argmax()))
        logits, new = step(model, torch.tensor([tokens[-1]]), 0, cache)
        cache = [(torch.cat([k, k1], 1), torch.cat([v, v1], 1)) for (k, v), (k1, v1) in zip(cache, new)]
    return tokens[len(prompt):], cache
''',
        fails=GENERATE_TESTS, keeps=BLOCK_TESTS + ["test_count_params"] + SAMPLING_TESTS,
        message="the positions are not offset"),
    # issue 29: wrong by the task's own text
    "block_changes_x": dict(
        cell="block_forward",
        source=BLOCK_HEAD + '''
    x += attention(ln(x, params["ln1_g"], params["ln1_b"]))
    return x + ffn(ln(x, params["ln2_g"], params["ln2_b"]))
''',
        fails=BLOCK_TESTS, keeps=["test_count_params"] + SAMPLING_TESTS + GENERATE_TESTS,
        message="changed its argument `x`"),
    "block_eps_outside_sqrt": dict(
        cell="block_forward",
        source=BLOCK_HEAD.replace("return torch.nn.functional.layer_norm(t, (d,), g, b, eps=1e-5)",
                                  "mean, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)\n"
                                  "        return (t - mean) / (var.sqrt() + 1e-5) * g + b") + '''
    h = x + attention(ln(x, params["ln1_g"], params["ln1_b"]))
    return h + ffn(ln(h, params["ln2_g"], params["ln2_b"]))
''',
        fails=BLOCK_TESTS, keeps=["test_count_params"] + SAMPLING_TESTS + GENERATE_TESTS,
        message="epsilon is outside the square root"),
    "block_softmax_over_queries": dict(
        cell="block_forward",
        source=BLOCK_HEAD.replace(".masked_fill(later, float(\"-inf\")), dim=-1)",
                                  ".masked_fill(later, float(\"-inf\")), dim=-2)") + '''
    h = x + attention(ln(x, params["ln1_g"], params["ln1_b"]))
    return h + ffn(ln(h, params["ln2_g"], params["ln2_b"]))
''',
        fails=BLOCK_TESTS, keeps=["test_count_params"] + SAMPLING_TESTS + GENERATE_TESTS,
        message="softmax runs over the wrong axis"),
    "distribution_changes_logits": dict(
        cell="next_token_distribution",
        source=SOLVED_DISTRIBUTION.replace("probs = torch.softmax(logits / temperature, dim=-1)",
                                           "logits /= temperature\n    probs = torch.softmax(logits, dim=-1)"),
        fails=SAMPLING_TESTS, keeps=BLOCK_TESTS + ["test_count_params"] + GENERATE_TESTS,
        message="changed its argument `logits`"),
    "greedy_as_small_temperature": dict(
        cell="next_token_distribution",
        source=SOLVED_DISTRIBUTION.replace(
            "        return torch.nn.functional.one_hot(logits.argmax(), logits.shape[0]).float()\n",
            "        temperature = 1e-3\n"),
        fails=["test_next_token_distribution", "test_sampling_hidden"],
        keeps=BLOCK_TESTS + ["test_count_params"] + GENERATE_TESTS,
        message="temperature 0 means greedy"),
    "top_k_drops_ties": dict(
        cell="next_token_distribution",
        source=SOLVED_DISTRIBUTION.replace(
            "probs = torch.where(probs >= torch.topk(probs, top_k).values[-1], probs, 0.0)",
            "kept = torch.zeros_like(probs)\n"
            "        kept[torch.topk(probs, top_k).indices] = probs[torch.topk(probs, top_k).indices]\n"
            "        probs = kept"),
        fails=["test_next_token_distribution", "test_sampling_hidden"],
        keeps=BLOCK_TESTS + ["test_count_params", "test_sample"] + GENERATE_TESTS,
        message="top-k with ties"),
    "sample_returns_tensor": dict(
        cell="sample",
        source='''
def sample(logits, temperature, top_k, top_p, seed):
    probs = next_token_distribution(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
''',
        fails=["test_sample", "test_sampling_hidden"],
        keeps=BLOCK_TESTS + ["test_count_params", "test_next_token_distribution"] + GENERATE_TESTS,
        message="should return one token id as an int"),
    "generate_appends_to_prompt": dict(
        cell="generate_greedy_cached",
        source='''
def generate_greedy_cached(model, prompt, n_new):
    tokens = prompt
    logits, cache = step(model, torch.tensor(tokens), 0, None)
    for _ in range(n_new):
        tokens.append(int(logits[-1].argmax()))
        logits, new = step(model, torch.tensor([tokens[-1]]), len(tokens) - 1, cache)
        cache = [(torch.cat([k, k1], 1), torch.cat([v, v1], 1)) for (k, v), (k1, v1) in zip(cache, new)]
    return tokens[len(tokens) - n_new:], cache
''',
        fails=GENERATE_TESTS, keeps=BLOCK_TESTS + ["test_count_params"] + SAMPLING_TESTS,
        message="changed its argument `prompt`"),
    "cache_unused": dict(
        cell="generate_greedy_cached",
        source='''
def generate_greedy_cached(model, prompt, n_new):
    tokens = list(prompt)
    logits, cache = step(model, torch.tensor(tokens), 0, None)
    for _ in range(n_new):
        tokens.append(int(logits[-1].argmax()))
        _, new = step(model, torch.tensor([tokens[-1]]), len(tokens) - 1, cache)
        cache = [(torch.cat([k, k1], 1), torch.cat([v, v1], 1)) for (k, v), (k1, v1) in zip(cache, new)]
        logits = step(model, torch.tensor(tokens), 0, None)[0]
    return tokens[len(prompt):], cache
''',
        fails=GENERATE_TESTS, keeps=BLOCK_TESTS + ["test_count_params"] + SAMPLING_TESTS,
        message="cache is built but not used"),
}
