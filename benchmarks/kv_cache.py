"""SmolLM2-135M writing greedy tokens with and without its KV cache, in one run (llmcourse.generate).

Prints tokens per wall-clock and per processor second of each loop, their ratios (processor time is not
stretched by other jobs on a shared machine), and whether both wrote the same tokens. Report the ratio: the
absolute rates depend on the machine and on what else runs on it. Not part of the tests.

    .venv/bin/python benchmarks/kv_cache.py              # runs both loops now (minutes on 2 cores)
    .venv/bin/python benchmarks/kv_cache.py --cached     # reuses the run cached by the book's chapter 05
"""
from __future__ import annotations

import argparse

from llmcourse import data, generate

PROMPT = "How do I get started with machine learning?\n"   # chapter 05_gpt's prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached", action="store_true", help="reuse the chapter's cached run (same settings)")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = dict(prompt=PROMPT, n_new=args.tokens)
    if args.threads != 2:
        settings["threads"] = args.threads
    run = data.cached(generate.kv_cache_benchmark, **settings) if args.cached else \
        generate.kv_cache_benchmark(**settings)
    print(f"| {'loop':9} | {'seconds':>7} | {'tokens/s':>8} | {'ratio':>5} | {'CPU s':>7} | {'tokens/CPU s':>12} | "
          f"{'ratio':>5} |")
    print("|" + "|".join("-" * (w + 2) for w in (9, 7, 8, 5, 7, 12, 5)) + "|")
    for name in ("uncached", "cached"):
        wall, cpu = run[name]["seconds"], run[name]["cpu_seconds"]
        print(f"| {name:9} | {wall:7.1f} | {args.tokens / wall:8.2f} | {run['uncached']['seconds'] / wall:5.1f} | "
              f"{cpu:7.1f} | {args.tokens / cpu:12.2f} | {run['uncached']['cpu_seconds'] / cpu:5.1f} |")
    print(f"same {args.tokens} tokens: {run['same tokens']}")


if __name__ == "__main__":
    main()
