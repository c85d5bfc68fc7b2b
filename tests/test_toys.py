"""The trained toy models that ship inside the package (llmcourse/toys/), for exercises 03 and 04: small, fresh
(the book's own training run, seeded), and what the exercises' last tasks read."""
from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path

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


def books_run(module) -> dict:
    """The chapter's training run of `module` as the book reads it: the shipped cache's entry under its key."""
    entry = data.SHIPPED_CACHE / f"{data.cache_name(module.train, module.CHAPTER_CONFIG)}.pkl"
    assert entry.exists(), f"the shipped cache has no training run under the key of {data.toy_path(module.train)}: {FIX}"
    return pickle.loads(entry.read_bytes())


@pytest.mark.parametrize("module", SHIPPED, ids=data.SHIPPED)
def test_shipped_weights_are_the_books_training_run(module):
    """The weights the exercises open (toys/<module>.pt) are the run the book reads from the shipped cache, under
    the same key (the training module's source and the config).

    A fresh training run is not compared with them bit for bit: training is seeded and single-threaded and gives
    the same weights again on one kind of processor, but float rounding differs between processors (retrained on
    an Intel Xeon, the weights shipped from an AMD EPYC drift apart over the 2,000 steps). The next test checks
    the training itself, on any processor."""
    saved = data.shipped(module.train, **module.CHAPTER_CONFIG)
    book = books_run(module)
    assert saved["config"] == book["config"] and saved["state"].keys() == book["state"].keys()
    for name, tensor in book["state"].items():
        assert torch.equal(saved["state"][name], tensor), f"weights {name} are not the book's training run: {FIX}"


@pytest.mark.parametrize("module", SHIPPED, ids=data.SHIPPED)
def test_training_is_seeded_and_starts_where_the_shipped_run_started(module):
    """Twenty steps of the chapter's training, twice: the same weights (seeded, one thread), and a first loss (the
    initial weights on the first batch, before any step) equal to the shipped run's within float rounding."""
    config = {**module.CHAPTER_CONFIG, "steps": 20, "progress": False}  # one warm-up step at least
    first, second = module.train(**config), module.train(**config)
    for name, tensor in first["state"].items():
        assert torch.equal(second["state"][name], tensor), f"two seeded runs give different weights {name}"
    book = books_run(module)
    assert first["losses"][0] == pytest.approx(book["losses"][0], rel=1e-5), (
        f"the first loss {first['losses'][0]:.6f} is not the shipped run's {book['losses'][0]:.6f}: another model, "
        f"initialisation or data: {FIX}")


SHIPPED_CACHE = data.shipped_cache_entries()
BESIDE_THE_BOOK = data.shipped_cache_entries(data.BOOK_SHIPPED_CACHE)
FIX_CACHE = ("build the book (`make book`), then rewrite the shipped cache with `PYTHONPATH=src python -m "
             "llmcourse.data --ship-cache` and commit llmcourse/toys/cache/ and book/cache/")


def test_the_shipped_cache_holds_the_books_longest_computations():
    shipped = {note["fn"] for _, note in SHIPPED_CACHE}
    assert shipped == set(data.SHIP_CACHE), (
        f"the shipped cache lacks {sorted(set(data.SHIP_CACHE) - shipped)} and holds {sorted(shipped - set(data.SHIP_CACHE))} "
        f"beyond data.SHIP_CACHE: {FIX_CACHE}")
    sizes = {pkl.name: pkl.stat().st_size for pkl, _ in SHIPPED_CACHE}
    # chapter 2's word2vec run (two models' vectors, 16-bit) is the one large entry: 4 MB instead of two minutes of
    # CPU in every cold build; nothing else may grow past a few hundred KiB
    limit = {name: (4.5 if name.startswith("llmcourse.vectors.compact_run-") else 0.6) * 2**20 for name in sizes}
    assert all(sizes[name] < limit[name] for name in sizes), {n: s for n, s in sizes.items() if s >= limit[n]}
    assert sum(sizes.values()) < 7 * 2**20, sizes


def test_what_must_not_reach_students_ships_beside_the_book_not_in_the_package():
    """Exercise 08's trained GPT ships in book/cache (the repository), never in llmcourse/ (the kit's wheel and the
    grading kernel's copy are made from the package)."""
    assert {note["fn"] for _, note in BESIDE_THE_BOOK} == set(data.SHIP_CACHE_BESIDE_THE_BOOK), FIX_CACHE
    package = Path(data.__file__).resolve().parent
    assert package not in data.BOOK_SHIPPED_CACHE.resolve().parents
    assert not set(data.SHIP_CACHE) & set(data.SHIP_CACHE_BESIDE_THE_BOOK)
    assert not [p for p in package.rglob("*.pkl") if "yourgpt" in p.name], "the trained GPT is in the package"


@pytest.mark.parametrize("entry", SHIPPED_CACHE + BESIDE_THE_BOOK,
                         ids=[pkl.stem.split("-")[0] for pkl, _ in SHIPPED_CACHE + BESIDE_THE_BOOK])
def test_the_shipped_cache_is_not_stale(entry):
    """An entry is read only under its key (module source and config): a stale one would make the book compute
    it again, slowly. A changed module means new entries."""
    pkl, note = entry
    assert data.is_fresh(note, pkl.stem), f"{pkl.name} was computed by another version of {note['fn']}: {FIX_CACHE}"


def test_the_cache_reads_a_shipped_entry_under_its_key_only(tmp_path, monkeypatch):
    """`cached` reads the shipped entry of fn(**config) and computes anything else (another config, or a module
    that changed since: its key differs)."""
    calls = []

    def square(x):
        calls.append(x)
        return x * x

    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(data, "SHIPPED_CACHE", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    name = data.cache_name(square, {"x": 3})
    (tmp_path / "shipped" / f"{name}.pkl").write_bytes(pickle.dumps("from the shipped cache"))
    assert data.cached(square, x=3) == "from the shipped cache" and calls == []
    assert data.cached(square, x=4) == 16 and calls == [4]
    assert json.loads((tmp_path / "cache" / f"{name}.json").read_text()) == {
        "fn": f"{square.__module__}.{square.__qualname__}", "config": {"x": 3}}


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
