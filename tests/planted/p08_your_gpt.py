"""Typical mistakes in exercise 08_your_gpt."""

ROPE = '''
def rope(x, start, theta):
    n_heads, seq, d_head = x.shape
    omega = theta ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)
    angle = torch.arange(start, start + seq, dtype=torch.float32)[:, None] * omega
    cos, sin = torch.cos(angle), torch.sin(angle)
'''

GQA = '''
def gqa_attention(q, k, v):
    group = q.shape[0] // k.shape[0]
    t, n = k.shape[1], q.shape[1]
'''

FORWARD = '''
def llama_forward(state, config, tokens, start=0, cache=None):
    H, KV, eps, theta = config["n_heads"], config["n_kv_heads"], config["eps"], config["rope_theta"]
    x = state["model.embed_tokens.weight"][tokens]
    n, d = x.shape
    new = []
    for layer in range(config["n_layers"]):
        w = lambda name: state[f"model.layers.{layer}.{name}.weight"]
        a = rms_norm(x, w("input_layernorm"), eps)
        q = (a @ w("self_attn.q_proj").T).view(n, H, -1).transpose(0, 1)
        k = (a @ w("self_attn.k_proj").T).view(n, KV, -1).transpose(0, 1)
        v = (a @ w("self_attn.v_proj").T).view(n, KV, -1).transpose(0, 1)
        q, k = rope(q, start, theta), rope(k, start, theta)
        ROTATE_VALUES
        new.append((k, v))
        if cache is not None:
            k, v = torch.cat([cache[layer][0], k], 1), torch.cat([cache[layer][1], v], 1)
        x = x + gqa_attention(q, k, v).transpose(0, 1).reshape(n, d) @ w("self_attn.o_proj").T
        m = rms_norm(x, w("post_attention_layernorm"), eps)
        x = x + swiglu(m, w("mlp.gate_proj"), w("mlp.up_proj"), w("mlp.down_proj"))
    x = rms_norm(x, state["model.norm.weight"], eps)
    return x @ state["model.embed_tokens.weight"].T, new
'''

PARTS = ["test_parts_hidden", "test_llama_forward", "test_smollm2_logits", "test_model_hidden"]
OTHERS = {"rms_norm": ["test_rope", "test_gqa_attention", "test_swiglu"],
          "rope": ["test_rms_norm", "test_gqa_attention", "test_swiglu"],
          "gqa": ["test_rms_norm", "test_rope", "test_swiglu"],
          "swiglu": ["test_rms_norm", "test_rope", "test_gqa_attention"]}

PLANTED = {
    "rms_mean_subtracted": dict(
        cell="rms_norm",
        source='''
def rms_norm(x, weight, eps):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt((centred ** 2).mean(-1, keepdim=True) + eps) * weight
''',
        fails=["test_rms_norm"] + PARTS, keeps=OTHERS["rms_norm"],
        message="the mean is subtracted first: that is LayerNorm"),
    "rope_wrong_halves": dict(
        cell="rope",
        source=ROPE + '''
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out
''',
        fails=["test_rope"] + PARTS, keeps=OTHERS["rope"],
        message="neighbouring coordinates (0, 1), (2, 3), ... are rotated together"),
    "rope_positions_from_zero": dict(
        cell="rope",
        source=ROPE.replace("torch.arange(start, start + seq", "torch.arange(0, seq") + '''
    a, b = x[..., : d_head // 2], x[..., d_head // 2:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
''',
        fails=["test_rope", "test_parts_hidden", "test_llama_forward", "test_model_hidden"],
        keeps=OTHERS["rope"] + ["test_smollm2_logits"],
        message="the positions start at 0"),
    "kv_heads_tiled": dict(
        cell="gqa_attention",
        source=GQA + '''
    k, v = k.repeat(group, 1, 1), v.repeat(group, 1, 1)
    scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
    future = torch.arange(t)[None, :] > torch.arange(t - n, t)[:, None]
    return torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v
''',
        fails=["test_gqa_attention"] + PARTS, keeps=OTHERS["gqa"],
        message="the key/value heads are tiled"),
    "kv_heads_not_repeated": dict(
        cell="gqa_attention",
        source=GQA + '''
    scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
    future = torch.arange(t)[None, :] > torch.arange(t - n, t)[:, None]
    return torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v
''',
        fails=["test_gqa_attention"] + PARTS, keeps=OTHERS["gqa"],
        message="repeat each key/value head"),
    "no_causal_mask": dict(
        cell="gqa_attention",
        source=GQA + '''
    k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
    return torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, -1) @ v
''',
        fails=["test_gqa_attention"] + PARTS, keeps=OTHERS["gqa"],
        message="every key is visible: apply the causal mask"),
    "silu_on_up": dict(
        cell="swiglu",
        source='''
def swiglu(x, w_gate, w_up, w_down):
    return ((x @ w_gate.T) * torch.nn.functional.silu(x @ w_up.T)) @ w_down.T
''',
        fails=["test_swiglu"] + PARTS, keeps=OTHERS["swiglu"],
        message="SiLU is on the wrong branch"),
    "rope_on_values": dict(
        cell="llama_forward",
        source=FORWARD.replace("ROTATE_VALUES", "v = rope(v, start, theta)"),
        fails=["test_llama_forward", "test_smollm2_logits", "test_model_hidden"],
        keeps=["test_rms_norm", "test_rope", "test_gqa_attention", "test_swiglu", "test_parts_hidden"],
        message="RoPE is applied to the values"),
}

# The mistakes in the model's parts leave train_gpt as released when graded (tests/conftest.py, `graded`): their
# training is the solution's, a minute of CPU each that no assertion reads (the canary's page shows the trained GPT).
for _spec in PLANTED.values():
    _spec["unsolved"] = ["train_gpt"]

# Training your own GPT (section 8): mistakes that only the trained weights show, judged outside the kernel.
TRAIN_CELLS = ["test_rms_norm", "test_rope", "test_gqa_attention", "test_swiglu", "test_parts_hidden",
               "test_llama_forward", "test_smollm2_logits", "test_model_hidden", "test_adamw_step"]

PLANTED.update({
    "train_without_causal_mask": dict(
        cell="gpt_logits",
        source='''
def gpt_logits(params, tokens, n_heads):
    batch, seq = tokens.shape
    x = params["tok"][tokens] + params["pos"][:seq]
    d = x.shape[-1]
    ln = lambda t, g, b: torch.nn.functional.layer_norm(t, (d,), g, b, eps=1e-5)
    for p in params["blocks"]:          # a faster, batched block of my own
        a = ln(x, p["ln1_g"], p["ln1_b"])
        q, k, v = ((a @ p["W" + n] + p["b" + n]).view(batch, seq, n_heads, -1).transpose(1, 2)
                   for n in "qkv")
        w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = x + (w @ v).transpose(1, 2).reshape(batch, seq, d) @ p["Wo"] + p["bo"]
        m = ln(x, p["ln2_g"], p["ln2_b"])
        x = x + torch.nn.functional.gelu(m @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    return ln(x, params["ln_g"], params["ln_b"]) @ params["tok"].T
''',
        fails=["test_train_gpt", "test_gpt_logits", "test_train_parts_hidden"], keeps=TRAIN_CELLS,
        message="your model was trained without the causal mask"),
    "evaluated_on_training_text": dict(
        cell="train_gpt",
        source='''
def train_gpt(steps, seed):
    params = init_gpt(len(chars.chars), SIZES["n_ctx"], SIZES["d_model"], SIZES["n_layers"], seed)
    weights = tensors(params)
    m = [torch.zeros_like(p) for p in weights]
    v = [torch.zeros_like(p) for p in weights]
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x, y = get_batch(chars.train, SIZES["n_ctx"], BATCH, gen)
        logits = gpt_logits(params, x, SIZES["n_heads"])
        loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        grads = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(weights, grads)):
                decay = WEIGHT_DECAY if p.dim() == 2 else 0.0
                new, m[i], v[i] = adamw_step(p, g, m[i], v[i], step + 1, learning_rate(step, steps),
                                             decay, 0.9, 0.99)
                p.copy_(new)
    # measured on the text it trained on
    val_loss = window_loss(lambda t: gpt_logits(params, t, SIZES["n_heads"]), chars.train,
                           SIZES["n_ctx"])
    return params, val_loss
''',
        fails=["test_train_gpt"], keeps=TRAIN_CELLS + ["test_gpt_logits", "test_train_parts_hidden"],
        message="is your model's loss on the training text",
        # not graded in the batch (a minute of training): the judge's verdict on a loss measured on the training
        # text is tested on the book's trained run (test_checks_yourgpt), the kit's by test_kit_venv
        batch=False),
})
