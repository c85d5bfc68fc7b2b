"""The graded checks: they pass correct code, refuse the reference, and name each planted mistake.

These run the checks directly (fast); test_exercises.py runs them through nbgrader.
"""
from __future__ import annotations

import re

import pytest
import torch

from llmcourse import checks, tokens
from planted import p01_tokens


def student_namespace(*sources: str) -> dict:
    """Run code the way a notebook would, with the exercise's setup imports, and return its globals."""
    ns: dict = {"torch": torch, "pretokenize": tokens.pretokenize}
    for src in sources:
        exec(compile(src, "<student>", "exec"), ns)
    return ns


def solution_namespace() -> dict:
    """The solution notebook's code cells, run in one namespace."""
    import nbformat
    from conftest import REPO

    nb = nbformat.read(REPO / "solutions" / "01_tokens" / "01_tokens.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and c.metadata["nbgrader"].get("solution")]
    return student_namespace(*cells)


CHECKS = {"count_pairs": checks.check_count_pairs, "merge": checks.check_merge, "train_bpe": checks.check_train_bpe,
          "encode": checks.check_encode, "decode": checks.check_decode,
          "cosine_similarity": checks.check_cosine_similarity, "sinusoidal_positions": checks.check_sinusoidal_positions}


@pytest.mark.parametrize("name", CHECKS)
def test_check_passes_the_solution(name, capsys):
    CHECKS[name](solution_namespace()[name])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("name", CHECKS)
def test_check_refuses_the_reference_and_wrappers(name):
    reference = getattr(tokens, name)
    wrappers = [reference, lambda *a: reference(*a)]
    ns = student_namespace(f"import llmcourse.tokens as T\ndef f(*args):\n    return T.{name}(*args)\n"
                           f"def g(*args):\n    return f(*args)")
    wrappers += [ns["f"], ns["g"]]
    for fn in wrappers:
        with pytest.raises(AssertionError, match="reference implementation"):
            CHECKS[name](fn)


@pytest.mark.parametrize("name", CHECKS)
def test_check_says_not_written_yet(name):
    def stub(*args):
        raise NotImplementedError()
    with pytest.raises(AssertionError, match="not written yet"):
        CHECKS[name](stub)


@pytest.mark.parametrize("planted", p01_tokens.PLANTED)
def test_check_names_each_planted_mistake(planted):
    spec = p01_tokens.PLANTED[planted]
    solution = solution_namespace()
    exec(compile(spec["source"], "<planted>", "exec"), solution)  # the mistake replaces the solution's cell
    name = {"encode_bytes_only": "encode", "decode_per_token": "decode"}.get(planted, spec["cell"])
    with pytest.raises(AssertionError, match=re.escape(spec["message"])):
        CHECKS[name](solution[name])


def test_wrong_type_shape_and_nan_are_named():
    with pytest.raises(AssertionError, match="should return a torch tensor"):
        checks.check_cosine_similarity(lambda a, b: "0.5")
    with pytest.raises(AssertionError, match="shape"):
        checks.check_cosine_similarity(lambda a, b: (a * b))
    with pytest.raises(AssertionError, match="NaN"):
        checks.check_cosine_similarity(lambda a, b: (a * b).sum(-1) * float("nan"))
    with pytest.raises(AssertionError, match="list of integer token ids"):
        checks.check_merge(lambda ids, pair, new: "oops")



def test_a_crash_is_reported_with_the_call():
    def broken(a, b):
        return a.norm(dim=5)
    with pytest.raises(AssertionError, match=r"cosine_similarity\(<Tensor of shape \(8,\)>.*raised"):
        checks.check_cosine_similarity(broken)


def test_tie_break_message_on_a_real_tie():
    def largest(text, n):
        ns = solution_namespace()
        src = p01_tokens.PLANTED["train_bpe_largest_tie"]["source"]
        exec(src, ns)
        return ns["train_bpe"](text, n)
    with pytest.raises(AssertionError, match="smallest pair"):
        checks.check_train_bpe(largest)
