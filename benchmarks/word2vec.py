"""Our skip-gram with negative sampling (llmcourse.vectors) beside gensim's Word2Vec, in one run.

Same corpus (Brown + Shakespeare, 1.93M words), same dimensions, window, negatives, epochs, subsampling,
min_count and threads. Prints words/s of each, their ratio, and Google-analogy accuracy (semantic, syntactic,
total; 30,000 most frequent words, as word2vec's compute-accuracy). Not part of the tests.

    .venv/bin/python benchmarks/word2vec.py            # trains both now (a few minutes on 2 cores)
    .venv/bin/python benchmarks/word2vec.py --cached   # reuses the run cached by the book's chapter 02
"""
from __future__ import annotations

import argparse

from llmcourse import data, vectors

CONFIG = dict(dim=50, window=5, negative=5, epochs=5, min_count=5, sample=1e-3, batch_size=8192, threads=2, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached", action="store_true", help="reuse the chapter's cached run (same config)")
    parser.add_argument("--epochs", type=int, default=CONFIG["epochs"])
    args = parser.parse_args()
    config = {**CONFIG, "epochs": args.epochs}
    run = data.cached(vectors.train_both, **config) if args.cached else vectors.train_both(**config)
    print(f"corpus {run['words']:,} words; " + ", ".join(f"{k}={v}" for k, v in config.items()))
    print(f"| {'':6} | {'seconds':>7} | {'words/s':>9} | {'ratio':>5} | {'semantic %':>10} | {'syntactic %':>11} | {'total %':>7} | {'skipped %':>9} |")
    print("|" + "|".join("-" * (w + 2) for w in (6, 7, 9, 5, 10, 11, 7, 9)) + "|")
    speed = {k: run["epochs"] * run["words"] / s for k, s in run["seconds"].items()}
    for name in ["ours", "gensim"]:
        acc = vectors.google_analogy_accuracy(run[name])
        print(f"| {name:6} | {run['seconds'][name]:7.1f} | {speed[name]:9,.0f} | {speed[name] / speed['gensim']:5.2f} | "
              f"{acc['semantic %']:10.1f} | {acc['syntactic %']:11.1f} | {acc['total %']:7.1f} | {acc['skipped %']:9.1f} |")


if __name__ == "__main__":
    main()
