"""SmolLM2-135M writing greedy tokens with and without its KV cache, in one run (llmcourse.generate), beside
transformers' own `generate` (with its cache) on the same prompt.

Rows: the KV cache's speed-up (our loop with the cache against the same loop without it: the speed-up chapter
05_gpt explains), and our cached loop against `model.generate` (the peer). Rates are tokens per processor
second of this process as well as per wall-clock second: processor time is not stretched by other jobs on a
shared machine. Report ratios: absolute rates depend on the machine.

    .venv/bin/python benchmarks/kv_cache.py              # runs the loops now (minutes on 2 cores)
    .venv/bin/python benchmarks/kv_cache.py --cached     # our two loops from the book's chapter 05 cache
    .venv/bin/python benchmarks/kv_cache.py --smoke      # 3 tokens: checks that the benchmark runs
"""
from __future__ import annotations

import argparse
import time

import torch

from llmcourse import data, generate

import common  # benchmarks/common.py: scripts here run with benchmarks/ on sys.path
from common import Result

PROMPT = "How do I get started with machine learning?\n"   # chapter 05_gpt's prompt


def peer_generate(n_new: int, threads: int) -> dict:
    """transformers' `model.generate`, greedy, with its cache: the same tokens, timed like ours."""
    model, tokenizer = data.smollm2()
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        torch.set_num_threads(before)
    return {"tokens": out[0, ids.shape[1]:].tolist(), "seconds": wall, "cpu_seconds": cpu}


def run(smoke: bool = False, tokens: int = 200, threads: int = 2, cached: bool = False) -> list[Result]:
    n_new = 3 if smoke else tokens
    settings = dict(prompt=PROMPT, n_new=n_new, **({"threads": threads} if threads != 2 else {}))
    ours = data.cached(generate.kv_cache_benchmark, **settings) if cached and not smoke else \
        generate.kv_cache_benchmark(**settings)
    peer = peer_generate(n_new, threads)
    rate = {name: (n_new / r["seconds"], n_new / r["cpu_seconds"])
            for name, r in [("cached", ours["cached"]), ("uncached", ours["uncached"]), ("peer", peer)]}
    same = "same tokens" if ours["same tokens"] and peer["tokens"] == ours["cached"]["tokens"] else \
        "THE TOKENS DIFFER"
    setting = f"SmolLM2-135M, {n_new} greedy tokens, {threads} threads"
    return [
        Result("generation", f"KV cache speed-up: tokens/s with cache ({setting})", rate["cached"][0],
               rate["uncached"][0], "the same loop without a cache", "tokens/s",
               note=f"per processor second: {rate['cached'][1] / rate['uncached'][1]:.1f}x; {same}"),
        Result("generation", f"our cached loop (chapter 05) vs transformers' generate ({setting})",
               rate["cached"][0], rate["peer"][0], "transformers `model.generate`", "tokens/s",
               note=f"per processor second: {rate['cached'][1] / rate['peer'][1]:.2f}x"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached", action="store_true", help="reuse the chapter's cached run (same settings)")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    print(common.machine())
    print(common.table(run(args.smoke, args.tokens, args.threads, args.cached)))


if __name__ == "__main__":
    main()
