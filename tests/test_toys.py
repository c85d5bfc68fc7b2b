"""The trained toy models that ship inside the package (llmcourse/toys/), for exercises 03 and 04: small, fresh
(retraining with the chapter's config gives the very same weights), and what the exercises' last tasks read."""
from __future__ import annotations

import importlib

import pytest
import torch

from llmcourse import data, facts, ffn, ioi

SHIPPED = [importlib.import_module(f"llmcourse.{name}") for name in data.SHIPPED]
FIX = "retrain and rewrite them with `PYTHONPATH=src python -m llmcourse.data`, then commit llmcourse/toys/"


@pytest.mark.parametrize("module", SHIPPED, ids=data.SHIPPED)
def test_shipped_weights_are_small(module):
    path = data.toy_path(module.train)
    assert path.stat().st_size < 500 * 1024, f"{path} is {path.stat().st_size / 1024:.0f} KiB: too large to ship"


@pytest.mark.parametrize("module", SHIPPED, ids=data.SHIPPED)
def test_shipped_weights_are_not_stale(module):
    """Keyed like the cache, by the training module's source and the config: any change there means a new file."""
    saved = data.shipped(module.train, **module.CHAPTER_CONFIG)
    assert saved["key"] == data.cache_key(module.train, module.CHAPTER_CONFIG), (
        f"{data.toy_path(module.train)} was trained by another version of llmcourse.{module.__name__.split('.')[-1]} "
        f"or another config: {FIX}")


@pytest.mark.parametrize("module", SHIPPED, ids=data.SHIPPED)
def test_retraining_reproduces_the_shipped_weights(module):
    """Training is seeded and single-threaded: the chapter's run (cached, else trained here: a minute or two)."""
    saved = data.shipped(module.train, **module.CHAPTER_CONFIG)
    trained = data.cached(module.train, **module.CHAPTER_CONFIG)
    assert saved["config"] == trained["config"]
    assert saved["state"].keys() == trained["state"].keys()
    for name, tensor in trained["state"].items():
        assert torch.equal(saved["state"][name], tensor), f"weights {name} differ from a fresh training run: {FIX}"


def test_ioi_toy_finds_its_name_mover_by_looking_and_by_ablation():
    """Exercise 03's last task: the rule (weight on IO minus weight on S, at each sentence's "to") picks the head
    whose ablation costs most, and no other head costs half as much."""
    effects = ioi.toy_head_effects()
    drop = effects["drop"]
    best = divmod(int(drop.argmax()), drop.shape[1])
    assert effects["logit_diff"] > 5
    assert sorted(drop.flatten().tolist())[-2] < 0.5 * drop.max()
    for n, seed in [(24, 7), (40, 1)]:              # the cases of the exercise's test cells
        toy = ioi.toy_attention(n, seed)
        assert toy["attention"].shape == (n, 2, 4, int(toy["end"].max()) + 1, int(toy["end"].max()) + 1)
        assert ioi.name_mover(toy["attention"], toy["io_pos"], toy["s_pos"], toy["end"]) == best


def test_facts_toy_memory_inputs_give_the_chapters_attribution():
    """Exercise 04's last task ranks memories by a_li (W2_l[i] . directions_l): the chapter's activation x gradient."""
    inputs = facts.memory_inputs("Poland")
    assert inputs["answer"] == facts.ID["Warsaw"]
    attribution = facts.fact_attribution(facts.toy_model(), "Poland")
    assert facts.top_fact_memories(inputs, 20) == ffn.top_memories(attribution, 20)
