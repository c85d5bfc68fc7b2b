"""Every run-dependent number in a chapter's prose comes from the run.

A number that a reader could check against the executed output, a measured accuracy, a probability, a logit
difference, is glued into the prose (`{glue:text}`) so it cannot drift from what the code printed. This test
reads each chapter's Markdown outside code cells, maths and code spans (a `{glue:text}` role is a code span)
and fails on a number with a decimal point or a percent sign that is not glued, unless it is a constant from
the literature or the sources, listed in `ALLOWED` with where it comes from.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

# (chapter, the number as the prose writes it) -> where it comes from. A number that the chapter computes does
# not belong here: glue it.
LE = "the long explainer (Lee & Trott, 2023)"
ALLOWED: dict[tuple[str, str], str] = {
    # 02_word2vec
    ("02_word2vec", "38.9"): f"{LE}: Washington DC's latitude",
    ("02_word2vec", "40.7"): f"{LE}: New York's latitude",
    ("02_word2vec", "51.5"): f"{LE}: London's latitude",
    ("02_word2vec", "0.1"): f"{LE}: London's longitude",
    ("02_word2vec", "48.9"): f"{LE}: Paris's latitude",
    ("02_word2vec", "2.4"): f"{LE}: Paris's longitude",
    ("02_word2vec", "0.025"): "word2vec's starting learning rate (Mikolov et al., 2013, and its C code)",
    ("02_word2vec", "50.0%"): "Mikolov et al. 2013a, Table 4: semantic accuracy, 300-d skip-gram on 783M words",
    ("02_word2vec", "55.9%"): "Mikolov et al. 2013a, Table 4: syntactic accuracy, 300-d skip-gram on 783M words",
    ("02_word2vec", "65.6%"): "Mikolov et al. 2013a, Table 6: total accuracy, 1000-d skip-gram on 6B words",
    ("02_word2vec", "71.7%"): "Pennington et al. 2014, Table 2: 300-d GloVe on 6B words, total",
    ("02_word2vec", "90%"): "Gonen & Goldberg 2019: clustering accuracy of neutralised vectors (over 90%)",
    # 03_attention
    ("03_attention", "0.10"): "the worked example: 如何's weight on 如何 and on 学习",
    ("03_attention", "0.60"): "the worked example: 如何's weight on 进行 (its 'score')",
    ("03_attention", "0.20"): "the worked example: 如何's weight on 机器",
    ("03_attention", "3.55"): "Wang et al. 2022: GPT-2 small's mean IO-S logit difference",
    **{("03_attention", h): "Wang et al. 2022, their Figure 2: a head of GPT-2 small's IOI circuit (layer.head)"
       for h in ["9.9", "9.6", "10.0", "7.3", "7.9", "8.6", "8.10", "0.1", "0.10", "3.0", "5.5", "6.9", "2.2",
                 "4.11", "10.7", "11.10"]},
    # 04_ffn_memory
    ("04_ffn_memory", "1.2"): f"{LE}: 'about 1.2 billion' weights in one GPT-3 FFN",
    # 05_gpt
    ("05_gpt", "0.7"): "the worked example: its sampling temperature",
    ("05_gpt", "0.60"): "the worked example: 如何's attention weight on 进行",
    ("05_gpt", "15.2%"): "the worked example: its next-word table, 机器",
    ("05_gpt", "12.8%"): "the worked example: its next-word table, 进行",
    ("05_gpt", "11.5%"): "the worked example: its next-word table, 首先",
    ("05_gpt", "0.5"): "the worked example: its cost table's '0.5 s on an A100'",
    ("05_gpt", "175.0"): "Brown et al. 2020, Table 2.1: GPT-3's size in billions",
    # 06_training
    ("06_training", "0.1"): "nanoGPT's weight decay (Karpathy, 2022), the configuration the chapter copies",
    ("06_training", "4.85"): "benchmarks/train_char.py: the recorded nanoGPT run (millions of characters)",
    ("06_training", "1.889"): "benchmarks/train_char.py: the recorded nanoGPT run's validation loss",
    ("06_training", "174.6"): "Brown et al. 2020, Appendix D: GPT-3's parameters in its compute table",
    ("06_training", "3.14"): "Brown et al. 2020, Appendix D: GPT-3's training compute, 3.14e23 FLOPs",
    # 08_your_gpt
    ("08_your_gpt", "1.89"): "benchmarks/train_char.py: the recorded nanoGPT run's validation loss, 1.889",
    # 07_scaling
    ("07_scaling", "1.5"): "Radford et al. 2019 (GPT-2's 1.5 billion parameters); Kaplan et al. 2020's largest",
    ("07_scaling", "0.076"): "Kaplan et al. 2020, equation 1.1: the exponent alpha_N",
    ("07_scaling", "0.095"): "Kaplan et al. 2020, equation 1.2: the exponent alpha_D",
    ("07_scaling", "0.050"): "Kaplan et al. 2020, equation 1.3: the exponent alpha_C^min",
    ("07_scaling", "0.34"): "Hoffmann et al. 2022, section 3.3: Chinchilla's fitted exponent alpha",
    ("07_scaling", "174.6"): "Brown et al. 2020, Appendix D: GPT-3's parameters in its compute table",
    ("07_scaling", "3.14"): "Brown et al. 2020, Appendix D: GPT-3's training compute, 3.14e23 FLOPs",
    ("07_scaling", "1.4"): "Hoffmann et al. 2022 (Chinchilla) and Touvron et al. 2023, Table 2: 1.4T tokens",
    **{("07_scaling", e): "Brown et al. 2020, Table 2.2: epochs elapsed over each dataset in GPT-3's 300B tokens"
       for e in ["2.9", "1.9", "3.4", "0.44", "0.43"]},
    # conclusion
    ("conclusion", "40%"): "Kosinski 2023 (March preprint): davinci-001's share of the false-belief tasks",
    ("conclusion", "90%"): "Kosinski 2023 (March preprint): davinci-003's share of the false-belief tasks",
    ("conclusion", "95%"): "Kosinski 2023: GPT-4's share; Ullman 2023: GPT-3.5's 'chocolate' in the control",
    ("conclusion", "0%"): "Ullman 2023: GPT-3.5's 'popcorn' in the transparent-bag variant",
    ("conclusion", "20%"): "Kosinski 2024 (PNAS): davinci-003 and ChatGPT-3.5 under the stricter test",
    ("conclusion", "75%"): "Kosinski 2024 (PNAS): ChatGPT-4 under the stricter test",
}

_FENCE = re.compile(r"^(```+|~~~+).*?^\1[ \t]*$", re.S | re.M)          # code cells, ```text blocks, directives
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$[^$\n]+\$")
_CODE_SPAN = re.compile(r"(`+)[^`]*?\1")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
_NOT_A_NUMBER = re.compile(                               # ids, links, versions, model names, a paper's parts
    r"arXiv:\S+|https?://\S+|\b[Vv]ersion \S+|\d+(?:\.\d+){2,}|\b[A-Za-z]+-\d[\d.]*\d\b"
    r"|\b(?:[Tt]ables?|[Ff]igures?|[Ss]ections?|[Ee]quations?|[Aa]ppendix)\s+\d[\d.]*"
    r"(?:\s*(?:,|and|to|–)\s*\d[\d.]*)*")
NUMBER = re.compile(r"(?<![\w.])(?:\d[\d,]*(?:\.\d+)?\s?%|\d[\d,]*\.\d+)")


def chapters() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [entry["file"] for entry in toc["chapters"] if entry["file"].startswith("book/")]


def prose(markdown: str) -> str:
    """The Markdown a reader reads as text: no front matter, code, maths or code spans."""
    for pattern in (_FRONT_MATTER, _FENCE, _DISPLAY_MATH, _CODE_SPAN, _INLINE_MATH, _NOT_A_NUMBER):
        markdown = pattern.sub(" ", markdown)
    return markdown


def typed_numbers(markdown: str) -> list[str]:
    """The numbers with a decimal point or a percent sign that the prose writes out by hand."""
    return [m.group().replace(" ", "") for m in NUMBER.finditer(prose(markdown))]


def test_the_detector_finds_typed_numbers_and_ignores_glued_code_and_maths():
    text = """---
kernelspec: {name: python3}
---
Accuracy falls from 99.7% to 47.4 %, p = 0.07 and +4.17, but {glue:text}`acc:.1%` is glued.

```{code-cell} ipython3
print(f"{0.5:.1%}")
```

$$\\sigma = 0.036$$ and $x = 1.5$, `lr=3e-3, 0.025`; head 10 of 12, 2,000 steps, 50% (arXiv:2211.00593).
"""
    assert typed_numbers(text) == ["99.7%", "47.4%", "0.07", "4.17", "50%"]


@pytest.mark.parametrize("chapter", chapters(), ids=lambda c: Path(c).name)
def test_every_number_in_the_prose_is_glued_or_cited(chapter):
    name = Path(chapter).name
    found = typed_numbers((REPO / f"{chapter}.md").read_text(encoding="utf-8"))
    unglued = sorted({n for n in found if (name, n) not in ALLOWED})
    assert not unglued, (f"{chapter}.md types these numbers by hand: {unglued}. Glue them from the run "
                         f"(myst_nb.glue and {{glue:text}}), or, for a constant from a paper or a source, add it "
                         f"to ALLOWED in tests/test_prose.py with its citation.")


def test_every_allowed_number_is_cited_and_still_used():
    texts = {Path(c).name: (REPO / f"{c}.md").read_text(encoding="utf-8") for c in chapters()}
    for (name, number), citation in ALLOWED.items():
        assert citation.strip(), f"{name}: {number} has no citation"
        if name in texts:
            assert number in typed_numbers(texts[name]), f"{name}: {number} is allowed but no longer in the prose"


# The three source texts have one name each, which the intro introduces (book/intro.md, "The three source texts").
SOURCE_NAMES = re.compile(r"(?<!long )(?<!long\n)\bexplainer\b|(?<!short )(?<!short\n)\bvideo\b"
                          r"|\bthe seed\b|\bseed's\b|\(seed\)", re.I)


@pytest.mark.parametrize("chapter", chapters(), ids=lambda c: Path(c).name)
def test_the_sources_go_by_their_names(chapter):
    text = prose((REPO / f"{chapter}.md").read_text(encoding="utf-8"))
    wrong = sorted({m.group() for m in SOURCE_NAMES.finditer(text)})
    assert not wrong, (f"{chapter}.md calls a source {wrong}: say 'the short video', 'the worked example' or "
                       f"'the long explainer', as the intro does")


def test_the_intro_names_the_three_sources():
    intro = (REPO / "book" / "intro.md").read_text(encoding="utf-8")
    for name in ["the short video", "the worked example", "the long explainer"]:
        assert f"**{name}**" in intro, f"the intro does not introduce {name!r}"
