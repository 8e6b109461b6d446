"""How `tool_choice: "required"` ends on Qwen2.5-Coder-0.5B at temperature 1: for each engine, 20
seeds (sent together, as tests/e2e/test_tools.py does) of the weather question with parallel calls
allowed, counted by finish_reason and number of calls (`cut_calls`: calls whose arguments max_tokens
cut), and how many contents hold tool markup.

    .venv/bin/python -m benchmarks.tool_choice_required [--max-tokens 160] [--question TEXT] [--verbose]

Each engine gets its own server (tests/e2e/configs.py's `qwen` entry, 2 threads, 20 sequences).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.generation.servers import machine
from tests.e2e.configs import ENGINES, QWEN, chat_for_seeds, qwen
from tests.e2e.server import Server
from tests.e2e.test_tools import WEATHER

PARIS = "What's the weather in Paris?"


def _whole(arguments: str) -> bool:
    try:
        json.loads(arguments)
    except json.JSONDecodeError:
        return False
    return True


def measure(engine: str, question: str, seeds: int, max_tokens: int, verbose: bool = False) -> dict[str, Any]:
    """One engine's figures over `seeds` seeds."""
    with tempfile.TemporaryDirectory() as folder:
        model = qwen(QWEN, n_threads=2, n_ctx=2048, max_num_seqs=20, engine=engine)
        with Server(Path(folder), [model]) as server:
            started = time.perf_counter()
            responses = chat_for_seeds(
                server.client(),
                seeds,
                messages=[{"role": "user", "content": question}],
                tools=[WEATHER],
                tool_choice="required",
                max_tokens=max_tokens,
            )
            elapsed = time.perf_counter() - started
    finish = collections.Counter(r.choices[0].finish_reason for r in responses)
    calls = collections.Counter(len(r.choices[0].message.tool_calls or []) for r in responses)
    cut = sum(
        not _whole(c.function.arguments) for r in responses for c in r.choices[0].message.tool_calls or []
    )
    markup = sum("<tool_call" in (r.choices[0].message.content or "") for r in responses)
    if verbose:
        for seed, r in enumerate(responses):
            choice = r.choices[0]
            args = [c.function.arguments for c in choice.message.tool_calls or []]
            print(seed, choice.finish_reason, r.usage.completion_tokens, args, repr(choice.message.content))
    return {
        "engine": engine,
        "finish_reason": dict(finish),
        "calls_per_answer": dict(sorted(calls.items())),
        "cut_calls": cut,
        "contents_with_markup": markup,
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--question", default=PARIS)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--verbose", action="store_true", help="print each seed's answer")
    args = parser.parse_args()
    print(machine())
    for engine in args.engines:
        print(json.dumps(measure(engine, args.question, args.seeds, args.max_tokens, args.verbose)))


if __name__ == "__main__":
    main()
