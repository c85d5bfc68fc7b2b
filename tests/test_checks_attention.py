"""The graded checks of 03_attention: they pass correct code, refuse the reference, and name each planted mistake."""
from __future__ import annotations

import math
import re

import pytest
import torch

from llmcourse import attention, checks, ioi
from planted import p03_attention


def student_namespace(*sources: str) -> dict:
    """Run code the way the notebook would, with the exercise's setup imports, and return its globals."""
    ns: dict = {"torch": torch, "math": math, "VOCAB": ioi.VOCAB, "head_patterns": ioi.head_patterns}
    for src in sources:
        exec(compile(src, "<student>", "exec"), ns)
    return ns


def solution_namespace() -> dict:
    import nbformat
    from conftest import REPO

    nb = nbformat.read(REPO / "solutions" / "03_attention" / "03_attention.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and c.metadata["nbgrader"].get("solution")]
    return student_namespace(*cells)


CHECKS = {"scaled_dot_product_attention": checks.check_scaled_dot_product_attention,
          "causal_mask": checks.check_causal_mask, "split_heads": checks.check_split_heads,
          "merge_heads": checks.check_merge_heads, "multi_head_attention": checks.check_multi_head_attention,
          "find_name_mover": checks.check_find_name_mover}
REFERENCES = {name: getattr(attention, name, None) for name in CHECKS} | {"find_name_mover": ioi.name_mover}


@pytest.mark.parametrize("name", CHECKS)
def test_check_passes_the_solution(name, capsys):
    CHECKS[name](solution_namespace()[name])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("name", CHECKS)
def test_check_refuses_the_reference_and_wrappers(name):
    reference = REFERENCES[name]
    module = "ioi" if name == "find_name_mover" else "attention"
    attr = reference.__name__
    ns = student_namespace(f"import llmcourse.{module} as M\ndef f(*args):\n    return M.{attr}(*args)\n"
                           f"def g(*args):\n    return f(*args)")
    for fn in [reference, lambda *a: reference(*a), ns["f"], ns["g"]]:
        with pytest.raises(AssertionError, match="reference implementation"):
            CHECKS[name](fn)


@pytest.mark.parametrize("name", CHECKS)
def test_check_says_not_written_yet(name):
    def stub(*args):
        raise NotImplementedError()
    with pytest.raises(AssertionError, match="not written yet"):
        CHECKS[name](stub)


def _planted_function(planted: str, spec: dict) -> str:
    if spec["cell"] != "heads":
        return spec["cell"]
    return "split_heads" if "split" in planted else "merge_heads"


@pytest.mark.parametrize("planted", p03_attention.PLANTED)
def test_check_names_each_planted_mistake(planted):
    spec = p03_attention.PLANTED[planted]
    solution = solution_namespace()
    exec(compile(spec["source"], "<planted>", "exec"), solution)
    name = _planted_function(planted, spec)
    with pytest.raises(AssertionError, match=re.escape(spec["message"])):
        CHECKS[name](solution[name])


def test_wrong_types_and_shapes_are_named():
    with pytest.raises(AssertionError, match=r"should return two tensors, \(output, weights\)"):
        checks.check_scaled_dot_product_attention(lambda q, k, v, mask=None: q @ k.transpose(-2, -1) @ v)
    with pytest.raises(AssertionError, match="in that order"):
        sol = solution_namespace()["scaled_dot_product_attention"]
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
    ns = solution_namespace()
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
        checks.check_find_name_mover(flat_wrong, seeds=(4,), n_prompts=5, n_layers=3, n_heads=2)
