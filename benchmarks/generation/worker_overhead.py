"""What the worker process costs: one engine in a worker and in process, measured in turns.

Both servers of an engine (`aios-<engine>` with `worker: true`, `aios-<engine>-inproc` with
`worker: false`) run at once, on the same bundled GGUF, and take turns: at each concurrency, each
round runs the same burst of streams on one server and then on the other, the order alternating
(worker first, then in process first, ...), so that drift on the machine falls on both sides
alike. Per round: aggregate tok/s of each, their ratio, and the CPU time both process trees spent
per generated token (server plus worker). The table gives medians over the rounds. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_generation import MODELS, WORDS, add_server_options, stream_once
from servers import free_port, machine, running, server_specs, tree_cpu_s

SIDES = ("worker", "inproc")


@dataclass
class Side:
    """One server of the pair, while it runs."""

    label: str
    url: str
    pid: int
    eos: dict[str, object]
    tok_s: list[float] = field(default_factory=list)
    cpu_ms_per_token: list[float] = field(default_factory=list)


async def burst(
    client: httpx.AsyncClient, side: Side, model: str, streams: int, args: argparse.Namespace
) -> None:
    """`streams` concurrent streams of `--max-tokens` tokens (at 1: `--single-requests` in a row)."""
    base = {"model": model, "temperature": 0, "max_tokens": args.max_tokens, **side.eos}
    bodies = [
        {**base, "prompt": f"{i}. Write a long story about a {WORDS[i % len(WORDS)]}:"}
        for i in range(streams)
    ]
    chat = args.api == "chat"
    cpu_before, start = tree_cpu_s(side.pid), time.perf_counter()
    if streams == 1:
        singles = [bodies[0] | {"prompt": f"{i}. {bodies[0]['prompt']}"} for i in range(args.single_requests)]
        done = [await stream_once(client, side.url, body, chat) for body in singles]
    else:
        done = await asyncio.gather(*[stream_once(client, side.url, body, chat) for body in bodies])
    elapsed, cpu = time.perf_counter() - start, tree_cpu_s(side.pid) - cpu_before
    tokens = sum(r.tokens for r in done)
    side.tok_s.append(tokens / elapsed)
    side.cpu_ms_per_token.append(1000 * cpu / max(tokens, 1))


async def compare(sides: list[Side], model: str, args: argparse.Namespace) -> list[str]:
    """Every concurrency in turns; a table row per concurrency."""
    rows = []
    async with httpx.AsyncClient(timeout=600) as client:
        for side in sides:
            await burst(client, side, model, max(args.concurrency), args)  # warm-up, not counted
        for streams in args.concurrency:
            for side in sides:
                side.tok_s.clear()
                side.cpu_ms_per_token.clear()
            for round_no in range(args.rounds):
                for side in sides if round_no % 2 == 0 else sides[::-1]:
                    await burst(client, side, model, streams, args)
            worker, inproc = sides
            ratios = [w / i for w, i in zip(worker.tok_s, inproc.tok_s, strict=True)]
            median = statistics.median
            rows.append(
                f"| {streams} | {median(worker.tok_s):.1f} | {median(inproc.tok_s):.1f} "
                f"| **{median(ratios):.3f}** | {min(ratios):.3f}-{max(ratios):.3f} "
                f"| {median(worker.cpu_ms_per_token):.2f} "
                f"| {median(inproc.cpu_ms_per_token):.2f} |"
            )
    return rows


def run_engine(bundled: str, engine: str, args: argparse.Namespace, logs: Path) -> list[str]:
    names = [f"aios-{engine}", f"aios-{engine}-inproc"]
    args.servers = names
    ports = {name: free_port() for name in names}
    specs = server_specs(bundled, Path(), [], ports, args, logs)
    with contextlib.ExitStack() as stack:
        sides = []
        for label, spec in zip(SIDES, specs, strict=True):
            url, pid = stack.enter_context(
                running(spec, ports[spec.name], logs / f"{bundled}-{spec.name}.log")
            )
            sides.append(Side(label, url, pid, spec.eos))
        return asyncio.run(compare(sides, bundled, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct"], choices=list(MODELS))
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["openvino", "llama.cpp"],
        choices=["openvino", "llama.cpp"],
    )
    parser.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 16])
    parser.add_argument(
        "--rounds", type=int, default=6, help="turns per concurrency (each runs both servers)"
    )
    parser.add_argument(
        "--single-requests", type=int, default=3, help="requests in a row per round at 1 stream"
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--api", choices=("completions", "chat"), default="chat")
    add_server_options(parser)
    args = parser.parse_args()
    args.vllm_missing = ""
    logs = Path(args.logs).resolve()
    logs.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}", flush=True)
    for bundled in args.models:
        for engine in args.engines:
            print(f"{MODELS[bundled]} on {engine}: {args.rounds} rounds ...", file=sys.stderr, flush=True)
            rows = run_engine(bundled, engine, args, logs)
            print(f"\n### {MODELS[bundled]}, {engine}: worker process against in process\n")
            print("| streams | worker tok/s | in-process tok/s | worker / in-process (median of rounds) "
                  "| range | worker CPU ms/token | in-process CPU ms/token |")  # fmt: skip
            print("|---|---|---|---|---|---|---|")
            print("\n".join(rows))
    print(
        f"\nrounds={args.rounds} single_requests={args.single_requests} max_tokens={args.max_tokens} "
        f"api={args.api} threads={args.threads} load average at end: {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
