"""Typical mistakes in exercise 03_attention."""

SOLVED_MERGE = '''
def merge_heads(x):
    batch, n_heads, seq, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, seq, n_heads * d_head)
'''

SOLVED_SPLIT = '''
def split_heads(x, n_heads):
    batch, seq, d_model = x.shape
    return x.view(batch, seq, n_heads, d_model // n_heads).transpose(1, 2)
'''

ATTENTION_TESTS = ["test_scaled_dot_product_attention", "test_attention_hidden"]
MHA_TESTS = ["test_multi_head_attention", "test_mha_hidden"]
HEAD_TESTS = ["test_split_heads", "test_merge_heads"]
NAME_TESTS = ["test_find_name_mover", "test_name_mover_hidden"]

PLANTED = {
    "attention_no_scale": dict(
        cell="scaled_dot_product_attention",
        source='''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights
''',
        fails=ATTENTION_TESTS + MHA_TESTS, keeps=["test_causal_mask"] + HEAD_TESTS + NAME_TESTS,
        message="the scores are not scaled: divide q @ k^T by sqrt(d_k)"),
    "attention_softmax_wrong_axis": dict(
        cell="scaled_dot_product_attention",
        source='''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-2)
    return weights @ v, weights
''',
        fails=ATTENTION_TESTS + MHA_TESTS, keeps=["test_causal_mask"] + HEAD_TESTS + NAME_TESTS,
        message="the softmax runs over the wrong axis"),
    "attention_mask_after_softmax": dict(
        cell="scaled_dot_product_attention",
        source='''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights
''',
        fails=ATTENTION_TESTS + MHA_TESTS, keeps=["test_causal_mask"] + HEAD_TESTS + NAME_TESTS,
        message="the mask is applied after the softmax"),
    "attention_mask_inverted": dict(
        cell="scaled_dot_product_attention",
        source='''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights
''',
        fails=ATTENTION_TESTS + MHA_TESTS, keeps=["test_causal_mask"] + HEAD_TESTS + NAME_TESTS,
        message="the mask is the wrong way round"),
    "causal_mask_wrong_direction": dict(
        cell="causal_mask",
        source='''
def causal_mask(n):
    return torch.triu(torch.ones(n, n, dtype=torch.bool))
''',
        fails=["test_causal_mask", "test_attention_hidden"],
        keeps=["test_scaled_dot_product_attention"] + HEAD_TESTS + MHA_TESTS + NAME_TESTS,
        message="is the wrong direction"),
    "split_heads_wrong_order": dict(
        cell="heads",
        source='''
def split_heads(x, n_heads):
    batch, seq, d_model = x.shape
    return x.view(batch, seq, d_model // n_heads, n_heads).permute(0, 3, 1, 2)
''' + SOLVED_MERGE,
        fails=["test_split_heads", "test_heads_hidden"] + MHA_TESTS,
        keeps=["test_merge_heads"] + ATTENTION_TESTS + NAME_TESTS,
        message="the heads are split in the wrong order"),
    "merge_heads_no_transpose": dict(
        cell="heads",
        source=SOLVED_SPLIT + '''
def merge_heads(x):
    batch, n_heads, seq, d_head = x.shape
    return x.reshape(batch, seq, n_heads * d_head)
''',
        fails=["test_merge_heads", "test_heads_hidden"] + MHA_TESTS,
        keeps=["test_split_heads"] + ATTENTION_TESTS + NAME_TESTS,
        message="transpose(1, 2) first"),
    "mha_scaled_by_d_model": dict(
        cell="multi_head_attention",
        source='''
def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
    q = split_heads(x @ w_q, n_heads)
    k = split_heads(x @ w_k, n_heads)
    v = split_heads(x @ w_v, n_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return merge_heads(weights @ v) @ w_o, weights
''',
        fails=MHA_TESTS, keeps=ATTENTION_TESTS + HEAD_TESTS + NAME_TESTS,
        message="not by sqrt(d_model)"),
    "name_mover_ignores_subject": dict(
        cell="find_name_mover",
        source='''
def find_name_mover(attention, io_pos, s_pos):
    n_prompts, n_layers, n_heads = attention.shape[:3]
    rows = torch.arange(n_prompts)
    score = attention[rows, :, :, -1, io_pos].mean(dim=0)
    best = int(score.argmax())
    return best // n_heads, best % n_heads
''',
        fails=NAME_TESTS, keeps=ATTENTION_TESTS + HEAD_TESTS + MHA_TESTS,
        message="it moves both names and cannot tell which is the answer"),
    "name_mover_reads_a_column": dict(
        cell="find_name_mover",
        source='''
def find_name_mover(attention, io_pos, s_pos):
    n_prompts, n_layers, n_heads = attention.shape[:3]
    rows = torch.arange(n_prompts)
    score = (attention[rows, :, :, io_pos, -1] - attention[rows, :, :, s_pos, -1]).mean(dim=0)
    best = int(score.argmax())
    return best // n_heads, best % n_heads
''',
        fails=["test_find_name_mover"], keeps=ATTENTION_TESTS + HEAD_TESTS + MHA_TESTS,
        message="the last position's weights are the last *row*"),
    "attention_wraps_torch_reference": dict(
        cell="scaled_dot_product_attention",
        source='''
import llmcourse.attention as A

def scaled_dot_product_attention(q, k, v, mask=None):
    return A.scaled_dot_product_attention(q, k, v, mask)
''',
        fails=ATTENTION_TESTS, keeps=["test_causal_mask"] + HEAD_TESTS + NAME_TESTS,
        message="calls llmcourse's own reference implementation"),
}

PLANTED.update({
    "name_mover_every_query": dict(
        cell="find_name_mover",
        source='''
def find_name_mover(attention, io_pos, s_pos):
    n_prompts, n_layers, n_heads = attention.shape[:3]
    rows = torch.arange(n_prompts)
    rows_mean = attention.mean(dim=3)                     # (n_prompts, n_layers, n_heads, seq)
    score = (rows_mean[rows, :, :, io_pos] - rows_mean[rows, :, :, s_pos]).mean(dim=0)
    best = int(score.argmax())
    return best // n_heads, best % n_heads
''',
        fails=NAME_TESTS, keeps=ATTENTION_TESTS + HEAD_TESTS + MHA_TESTS,
        message="you averaged the weights of every query position"),
})

PLANTED.update({
    "attention_calls_torch": dict(
        cell="scaled_dot_product_attention",
        source='''
from torch.nn import functional as F

def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), weights
''',
        fails=ATTENTION_TESTS, keeps=["test_causal_mask"] + HEAD_TESTS + NAME_TESTS,
        message="uses `torch.nn.functional.scaled_dot_product_attention`"),
})

PLANTED.update({
    "name_mover_first_sentence": dict(
        cell="find_name_mover",
        source='''
def find_name_mover(attention, io_pos, s_pos):
    n_prompts, n_layers, n_heads = attention.shape[:3]
    score = attention[0, :, :, -1, io_pos[0]] - attention[0, :, :, -1, s_pos[0]]
    best = int(score.argmax())
    return best // n_heads, best % n_heads
''',
        fails=NAME_TESTS, keeps=ATTENTION_TESTS + HEAD_TESTS + MHA_TESTS,
        message="if you scored the first sentence alone"),
})

IN_MODEL_TESTS = ["test_find_name_mover_in_model", "test_name_mover_in_model_hidden"]

PLANTED.update({
    "name_mover_in_model_last_row": dict(
        cell="find_name_mover_in_model",
        source='''
def find_name_mover_in_model(attention, io_pos, s_pos, end):
    n_prompts, n_layers, n_heads = attention.shape[:3]
    rows = torch.arange(n_prompts)
    last = attention[:, :, :, -1, :]                      # the last row, padding for the shorter sentences
    score = (last[rows, :, :, io_pos] - last[rows, :, :, s_pos]).mean(dim=0)
    best = int(score.argmax())
    return best // n_heads, best % n_heads
''',
        fails=IN_MODEL_TESTS, keeps=ATTENTION_TESTS + HEAD_TESTS + MHA_TESTS + NAME_TESTS,
        message="You read the last row of every sentence"),
    "name_mover_in_model_io_only": dict(
        cell="find_name_mover_in_model",
        source='''
def find_name_mover_in_model(attention, io_pos, s_pos, end):
    n_prompts, n_layers, n_heads = attention.shape[:3]
    rows = torch.arange(n_prompts)
    at_end = attention[rows, :, :, end]
    score = at_end[rows, :, :, io_pos].mean(dim=0)        # the weight on the IO alone
    best = int(score.argmax())
    return best // n_heads, best % n_heads
''',
        fails=IN_MODEL_TESTS, keeps=ATTENTION_TESTS + HEAD_TESTS + MHA_TESTS + NAME_TESTS,
        message="That head gives the indirect object the most weight, but about as much to the subject"),
    "name_mover_in_model_every_query": dict(
        cell="find_name_mover_in_model",
        source='''
def find_name_mover_in_model(attention, io_pos, s_pos, end):
    n_prompts, n_layers, n_heads = attention.shape[:3]
    rows = torch.arange(n_prompts)
    every = attention.mean(dim=3)                         # every query position's weights, averaged
    score = (every[rows, :, :, io_pos] - every[rows, :, :, s_pos]).mean(dim=0)
    best = int(score.argmax())
    return best // n_heads, best % n_heads
''',
        fails=IN_MODEL_TESTS, keeps=ATTENTION_TESTS + HEAD_TESTS + MHA_TESTS + NAME_TESTS,
        message="You averaged the weights of every query position"),
})
