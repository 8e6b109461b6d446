"""What llama.cpp itself can do on this machine, without a server: the bound on any batching.

For each bundled GGUF, through the backend the engine uses (`LlamaCppModel`): milliseconds per
decode step with 1, 4, 8 and 16 sequences (one token each, per-sequence caches, ids in order),
and the throughput of one 512-token pass that keeps the logits of every token, as decoding
must. `@8 / @1` is the most any scheduler can make of 8 streams over one; the 512-token pass
bounds what any batch size could. Last, 16 prompts of 24 tokens each (16 streams arriving
together): milliseconds to write them one pass each, and in one pass (the engine's merged prefill
of equal-length chunks). Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from bench_generation import MODELS  # this script's folder is on sys.path when run as a script

from aios_serve.backends.llama_cpp.model import LlamaCppModel
from aios_serve.backends.protocols.generation import BatchItem
from aios_serve.models.bundled import resolve_bundled

BATCHES = (1, 4, 8, 16)


def step_ms(model: LlamaCppModel, prompt: list[int], sequences: int, steps: int) -> float:
    """Median milliseconds of one decode step over `sequences` sequences after a shared prompt."""
    for seq_id in range(model.max_sequences):
        model.remove_sequence(seq_id)
    for seq_id in range(sequences):
        model.decode([BatchItem(list(prompt), 0, [seq_id])])
    tokens = [prompt[-1]] * sequences
    position = len(prompt)
    times = []
    for _ in range(steps):
        items = [BatchItem([tokens[s]], position, [s]) for s in range(sequences)]
        start = time.perf_counter()
        model.decode(items)
        times.append(time.perf_counter() - start)
        tokens = [int(np.argmax(item.logits)) for item in items]
        position += 1
    return statistics.median(times[4:]) * 1000


def prefill_tps(model: LlamaCppModel, tokens: list[int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        model.remove_sequence(0)
        start = time.perf_counter()
        model.decode([BatchItem(tokens, 0, [0], want_all_logits=True)])
        rates.append(len(tokens) / (time.perf_counter() - start))
    return statistics.median(rates)


def prompts_ms(model: LlamaCppModel, prompts: list[list[int]], merged: bool, repeats: int) -> float:
    """Median milliseconds to prefill every prompt (logits of each last token), merged or not."""
    times = []
    for _ in range(repeats):
        for seq_id in range(len(prompts)):
            model.remove_sequence(seq_id)
        items = [BatchItem(p, 0, [seq_id], want_logits=True) for seq_id, p in enumerate(prompts)]
        start = time.perf_counter()
        if merged:
            model.decode(items)
        else:
            for item in items:
                model.decode([item])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    print(
        "| model | ms/step @1 | @4 | @8 | @16 | tok/s @1 | @8 | @16 | @8 / @1 "
        "| 512 tokens with logits, tok/s | that / @1 | 16x24-token prompts, ms: one pass each | merged |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for bundled in args.models:
        model = LlamaCppModel(
            Path(resolve_bundled(bundled)),
            context_length=4096,
            kv_cells=None,
            max_sequences=16,
            max_batch_tokens=512,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            flash_attn=True,
        )
        prompt = model.tokenize("Write a long story about a river and a stone in a garden.", True)
        ms = {n: step_ms(model, prompt, n, args.steps) for n in BATCHES}
        long_prompt = model.tokenize(" ".join(["river stone cloud garden"] * 200), False)[:512]
        prefill = prefill_tps(model, long_prompt, 3)
        prompts = [
            model.tokenize(" ".join(["river stone cloud garden"] * 20), False)[i : i + 24] for i in range(16)
        ]
        apart, merged = (prompts_ms(model, prompts, merge, 3) for merge in (False, True))
        single = 1000 / ms[1]
        print(
            f"| {MODELS[bundled]} | {ms[1]:.1f} | {ms[4]:.1f} | {ms[8]:.1f} | {ms[16]:.1f} | {single:.0f} "
            f"| {8000 / ms[8]:.0f} | {16000 / ms[16]:.0f} | {8 * ms[1] / ms[8]:.2f}x | {prefill:.0f} "
            f"| {prefill / single:.2f}x | {apart:.0f} | {merged:.0f} |"
        )
        model.close()
    print(f"\nthreads={args.threads}; load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
