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


def timed(fn) -> dict:
    """fn()'s tokens, wall-clock and processor seconds (the processor time of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = fn()
    return {"tokens": tokens, "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


def loops(n_new: int, threads: int, repeats: int) -> dict:
    """Our loop with and without the cache, and transformers' `generate` with its cache: the best of `repeats`
    alternating runs of the two cached loops (other work on a shared machine only ever makes a run slower),
    and one run without the cache (it is several times slower; the ratio does not hinge on its noise)."""
    model, tokenizer = data.smollm2()
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    ours = lambda cache: generate.generate_hf(model, ids, n_new, temperature=0, cache=cache)["tokens"]  # noqa: E731

    def peer():
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return out[0, ids.shape[1]:].tolist()

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = {"cached": [], "peer": []}
        for _ in range(repeats):
            runs["cached"].append(timed(lambda: ours(True)))
            runs["peer"].append(timed(peer))
        best = {name: min(r, key=lambda x: x["seconds"]) for name, r in runs.items()}
        best["uncached"] = timed(lambda: ours(False))
    finally:
        torch.set_num_threads(before)
    return best


def run(smoke: bool = False, tokens: int = 200, threads: int = 2, cached: bool = False,
        repeats: int = 3) -> list[Result]:
    n_new = 3 if smoke else tokens
    if cached and not smoke:   # the chapter's one run of our two loops, and the peer now
        book = data.cached(generate.kv_cache_benchmark, prompt=PROMPT, n_new=n_new,
                           **({"threads": threads} if threads != 2 else {}))
        best = {**loops(n_new, threads, 1), "cached": book["cached"], "uncached": book["uncached"]}
    else:
        best = loops(n_new, threads, 1 if smoke else repeats)
    rate = {name: (n_new / r["seconds"], n_new / r["cpu_seconds"]) for name, r in best.items()}
    same = best["cached"]["tokens"] == best["uncached"]["tokens"] == best["peer"]["tokens"]
    setting = f"SmolLM2-135M, {n_new} greedy tokens, {threads} threads"
    return [
        Result("generation", f"KV cache speed-up: tokens/s with cache ({setting})", rate["cached"][0],
               rate["uncached"][0], "the same loop without a cache", "tokens/s",
               note=f"per processor second: {rate['cached'][1] / rate['uncached'][1]:.1f}x; "
                    f"{'same tokens' if same else 'THE TOKENS DIFFER'}"),
        Result("generation", f"our cached loop (chapter 05) vs transformers' generate ({setting})",
               rate["cached"][0], rate["peer"][0], "transformers `model.generate`", "tokens/s",
               note=f"best of {1 if smoke else repeats} alternating runs; per processor second: "
                    f"{rate['cached'][1] / rate['peer'][1]:.2f}x"),
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
