"""The graded checks of 02_word2vec: they pass correct code, refuse the reference, and name each planted mistake.

These run the checks directly (fast); test_exercises.py runs them through nbgrader.
"""
from __future__ import annotations

import re

import nbformat
import pytest
import torch

from conftest import REPO
from llmcourse import checks, vectors
from planted import p02_word2vec


def student_namespace(*sources: str) -> dict:
    """Run code the way the notebook would, with the exercise's setup imports, and return its globals."""
    ns: dict = {"torch": torch, "build_vocab": vectors.build_vocab, "skipgram_pairs": vectors.skipgram_pairs,
                "synthetic_corpus": vectors.synthetic_corpus, "synthetic_analogies": vectors.synthetic_analogies}
    for src in sources:
        exec(compile(src, "<student>", "exec"), ns)
    return ns


def solution_sources() -> dict[str, str]:
    nb = nbformat.read(REPO / "solutions" / "02_word2vec" / "02_word2vec.ipynb", as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.cell_type == "code" and c.metadata["nbgrader"].get("solution")}


def solution_namespace(**replace: str) -> dict:
    """The solution's code cells in one namespace, with some cells (by grade_id) replaced."""
    return student_namespace(*{**solution_sources(), **replace}.values())


CHECKS = {"sgns_loss": checks.check_sgns_loss, "sgns_gradients": checks.check_sgns_gradients,
          "negative_distribution": checks.check_negative_distribution, "train_step": checks.check_train_step,
          "analogy": checks.check_analogy, "evaluate_analogies": checks.check_evaluate_analogies,
          "train": checks.check_train}
FAST = [name for name in CHECKS if name != "train"]


@pytest.mark.parametrize("name", CHECKS)
def test_check_passes_the_solution(name, capsys):
    CHECKS[name](solution_namespace()[name])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("name", CHECKS)
def test_check_refuses_the_reference_and_wrappers(name):
    reference = getattr(vectors, name)
    ns = student_namespace(f"import llmcourse.vectors as V\ndef f(*args):\n    return V.{name}(*args)\n"
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


PLANTED_FUNCTION = {"analogy_keeps_query_words": "analogy", "analogy_not_normalised": "analogy",
                    "evaluate_counts_unknown": "evaluate_analogies"}


@pytest.mark.parametrize("planted", p02_word2vec.PLANTED)
def test_check_names_each_planted_mistake(planted):
    spec = p02_word2vec.PLANTED[planted]
    ns = solution_namespace(**{spec["cell"]: spec["source"]})
    name = PLANTED_FUNCTION.get(planted, spec["cell"])
    with pytest.raises(AssertionError, match=re.escape(spec["message"])):
        CHECKS[name](ns[name])


def test_other_mistakes_are_named():
    ns = solution_namespace()
    logsig = torch.nn.functional.logsigmoid
    with pytest.raises(AssertionError, match="sum the loss over the batch"):
        checks.check_sgns_loss(lambda u, v, n: -(logsig((u * v).sum(-1)) + logsig(-(n * u[:, None]).sum(-1)).sum(-1)).mean())
    with pytest.raises(AssertionError, match="gradients of the log-likelihood"):
        checks.check_sgns_gradients(lambda u, v, n: tuple(-g for g in ns["sgns_gradients"](u, v, n)))
    with pytest.raises(AssertionError, match="sign error in the negatives' term"):
        checks.check_sgns_gradients(lambda u, v, n: (
            (torch.sigmoid((u * v).sum(-1)) - 1)[:, None] * v + ((torch.sigmoid((n * u[:, None]).sum(-1)) - 1)[..., None] * n).sum(1),
            (torch.sigmoid((u * v).sum(-1)) - 1)[:, None] * u,
            (torch.sigmoid((n * u[:, None]).sum(-1)) - 1)[..., None] * u[:, None]))
    with pytest.raises(AssertionError, match="raise the counts to the power"):
        checks.check_negative_distribution(lambda c, p=0.75: c.double() / c.sum())

    def ascent(W_in, W_out, c, o, n, lr):
        return ns["train_step"](W_in, W_out, c, o, n, -lr)
    with pytest.raises(AssertionError, match="went UP the gradient"):
        checks.check_train_step(ascent)

    def reversed_analogy(E, words, a, b, c, topn=5):
        return ns["analogy"](E, words, b, a, c, topn)
    with pytest.raises(AssertionError, match="not a − b \\+ c"):
        checks.check_analogy(reversed_analogy)


@pytest.mark.parametrize("name", FAST)
def test_every_mistake_variant_differs_from_the_answer(name):
    """A mistake message is only reachable if the mistake changes the output on the visible cases."""
    if name == "analogy":
        for args in checks.vectors._analogy_cases():
            want = vectors.analogy(*args)
            assert any(v != want for v in checks.vectors._analogy_variants(*args).values())


def test_wrong_type_shape_and_nan_are_named():
    with pytest.raises(AssertionError, match="tuple of torch tensors"):
        checks.check_sgns_gradients(lambda u, v, n: 0.5)
    with pytest.raises(AssertionError, match="shape"):
        checks.check_sgns_loss(lambda u, v, n: (u * v).sum(-1))
    with pytest.raises(AssertionError, match="NaN"):
        checks.check_negative_distribution(lambda c, p=0.75: c.double() * float("nan"))
    with pytest.raises(AssertionError, match="list of words"):
        checks.check_analogy(lambda *a: 3)
    with pytest.raises(AssertionError, match="three integers"):
        checks.check_evaluate_analogies(lambda E, w, q: 0.5)
