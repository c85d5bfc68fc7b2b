"""Our skip-gram with negative sampling (llmcourse.vectors) beside gensim's Word2Vec, in one run.

Same corpus (Brown + Shakespeare, 1.93M words), same dimensions, window, negatives, epochs, subsampling,
min_count and threads. Two of ours: `train_sgns`, the readable reference, and `train_sgns_fast`, the same
recipe with each batch's step fused by torch.compile. Its first call in a process compiles the step: that
happens once, apart, on a small corpus, and is a row of its own (the first call's time minus a second call's),
so that no timed run includes it. Rows: words/s of each against gensim's in the same run (the median of several
alternating runs for the fast path, each run's ratio in the note; per processor second too: processor time is
not stretched by other jobs on a shared machine), the compile time, and Google-analogy accuracy (total %;
30,000 most frequent words, as word2vec's compute-accuracy) against gensim's.

    .venv/bin/python benchmarks/word2vec.py            # trains all three now (minutes on 2 cores)
    .venv/bin/python benchmarks/word2vec.py --cached   # the run cached by the book's chapter 02, gensim included
    .venv/bin/python benchmarks/word2vec.py --smoke    # 20,000 words, 1 epoch: checks that the benchmark runs
"""
from __future__ import annotations

import argparse
import time

from llmcourse import vectors

import common  # benchmarks/common.py: scripts here run with benchmarks/ on sys.path
from common import Result

CONFIG = dict(dim=50, window=5, negative=5, epochs=5, min_count=5, sample=1e-3, batch_size=8192, threads=2, seed=0)
SMOKE = dict(max_words=20_000, epochs=1)
WARM_UP_WORDS = 20_000  # the corpus of the two calls that measure the compile time (one epoch each)


def timed(fn) -> dict:
    """fn()'s result, wall-clock and processor seconds (this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    kv = fn()
    return {"kv": kv, "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


def median(values: list[float]) -> float:
    values = sorted(values)
    return (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2


def compile_seconds(config: dict) -> dict:
    """The fast path's step compiles at its first call in a process: two calls on a small corpus, the first
    compiling; the compile time is the difference. Run before any timed run, so that none of them compiles."""
    small = vectors.corpus_sentences(WARM_UP_WORDS)
    calls = [timed(lambda: vectors.train_sgns_fast(small, progress=False, **{**config, "epochs": 1}))
             for _ in range(2)]
    return {"compile": calls[0]["seconds"] - calls[1]["seconds"], "first": calls[0]["seconds"],
            "second": calls[1]["seconds"]}


def measure(config: dict, max_words: int | None, repeats: int) -> dict:
    """gensim, our fast path and our readable one on the same corpus, back to back, after the fast path's step
    has compiled (timed apart): `repeats` alternating runs of gensim and the fast path, whose median is the row
    (each run's ratio goes in the note), and one run of the readable one (several times slower: the ratio does
    not hinge on its noise)."""
    from gensim.models import Word2Vec

    sentences = vectors.corpus_sentences(max_words)
    ours = {k: v for k, v in config.items()}
    compiled = compile_seconds(ours)
    theirs = dict(vector_size=config["dim"], window=config["window"], negative=config["negative"],
                  epochs=config["epochs"], sg=1, hs=0, min_count=config["min_count"], sample=config["sample"],
                  workers=config["threads"], seed=config["seed"])
    runs = {"gensim": [], "fast": []}
    for _ in range(repeats):
        runs["gensim"].append(timed(lambda: Word2Vec(sentences, **theirs).wv))
        runs["fast"].append(timed(lambda: vectors.train_sgns_fast(sentences, progress=False, **ours)))
    steady = {name: {"kv": r[-1]["kv"], **{clock: median([x[clock] for x in r])
                                           for clock in ("seconds", "cpu_seconds")}} for name, r in runs.items()}
    steady["readable"] = timed(lambda: vectors.train_sgns(sentences, progress=False, **ours))
    steady["gensim beside readable"] = timed(lambda: Word2Vec(sentences, **theirs).wv)
    steady["pairwise"] = [g["seconds"] / f["seconds"] for g, f in zip(runs["gensim"], runs["fast"])]
    steady["compile"] = compiled
    return {"runs": steady, "words": sum(map(len, sentences))}


def from_chapter(config: dict) -> dict:
    """The chapter's run (`vectors.word2vec_run`: gensim and the fast path, as shipped), in `measure`'s form."""
    book = vectors.word2vec_run(**config, fast=True)
    runs = {name: {"kv": book[key], "seconds": book["seconds"][key], "cpu_seconds": None}
            for name, key in (("gensim", "gensim"), ("fast", "ours"))}
    return {"runs": runs, "words": book["words"]}


def run(smoke: bool = False, cached: bool = False, repeats: int = 3) -> list[Result]:
    config = {**CONFIG, "epochs": SMOKE["epochs"]} if smoke else dict(CONFIG)
    if cached and not smoke:
        result = from_chapter(config)
    else:
        result = measure(config, SMOKE["max_words"] if smoke else None, 1 if smoke else repeats)
    runs, words = result["runs"], result["words"] * config["epochs"]
    setting = (f"{result['words'] / 1e6:.2f}M-word corpus x {config['epochs']} epochs, d={config['dim']}, "
               f"{config['threads']} threads")
    rows = []
    for name, label in (("readable", "readable train_sgns"), ("fast", "train_sgns_fast")):
        if name not in runs:
            continue
        r, gensim = runs[name], runs["gensim beside readable" if name == "readable" else "gensim"]
        note = "the chapter's cached run" if cached and not smoke else \
            f"per processor second: {gensim['cpu_seconds'] / r['cpu_seconds']:.2f}x"
        if name == "readable" and not (cached and not smoke):
            note += "; gensim run right after it"
        if name == "fast" and "pairwise" in runs:
            pairwise = ", ".join(f"{x:.2f}" for x in runs["pairwise"])
            note += (f"; median of {len(runs['pairwise'])} alternating runs with gensim, compiled beforehand "
                     f"(ratio run by run: {pairwise})")
        rows.append(Result("word2vec", f"words/s, {label} ({setting})", words / r["seconds"],
                           words / gensim["seconds"], "gensim 4.4.0 Word2Vec(sg=1)", "words/s", note=note))
    if "compile" in runs:
        c = runs["compile"]
        rows.append(Result("word2vec", "compile time of train_sgns_fast's step (torch.compile, once per process)",
                           c["compile"], unit="s", higher_is_better=False,
                           note=f"first call {c['first']:.1f} s minus a second call {c['second']:.1f} s, "
                                f"{WARM_UP_WORDS:,} words x 1 epoch; counted in no words/s row"))
    acc = {name: vectors.google_analogy_accuracy(runs[name]["kv"]) for name in ("gensim", "fast", "readable")
           if name in runs}
    for name, label in (("readable", "readable train_sgns"), ("fast", "train_sgns_fast")):
        if name in acc:
            rows.append(Result("word2vec", f"Google analogy total %, {label} ({setting})", acc[name]["total %"],
                               acc["gensim"]["total %"], "gensim 4.4.0 Word2Vec(sg=1)", "%",
                               note=f"semantic {acc[name]['semantic %']:.1f} vs {acc['gensim']['semantic %']:.1f}, "
                                    f"syntactic {acc[name]['syntactic %']:.1f} vs "
                                    f"{acc['gensim']['syntactic %']:.1f}; {acc[name]['skipped %']:.0f}% skipped"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached", action="store_true", help="reuse the chapter's cached run (same config)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of gensim and the fast path")
    args = parser.parse_args()
    print(common.machine())
    print(common.table(run(args.smoke, args.cached, args.repeats)))


if __name__ == "__main__":
    main()
