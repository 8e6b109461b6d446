"""Generation benchmark: aios-serve beside llama-cpp-python's own OpenAI server, same GGUF.

For each model: single-stream decode tokens/s, time to first token for a ~500-token prompt, and
aggregate tokens/s and the median time to first token at 1, 4, 8 and 16 concurrent streams. Both
servers get the same thread count, context size and flash-attention setting; EOS is suppressed
through logit_bias so every stream generates exactly `--max-tokens` tokens. Not a test: it prints
a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from aios_serve.models.bundled import resolve_bundled

MODELS = {
    "qwen2.5-coder-0.5b-instruct": "Qwen2.5-Coder-0.5B q4_k_m",
    "smollm2-135m-instruct": "SmolLM2-135M Q4_1",
}
WORDS = [
    "river",
    "stone",
    "cloud",
    "garden",
    "lamp",
    "winter",
    "music",
    "paper",
    "orange",
    "window",
    "bridge",
    "forest",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(command: list[str], port: int, log: Path, env: dict[str, str]) -> Iterator[str]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[:4]} exited:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200 and _ready(url):
                        break
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        health = httpx.get(f"{url}/health", timeout=2)
        return health.status_code in (200, 404)  # llama_cpp.server has no /health
    return False


def end_token_ids(gguf: Path) -> list[int]:
    """End-of-generation token ids, read with llama.cpp's vocabulary (to suppress them)."""
    import llama_cpp.llama_cpp as llama

    from aios_serve.backends.llama_cpp import init_backend

    init_backend()
    params = llama.llama_model_default_params()
    params.vocab_only = True
    model = llama.llama_model_load_from_file(str(gguf).encode(), params)
    vocab = llama.llama_model_get_vocab(model)
    ids = [t for t in range(llama.llama_vocab_n_tokens(vocab)) if llama.llama_vocab_is_eog(vocab, t)]
    llama.llama_model_free(model)
    return ids


@dataclass
class StreamResult:
    ttft: float
    decode_time: float
    tokens: int


async def stream_once(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> StreamResult:
    start = time.perf_counter()
    first = last = 0.0
    chunks = 0
    async with client.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if not payload.get("choices") or not payload["choices"][0].get("text"):
                continue
            now = time.perf_counter()
            first = first or now
            last = now
            chunks += 1
    return StreamResult(first - start, last - first, chunks)


def prompt_of(tokens: int, url: str, model: str, salt: int) -> str:
    """A prompt of about `tokens` tokens, different per salt (defeats prefix caches)."""
    words = [WORDS[(salt * 7 + i * 3) % len(WORDS)] for i in range(tokens)]
    text = f"{salt}: " + " ".join(words)
    count = httpx.post(f"{url}/tokenize", json={"model": model, "prompt": text}).json()["count"]
    while count > tokens:
        words = words[: len(words) - (count - tokens)]
        text = f"{salt}: " + " ".join(words)
        count = httpx.post(f"{url}/tokenize", json={"model": model, "prompt": text}).json()["count"]
    return text


async def measure(
    url: str, model: str, bias: dict[str, int], args: argparse.Namespace, prompts: dict[str, list[str]]
) -> dict[str, float]:
    base = {"model": model, "temperature": 0, "logit_bias": bias}
    results: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=600) as client:
        await stream_once(client, url, {**base, "prompt": "Warm up.", "max_tokens": 8})
        singles = [
            await stream_once(
                client, url, {**base, "prompt": prompts["short"][i], "max_tokens": args.max_tokens}
            )
            for i in range(args.repeats)
        ]
        results["decode_tps"] = statistics.median((r.tokens - 1) / r.decode_time for r in singles)
        ttfts = [
            (await stream_once(client, url, {**base, "prompt": prompts["long"][i], "max_tokens": 1})).ttft
            for i in range(args.repeats)
        ]
        results["ttft_500"] = statistics.median(ttfts)
        for streams in (1, 4, 8, 16):
            start = time.perf_counter()
            done = await asyncio.gather(
                *[
                    stream_once(
                        client,
                        url,
                        {
                            **base,
                            "prompt": prompts["short"][i % len(prompts["short"])],
                            "max_tokens": args.max_tokens,
                        },
                    )
                    for i in range(streams)
                ]
            )
            results[f"agg_{streams}"] = sum(r.tokens for r in done) / (time.perf_counter() - start)
            results[f"ttft_{streams}"] = statistics.median(r.ttft for r in done)
    return results


def run_model(bundled: str, args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, float]]:
    gguf = resolve_bundled(bundled)
    bias = {str(t): -100 for t in end_token_ids(gguf)}
    threads = str(args.threads)
    config = workdir / f"{bundled}.yaml"
    options = {
        "n_threads": args.threads,
        "n_ctx": args.n_ctx,
        "max_num_seqs": 16,
        "flash_attn": args.flash_attn,
        "kv_unified": args.kv_unified,
    }
    config.write_text(
        yaml.safe_dump(
            {"models": [{"name": bundled, "kind": "generate", "bundled": bundled, "options": options}]}
        )
    )
    ours_port, theirs_port = free_port(), free_port()
    ours_cmd = [
        sys.executable,
        "-m",
        "aios_serve.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(ours_port),
        "--log-level",
        "warning",
    ]
    theirs_cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        bundled,
        "--n_ctx",
        str(args.n_ctx),
        "--n_threads",
        threads,
        "--n_threads_batch",
        threads,
        "--flash_attn",
        str(args.flash_attn),
        "--port",
        str(theirs_port),
        "--verbose",
        "False",
        "--interrupt_requests",
        "False",  # queue concurrent requests instead of cutting the older one
    ]
    extra_path = {
        "PYTHONPATH": os.pathsep.join(p for p in (args.server_extras, os.environ.get("PYTHONPATH", "")) if p)
    }
    out: dict[str, dict[str, float]] = {}
    with server(ours_cmd, ours_port, workdir / f"{bundled}-aios.log", {}) as ours:
        prompts = {
            "short": [f"{i}. Write a long story about a {WORDS[i % len(WORDS)]}:" for i in range(16)],
            "long": [prompt_of(500, ours, bundled, salt) for salt in range(args.repeats)],
        }
        out["aios-serve"] = asyncio.run(measure(ours, bundled, bias, args, prompts))
    with server(theirs_cmd, theirs_port, workdir / f"{bundled}-llama-cpp-server.log", extra_path) as theirs:
        out["llama_cpp.server"] = asyncio.run(measure(theirs, bundled, bias, args, prompts))
    return out


def table(all_results: dict[str, dict[str, dict[str, float]]]) -> str:
    head = (
        "| model | server | decode tok/s (1 stream) | TTFT 500-tok prompt (s) "
        "| agg tok/s @1 | @4 | @8 | @16 | TTFT p50 ms @1 | @4 | @8 | @16 |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for bundled, per_server in all_results.items():
        for name, r in per_server.items():
            lines.append(
                f"| {MODELS[bundled]} | {name} | {r['decode_tps']:.1f} | {r['ttft_500']:.2f} | "
                f"{r['agg_1']:.1f} | {r['agg_4']:.1f} | {r['agg_8']:.1f} | {r['agg_16']:.1f} | "
                + " | ".join(f"{r[f'ttft_{c}'] * 1000:.0f}" for c in (1, 4, 8, 16))
                + " |"
            )
        ours, theirs = per_server["aios-serve"], per_server["llama_cpp.server"]
        single_ratio = ours["decode_tps"] / theirs["decode_tps"]
        batch_ratio = ours["agg_8"] / ours["decode_tps"]
        lines.append(
            f"| {MODELS[bundled]} | ratios | ours/theirs single-stream {single_ratio:.2f}x (target >= 0.95) "
            f"| | our agg@8 / our single {batch_ratio:.2f}x (target >= 3) | | | | | | | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flash-attn", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument(
        "--server-extras",
        default=str(Path(".cache/bench-deps").resolve()),
        help="folder with llama_cpp.server's extras (starlette-context, sse-starlette, pydantic-settings)",
    )
    parser.add_argument(
        "--kv-unified", action="store_true", help="aios-serve with one shared KV cache (option kv_unified)"
    )
    parser.add_argument("--logs", default=".cache/bench-logs", help="folder for configs and server logs")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    logs = Path(args.logs).resolve()
    logs.mkdir(parents=True, exist_ok=True)
    for bundled in args.models:
        print(f"benchmarking {MODELS[bundled]} (server logs in {logs}) ...", file=sys.stderr, flush=True)
        results[bundled] = run_model(bundled, args, logs)
    print(table(results))
    print(
        f"\nthreads={args.threads} n_ctx={args.n_ctx} max_tokens={args.max_tokens} "
        f"flash_attn={args.flash_attn} kv_unified={args.kv_unified} "
        f"load average at end: {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
