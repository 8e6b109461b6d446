"""The openvino engine (the paged backend under our loop) at each way it can compute on this CPU:
the figures `inference_precision: auto` is chosen by (README, "Inference precision").

Per bundled chat model, each setting loaded at once in this process (no HTTP, 2 threads):
`f32` (the default; int8 activations where the CPU has VNNI), `f32-invariant` (`batch_invariant:
true`) and, where the CPU has native bf16, `bf16` (`--settings` picks others):
- decode tok/s of one stream and aggregate tok/s of 16 streams (128 tokens, EOS ignored), run
  in turns (the order reversed every round) and reported as medians over `--rounds`;
- the time to the first token of a ~470-token prompt (a new one per round; median);
- batched-against-sequential flips: 8 greedy prompts run one after another, then all at once;
- fidelity to llama.cpp on the same GGUF (engine/generation/fidelity.py, 20 prompts x 32 tokens).

    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_precision.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from servers import machine

from aios_serve.backends.llama_cpp import LlamaCppVocab
from aios_serve.cpu_features import has_native_bf16
from aios_serve.engine.generation import fidelity
from aios_serve.engine.generation.factory import EngineSpec, build_engine
from aios_serve.engine.generation.interface import EngineClient
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.models.bundled import resolve_bundled

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
SETTINGS = ("f32", "f32-invariant", "bf16")
"""`inference_precision`, with `-invariant` for `batch_invariant: true`."""
LONG_PROMPT_WORDS = 420
"""Words of the long prompt: ~470 tokens with either bundled model's tokenizer."""
POEM_TOPICS = [
    "the sea",
    "a mountain",
    "the city at night",
    "autumn",
    "a cat",
    "the moon",
    "rain",
    "a library",
]
"""The batched-against-sequential prompts of tests/e2e/test_generation_concurrency.py."""


def settings_here() -> tuple[str, ...]:
    """The settings this CPU computes differently: bf16 only where it has native bf16 (elsewhere
    the engine falls back to f32, and the row would repeat `f32`'s)."""
    return SETTINGS if has_native_bf16() else tuple(s for s in SETTINGS if s != "bf16")


def chat_ids(vocab: LlamaCppVocab, text: str) -> list[int]:
    """A one-message ChatML prompt (both bundled models' template)."""
    return vocab.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", True)


def poem_request(vocab: LlamaCppVocab, topic: str) -> list[int]:
    ask = f"Write a short poem about {topic}. Use simple words, four lines, and give it a title. " * 3
    return chat_ids(vocab, ask.strip())


def _long_text(variant: int) -> str:
    """~470 tokens of prose that differ from the first sentence on for each `variant` (so no
    block of it is in the prefix cache)."""
    sentences = [
        "The keeper climbed the stairs each night to light the lamp above the sea.",
        "Ships passed far out, their lights small against the dark water.",
        "In winter the wind came hard from the north and shook the windows.",
        "He wrote the weather in a book that his mother had given him.",
        "Gulls slept on the rocks below, and the tide came and went.",
        "Once a year a boat brought oil, flour, letters and news from the town.",
    ]
    text = [f"Story number {variant}."]
    while sum(len(s.split()) for s in text) < LONG_PROMPT_WORDS:
        text.append(sentences[(len(text) + variant) % len(sentences)])
    return " ".join(text) + " Summarise the story."


def model_path(name: str) -> Path:
    """A bundled model's file, or `name` itself where it is a .gguf path."""
    return Path(name).expanduser() if name.endswith(".gguf") else resolve_bundled(name)


def openvino_engine(path: Path, setting: str, threads: int = 2, weights_type: str = "gguf") -> EngineClient:
    """The openvino engine over a GGUF, in this process, as the factory builds it: 16 sequences,
    a context of 2,048, `threads` threads, at `setting` (a precision option, `-invariant` for
    `batch_invariant`), from `weights_type`."""
    precision, _, invariant = setting.partition("-")
    options = {
        "engine": "openvino",
        "inference_precision": precision,
        "batch_invariant": bool(invariant),
        "weights_type": weights_type,
        "n_threads": threads,
        "max_num_seqs": 16,
        "max_queued_requests": 1024,
    }
    return build_engine(EngineSpec(f"{path.stem}-{setting}", str(path), 2048, options), "openvino")


async def greedy_tokens(
    engine: EngineClient, prompt: list[int], max_tokens: int
) -> tuple[list[int], float, float]:
    """Greedy tokens, the first token's time and the end time (monotonic)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    tokens: list[int] = []
    first = 0.0
    async for update in engine.generate(prompt, params, 1):
        if update.error is not None:
            raise update.error
        for choice in update.choices:
            if choice.token_ids and not first:
                first = time.monotonic()
            tokens += choice.token_ids
    return tokens, first, time.monotonic()


async def speed(engine: EngineClient, prompt: list[int], streams: int, max_tokens: int) -> float:
    """One stream: decode tok/s after the first token; several: aggregate tok/s over the wall."""
    start = time.monotonic()
    runs = await asyncio.gather(*(greedy_tokens(engine, prompt, max_tokens) for _ in range(streams)))
    if streams == 1:
        tokens, first, end = runs[0]
        return (len(tokens) - 1) / (end - first)
    return sum(len(r[0]) for r in runs) / (max(r[2] for r in runs) - start)


async def _flips(engine: EngineClient, prompts: list[list[int]]) -> int:
    alone = [(await greedy_tokens(engine, p, 40))[0] for p in prompts]
    together = await asyncio.gather(*(greedy_tokens(engine, p, 40) for p in prompts))
    return sum(a != b[0] for a, b in zip(alone, together, strict=True))


async def _model(name: str, rounds: int, max_tokens: int, settings: tuple[str, ...]) -> None:
    path = model_path(name)
    vocab = LlamaCppVocab(path)
    engines = {p: await asyncio.to_thread(openvino_engine, path, p) for p in settings}
    for engine in engines.values():
        await engine.start()
    try:
        prompt = chat_ids(vocab, "Write a long story about a lighthouse keeper.")
        speeds: dict[tuple[str, int], list[float]] = {}
        first_token: dict[str, list[float]] = {}
        for round_index in range(rounds):
            order = settings if round_index % 2 == 0 else settings[::-1]
            for streams in (1, 16):
                for setting in order:
                    figure = await speed(engines[setting], prompt, streams, max_tokens)
                    speeds.setdefault((setting, streams), []).append(figure)
            for k, setting in enumerate(order):
                long_prompt = chat_ids(vocab, _long_text(round_index * len(settings) + k))
                started = time.monotonic()
                _, first, _ = await greedy_tokens(engines[setting], long_prompt, 1)
                first_token.setdefault(setting, []).append(first - started)
        poems = [poem_request(vocab, topic) for topic in POEM_TOPICS]
        prompts = [chat_ids(vocab, t) for t in fidelity.PROMPTS]
        references = await asyncio.to_thread(fidelity.reference_runs, path, prompts, fidelity.TOKENS)
        print(f"\n### {name}, {rounds} rounds, {max_tokens} tokens")
        print("| setting | compiled | 1 stream tok/s | 16 streams tok/s | TTFT 500, ms | flips | fidelity |")
        print("|---|---|---|---|---|---|---|")
        for setting, engine in engines.items():
            flips = await _flips(engine, poems)
            fid = await fidelity.measure(engine, references)
            single = statistics.median(speeds[(setting, 1)])
            many = statistics.median(speeds[(setting, 16)])
            ttft = statistics.median(first_token[setting]) * 1e3
            compiled = engine.engine_details
            print(
                f"| {setting} | {compiled} | {single:.1f} | {many:.1f} | {ttft:.0f} | {flips}/{len(poems)} | "
                f"{fid.describe()} |"
            )
        for setting in settings[1:]:
            ratios = [
                b / f
                for streams in (1, 16)
                for f, b in zip(speeds[(settings[0], streams)], speeds[(setting, streams)], strict=True)
            ]
            shown = [round(r, 3) for r in ratios]
            print(f"{setting}/{settings[0]} per round (1 stream x{rounds}, then 16 x{rounds}): {shown}")
    finally:
        for engine in engines.values():
            await engine.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="bundled names or .gguf paths")
    parser.add_argument(
        "--settings", nargs="*", choices=SETTINGS, help="default: all this CPU computes differently"
    )
    args = parser.parse_args()
    settings = tuple(args.settings or settings_here())
    print(f"machine: {machine()}; settings: {', '.join(settings)}")
    for name in args.models:
        await _model(name, args.rounds, args.max_tokens, settings)


if __name__ == "__main__":
    asyncio.run(main())
