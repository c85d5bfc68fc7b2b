"""The graded checks of 03_attention: mistakes beyond the planted ones, wrong types, shapes and NaN are named.

What every check must do (pass the solution, refuse the reference, name the planted mistakes) is tested
for all exercises in test_checks_all.py.
"""
from __future__ import annotations


import math

import pytest
import torch

from conftest import notebook_namespace
from llmcourse import checks


def test_wrong_types_and_shapes_are_named():
    with pytest.raises(AssertionError, match=r"should return two tensors, \(output, weights\)"):
        checks.check_scaled_dot_product_attention(lambda q, k, v, mask=None: q @ k.transpose(-2, -1) @ v)
    with pytest.raises(AssertionError, match="in that order"):
        sol = notebook_namespace("03_attention")["scaled_dot_product_attention"]
        checks.check_scaled_dot_product_attention(lambda *a: sol(*a)[::-1])
    with pytest.raises(AssertionError, match="boolean tensor"):
        checks.check_causal_mask(lambda n: torch.tril(torch.ones(n, n)))
    with pytest.raises(AssertionError, match="leaves out the diagonal"):
        checks.check_causal_mask(lambda n: torch.tril(torch.ones(n, n, dtype=torch.bool), -1))
    with pytest.raises(AssertionError, match=r"transpose to \(batch, n_heads, seq, d_head\)"):
        checks.check_split_heads(lambda x, h: x.view(*x.shape[:2], h, -1))
    with pytest.raises(AssertionError, match=r"pair of ints \(layer, head\)"):
        checks.check_find_name_mover(lambda a, io, s: 3)


def test_more_attention_mistakes_are_named():
    def scaled_by_d(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / q.shape[-1]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, -1)
        return w @ v, w
    with pytest.raises(AssertionError, match="not by d_k"):
        checks.check_scaled_dot_product_attention(scaled_by_d)
    ns = notebook_namespace("03_attention")
    exec("def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):\n"
         "    q, k, v = (split_heads(x @ w, n_heads) for w in (w_q, w_k, w_v))\n"
         "    out, weights = scaled_dot_product_attention(q, k, v, mask)\n"
         "    return merge_heads(out), weights\n", ns)
    with pytest.raises(AssertionError, match="multiplied by w_o"):
        checks.check_multi_head_attention(ns["multi_head_attention"])


def test_name_mover_subject_and_flat_index_mistakes_are_named():
    def subject_head(attn, io_pos, s_pos):
        rows = torch.arange(attn.shape[0])
        score = (attn[rows, :, :, -1, s_pos] - attn[rows, :, :, -1, io_pos]).mean(0)
        return divmod(int(score.argmax()), attn.shape[2])
    with pytest.raises(AssertionError, match="attends to the \\*subject\\*"):
        checks.check_find_name_mover(subject_head)

    def flat_wrong(attn, io_pos, s_pos):
        rows = torch.arange(attn.shape[0])
        score = (attn[rows, :, :, -1, io_pos] - attn[rows, :, :, -1, s_pos]).mean(0)
        return tuple(divmod(int(score.argmax()), attn.shape[1]))
    with pytest.raises(AssertionError, match="flat index|not a head of a model"):
        checks.check_find_name_mover(flat_wrong, seeds=(5,), n_prompts=5, n_layers=3, n_heads=2)


def test_torch_attention_scores_zero_however_it_is_reached():
    """The notebook says torch's own attention scores 0: through torch.nn.functional, imported under another
    name, or inside torch.nn.MultiheadAttention."""
    import math
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    def weights(q, k, mask):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return torch.softmax(scores if mask is None else scores.masked_fill(~mask, float("-inf")), -1)

    def through_module(q, k, v, mask=None):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask), weights(q, k, mask)

    def renamed(q, k, v, mask=None):
        return sdpa(q, k, v, attn_mask=mask), weights(q, k, mask)
    for fn in (through_module, renamed):
        with pytest.raises(AssertionError, match="uses `torch.nn.functional.scaled_dot_product_attention`"):
            checks.check_scaled_dot_product_attention(fn)

    def torch_layer(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
        layer = torch.nn.MultiheadAttention(x.shape[-1], n_heads, bias=False, batch_first=True)
        with torch.no_grad():
            layer.in_proj_weight.copy_(torch.cat([w_q.T, w_k.T, w_v.T]))
            layer.out_proj.weight.copy_(w_o.T)
        return layer(x, x, x, attn_mask=None if mask is None else ~mask, average_attn_weights=False)
    with pytest.raises(AssertionError, match="uses `torch.nn.functional.multi_head_attention_forward`"):
        checks.check_multi_head_attention(torch_layer)
    assert torch.nn.functional.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention, "restored"


def test_a_failing_check_shows_only_its_message_in_a_notebook(capsys):
    """IPython renders a CheckFailed by its `_render_traceback_`: the message, not the check's code."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.user_ns.update(checks=checks, torch=torch)
    shell.run_cell("checks.check_causal_mask(lambda n: torch.triu(torch.ones(n, n, dtype=torch.bool)))")
    out = capsys.readouterr().out
    assert "is the wrong direction" in out and "failing case" not in out   # the message names the case already
    assert "Traceback" not in out and "core.py" not in out and "def __call__" not in out, out
    shell.run_cell("checks.check_split_heads(lambda x, h: x.view(*x.shape[:2], h, -1).transpose(1, 2) * 2)")
    out = capsys.readouterr().out
    assert "split_heads" in out and "Traceback" not in out and len(out.strip().splitlines()) <= 4, out


ALTERNATIVES = '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = torch.einsum("...id,...jd->...ij", q.float(), k.float()) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(-1e9))   # a large negative number instead of -inf
    weights = scores.softmax(-1)
    return torch.einsum("...ij,...jd->...id", weights, v.float()), weights

def causal_mask(n):
    return torch.arange(n)[None, :] <= torch.arange(n)[:, None]

def split_heads(x, n_heads):
    batch, seq, d_model = x.shape
    return x.reshape(batch, seq, n_heads, -1).permute(0, 2, 1, 3)

def merge_heads(x):
    return torch.cat(x.unbind(1), dim=-1)

def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
    heads = [split_heads(torch.einsum("bsd,de->bse", x, w), n_heads) for w in (w_q, w_k, w_v)]
    out, weights = scaled_dot_product_attention(*heads, mask)
    return merge_heads(out) @ w_o, weights

def find_name_mover(attention, io_pos, s_pos):
    n_prompts, n_layers, n_heads = attention.shape[:3]
    best, best_score = None, -float("inf")
    for layer in range(n_layers):
        for head in range(n_heads):
            score = sum(float(attention[p, layer, head, -1, io_pos[p]] - attention[p, layer, head, -1, s_pos[p]])
                        for p in range(n_prompts)) / n_prompts
            if score > best_score:
                best, best_score = (layer, head), score
    return best
'''


def test_correct_alternatives_keep_full_marks(capsys):
    """einsum, float32, -1e9 instead of -inf, a comparison for the mask, reshape/permute, cat of heads, loops over
    heads: right answers pass the visible and hidden cases."""
    ns = notebook_namespace("03_attention")
    exec(ALTERNATIVES, ns)
    calls = [(checks.check_scaled_dot_product_attention, "scaled_dot_product_attention", {}),
             (checks.check_scaled_dot_product_attention, "scaled_dot_product_attention",
              dict(seed=11, shapes=((3, 7, 5), (1, 2, 2, 9, 32), (1, 1, 3)))),
             (checks.check_causal_mask, "causal_mask", dict(sizes=(2, 9, 17))),
             (checks.check_split_heads, "split_heads", {}), (checks.check_merge_heads, "merge_heads", {}),
             (checks.check_multi_head_attention, "multi_head_attention", {}),
             (checks.check_multi_head_attention, "multi_head_attention", dict(seed=10, shapes=((2, 4, 12, 3),), causal=False)),
             (checks.check_find_name_mover, "find_name_mover", {}),
             (checks.check_find_name_mover, "find_name_mover", dict(seeds=(4, 10, 11, 14, 26), n_prompts=5, n_layers=3, n_heads=2))]
    for check, name, params in calls:
        check(ns[name], **params)
    assert capsys.readouterr().out.count("✓") == len(calls)


def test_value_size_and_transposed_weights_are_named():
    def scaled_by_d_v(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, -1)
        return w @ v, w
    with pytest.raises(AssertionError, match="not of the values"):
        checks.check_scaled_dot_product_attention(scaled_by_d_v)
    ns = notebook_namespace("03_attention")
    exec("def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):\n"
         "    q, k, v = (split_heads(x @ w.T, n_heads) for w in (w_q, w_k, w_v))\n"
         "    out, weights = scaled_dot_product_attention(q, k, v, mask)\n"
         "    return merge_heads(out) @ w_o.T, weights\n", ns)
    with pytest.raises(AssertionError, match="not x @ w_q.T"):
        checks.check_multi_head_attention(ns["multi_head_attention"])


def test_name_mover_in_model_is_graded_by_effect(capsys):
    """Any head whose ablation costs the trained model at least half of what the costliest head's does passes,
    whatever rule found it; every other head fails with what switching it off costs."""
    from llmcourse import ioi

    drop = ioi.toy_head_effects()["drop"]
    for layer in range(2):
        for head in range(4):
            answer = lambda attention, io_pos, s_pos, end, got=(layer, head): got  # noqa: E731
            if drop[layer, head] >= 0.5 * drop.max():
                checks.check_find_name_mover_in_model(answer)
            else:
                with pytest.raises(AssertionError, match=rf"returned head {layer}\.{head}, but switching it off"):
                    checks.check_find_name_mover_in_model(answer)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="not a head of the trained model"):
        checks.check_find_name_mover_in_model(lambda *args: (2, 0))
