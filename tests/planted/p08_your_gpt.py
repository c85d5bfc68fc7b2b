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
