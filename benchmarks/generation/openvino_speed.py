"""The openvino engine (OpenVINO's paged-attention model under our loop) against our llama.cpp
engine on the same GGUF, in process (no HTTP, 2 threads).

Per bundled chat model, the engines loaded at once (openvino once per `--weights-type`, named
`openvino` or, with several, `openvino-<type>`): decode tok/s of one stream and aggregate
tok/s of 16 streams (128 tokens, EOS ignored, greedy), run in turns (the engine order reversed
every round) and reported as medians over `--rounds`. Then the prefix cache: the time to first
token of a prompt of `--prefix-words` words (600: 625-680 tokens) new to the engine, and of a
second one that shares all but its last question with it (medians; llama.cpp keeps no prefix
cache across requests).

    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_speed.py --rounds 3 \
        [--precision bf16] [--weights-type gguf q8_0 f16] [--models NAME|FILE.gguf ...] \
        [--prefix-words 950]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from openvino_precision import chat_ids, greedy_tokens, model_path, openvino_engine, speed
from servers import machine

from aios_serve.backends.llama_cpp import LlamaCppModel, LlamaCppVocab
from aios_serve.engine.generation.interface import EngineClient
from aios_serve.engine.generation.local import LocalEngine

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
STREAMS = (1, 16)
THREADS = 2


def _engines(path: Path, precision: str, weights_types: list[str]) -> dict[str, EngineClient]:
    llama = LlamaCppModel(
        path,
        context_length=2048,
        kv_cells=None,
        max_sequences=16,
        max_batch_tokens=512,
        n_threads=THREADS,
        n_threads_batch=THREADS,
    )
    several = len(weights_types) > 1
    engines = {
        f"openvino-{kind}" if several else "openvino": openvino_engine(path, precision, THREADS, kind)
        for kind in weights_types
    }
    return {
        **engines,
        "llama.cpp": LocalEngine(
            llama, name=path.stem, engine_name="llama.cpp", kv_cells=llama.kv_cells, max_queued=1024
        ),
    }


async def _model(
    name: str, precision: str, rounds: int, max_tokens: int, weights_types: list[str], prefix_words: int
) -> None:
    path = model_path(name)
    engines = await asyncio.to_thread(_engines, path, precision, weights_types)
    for engine in engines.values():
        await engine.start()
    try:
        vocab = LlamaCppVocab(path)
        prompt = chat_ids(vocab, "Write a long story about a lighthouse keeper.")
        for engine_name, engine in engines.items():  # warm-up: first-call compilation
            if engine_name != "llama.cpp":
                await speed(engine, prompt, 2, 8)
        speeds: dict[tuple[str, int], list[float]] = {}
        names = list(engines)
        for round_index in range(rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for streams in STREAMS:
                for engine_name in order:
                    figure = await speed(engines[engine_name], prompt, streams, max_tokens)
                    speeds.setdefault((engine_name, streams), []).append(figure)
        print(f"\n### {name}: {rounds} rounds, {max_tokens} tokens, {THREADS} threads")
        for engine_name, engine in engines.items():
            if engine_name != "llama.cpp":
                print(f"{engine_name}: {engine.engine_details}")
        print("| engine | 1 stream tok/s | 16 streams tok/s |")
        print("|---|---|---|")
        for engine_name in names:
            figures = [statistics.median(speeds[(engine_name, s)]) for s in STREAMS]
            print(f"| {engine_name} | " + " | ".join(f"{f:.1f}" for f in figures) + " |")
        await _prefix_ttft(engines, vocab, rounds, prefix_words)
    finally:
        for engine in engines.values():
            await engine.stop()


async def _first_token_s(engine: EngineClient, prompt: list[int]) -> float:
    start = time.monotonic()
    _, first, _ = await greedy_tokens(engine, prompt, 1)
    return first - start


async def _prefix_ttft(
    engines: dict[str, EngineClient], vocab: LlamaCppVocab, rounds: int, prefix_words: int
) -> None:
    """TTFT of a new prompt of `prefix_words` words, then of one sharing its prefix; medians over
    rounds."""
    words = ["harbour", "lantern", "tide", "keeper", "storm", "rope", "gull", "beacon", "shore", "night"]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for round_index in range(rounds):
        for engine_name, engine in engines.items():
            document = f"Log {round_index} of {engine_name}: " + " ".join(
                words[(i * 7 + round_index) % len(words)] for i in range(prefix_words)
            )
            first = chat_ids(vocab, f"{document}\n\nWhat happened first?")
            second = chat_ids(vocab, f"{document}\n\nWho kept the light?")
            times[engine_name].append(
                (await _first_token_s(engine, first), await _first_token_s(engine, second))
            )
    print(f"\nprefix cache, prompts of {len(first)} tokens sharing all but the last question:")
    print("| engine | TTFT new prompt, ms | TTFT shared prefix, ms | ratio |")
    print("|---|---|---|---|")
    for engine_name, pairs in times.items():
        new = statistics.median(p[0] for p in pairs) * 1e3
        shared = statistics.median(p[1] for p in pairs) * 1e3
        print(f"| {engine_name} | {new:.0f} | {shared:.0f} | {shared / new:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    parser.add_argument("--prefix-words", type=int, default=600, help="the shared prompt's length in words")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="bundled names or .gguf paths")
    parser.add_argument("--weights-type", nargs="+", choices=["gguf", "q8_0", "f16"], default=["gguf"])
    args = parser.parse_args()
    print(f"machine: {machine()}; OpenVINO precision {args.precision}")
    for name in args.models:
        asyncio.run(
            _model(name, args.precision, args.rounds, args.max_tokens, args.weights_type, args.prefix_words)
        )


if __name__ == "__main__":
    main()
