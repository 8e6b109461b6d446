"""What our numpy sampler costs per engine step: 16 rows of Qwen's 151,936-token vocabulary, each
sampled by its own SequenceSampler as the loop does, per setting; top-p once with the nucleus
taken from the best candidates (today's) and once from a stable sort of the whole row (before),
in turns. Medians over `--rounds` in ms per step; compare with a model step (Qwen2.5-0.5B at 16
sequences: ~57 ms on a 2-core Zen 4, the issue's probe).

    PYTHONPATH=src .venv/bin/python benchmarks/generation/sampling_cost.py
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import numpy as np
from servers import machine

from aios_serve.engine.generation import sampling
from aios_serve.engine.generation.sampling import SamplingParams, SequenceSampler, token_logprobs

VOCAB = 151_936
ROWS = 16

SETTINGS: dict[str, SamplingParams] = {
    "greedy": SamplingParams(max_tokens=1, temperature=0.0),
    "temperature 1": SamplingParams(max_tokens=1, temperature=1.0),
    "temperature 0.7, top_k 50": SamplingParams(max_tokens=1, temperature=0.7, top_k=50),
    "temperature 0.7, top_p 0.95": SamplingParams(max_tokens=1, temperature=0.7, top_p=0.95),
    "temperature 1, min_p 0.05": SamplingParams(max_tokens=1, temperature=1.0, min_p=0.05),
}


def full_sort_nucleus(probs: np.ndarray, top_p: float, min_p: float) -> np.ndarray:
    """The nucleus from a stable sort of the whole row (the sampler before NUCLEUS_CANDIDATES)."""
    order = np.argsort(-probs, kind="stable")
    return order[: sampling._kept(probs[order], top_p, min_p)]


def step_ms(params: SamplingParams, logits: np.ndarray, logprobs: int | None = None) -> float:
    samplers = [SequenceSampler(params, row, []) for row in range(ROWS)]
    start = time.perf_counter()
    for row, sampler in enumerate(samplers):
        token = sampler.sample(logits[row], 0)
        if logprobs is not None:
            token_logprobs(logits[row], token, logprobs)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((ROWS, VOCAB)) * 2.5).astype(np.float32)
    logits[:, :8] += 12  # a few likely tokens, as after a model's softmax
    cases: dict[str, Callable[[], float]] = {
        name: functools.partial(step_ms, params, logits) for name, params in SETTINGS.items()
    }
    cases["greedy + logprobs 5"] = lambda: step_ms(SETTINGS["greedy"], logits, 5)
    fast_nucleus = sampling.nucleus

    def before() -> float:
        sampling.nucleus = full_sort_nucleus  # type: ignore[assignment]
        try:
            return step_ms(SETTINGS["temperature 0.7, top_p 0.95"], logits)
        finally:
            sampling.nucleus = fast_nucleus

    cases["temperature 0.7, top_p 0.95, whole-row sort (before)"] = before
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            times[name].append(case())
    print(f"machine: {machine()}; {ROWS} rows x {VOCAB} logits, median of {args.rounds}")
    print("| setting | ms per step |")
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
