"""Encoder benchmark: aios-serve against Infinity and in-process sentence-transformers.

Run with `make bench` (or `python benchmarks/encoders/bench_encoders.py`). The peers live in their
own venv, `.bench-venv/`, which this script creates on first use; it then re-runs itself there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
BENCH_VENV = ROOT / ".bench-venv"
BENCH_PYTHON = BENCH_VENV / "bin" / "python"
PEER_PACKAGES = ["infinity-emb[server,torch]==0.0.78", "matplotlib==3.11.2", "httpx==0.28.1"]
MODEL_NAME = "minilm"
CONCURRENCY = (1, 8, 32)
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
# Every torch process here (both servers, the in-process baseline) gets the same OpenMP setting:
# sleeping barrier waits, which aios-serve sets by default and which spares a busy box.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def ensure_bench_venv() -> None:
    """Create the peers' venv (torch pinned first: a bare torch pulls a CUDA build), then re-exec."""
    if not (BENCH_VENV / "bin" / "infinity_emb").exists():
        print(f"setting up {BENCH_VENV} (infinity-emb, sentence-transformers, matplotlib)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        pip = [str(BENCH_PYTHON), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, *PEER_PACKAGES], check=True)
    if Path(sys.prefix).resolve() != BENCH_VENV.resolve():
        os.execv(str(BENCH_PYTHON), [str(BENCH_PYTHON), __file__, *sys.argv[1:]])


def model_folder() -> Path:
    code = 'from aios_serve.models.bundled import resolve_bundled; print(resolve_bundled("all-minilm-l6-v2"))'
    out = subprocess.run([str(PROJECT_PYTHON), "-c", code], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def synthetic_corpus(folder: Path, count: int, seed: int) -> list[str]:
    """Sentences of 10 to 200 tokens: single-token vocabulary words plus [CLS] and [SEP]."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) >= 3)
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 198))) for _ in range(count)]


def token_counts(folder: Path, texts: list[str]) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(command: list[str], health_url: str, log_path: Path) -> Iterator[None]:
    import httpx

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE}
        )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited:\n{log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(health_url, timeout=2).status_code == 200:
                        break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"{command[0]} not healthy in 600 s")
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


async def load(url: str, texts: list[str], concurrency: int) -> dict[str, float]:
    """One single-text request per sentence, `concurrency` in flight; sentences/s and latencies."""
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                text = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(url, json={"model": MODEL_NAME, "input": [text]})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "sentences_per_s": len(texts) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def median_round(rows: list[dict[str, float]], tokens_per_sentence: float) -> dict[str, Any]:
    """The round with the median throughput, with every round's throughput kept beside it."""
    median = sorted(rows, key=lambda row: row["sentences_per_s"])[len(rows) // 2]
    return {
        **median,
        "tokens_per_s": median["sentences_per_s"] * tokens_per_sentence,
        "rounds_sentences_per_s": [row["sentences_per_s"] for row in rows],
    }


def timed_posts(url: str, body: dict[str, Any], repeats: int) -> dict[str, float]:
    import httpx

    latencies = []
    with httpx.Client(timeout=600) as client:
        client.post(url, json=body).raise_for_status()  # warm the path
        for _ in range(repeats):
            started = time.perf_counter()
            client.post(url, json=body).raise_for_status()
            latencies.append(time.perf_counter() - started)
    return {"p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


def bench_servers(
    targets: dict[str, tuple[str, str, str | None]],
    texts: list[str],
    tokens: int,
    args: argparse.Namespace,
    rerank: dict[str, Any],
) -> dict[str, Any]:
    """Each stage runs on every server in turn, so both see the same machine load."""
    results: dict[str, Any] = {name: {"load": {}} for name in targets}
    for base, path, _ in targets.values():
        asyncio.run(load(f"{base}{path}", texts[:64], 8))  # warm-up
    for concurrency in CONCURRENCY:
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # servers alternate within each round
            for name, (base, path, _) in targets.items():
                row = asyncio.run(load(f"{base}{path}", texts, concurrency))
                rounds[name].append(row)
                print(
                    f"  {name:<11} c={concurrency:<3} {row['sentences_per_s']:8.1f} sent/s  "
                    f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms",
                    flush=True,
                )
        for name, rows in rounds.items():
            results[name]["load"][concurrency] = median_round(rows, tokens / len(texts))
    short = {"model": MODEL_NAME, "input": ["What is the capital of France?"]}
    everything = {"model": MODEL_NAME, "input": [rerank["query"], *rerank["documents"]]}
    for name, (base, path, rerank_path) in targets.items():
        results[name]["short"] = timed_posts(f"{base}{path}", short, args.repeats * 10)
        results[name]["embed_101"] = timed_posts(f"{base}{path}", everything, args.repeats)
        if rerank_path is not None:
            results[name]["rerank"] = timed_posts(f"{base}{rerank_path}", rerank, args.repeats)
        print(
            f"  {name:<11} short p50 {results[name]['short']['p50_ms']:.1f} ms, 101 texts p50 "
            f"{results[name]['embed_101']['p50_ms']:.1f} ms",
            flush=True,
        )
    return results


def sentence_transformers_baseline(
    folder: Path, texts: list[str], tokens: int, rounds: int
) -> dict[str, Any]:
    """`encode` of the whole corpus, batch 32: the median of `rounds` passes."""
    import statistics

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(str(folder), device="cpu")
    model.encode(texts[:64], batch_size=32)
    elapsed: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        model.encode(texts, batch_size=32)
        elapsed.append(time.perf_counter() - started)
    median = statistics.median(elapsed)
    return {
        "sentences_per_s": len(texts) / median,
        "tokens_per_s": tokens / median,
        "rounds_sentences_per_s": [len(texts) / seconds for seconds in elapsed],
    }


def backend_baselines(out: Path) -> list[dict[str, Any]]:
    """Our backends in process (project venv): torch fp32, torch bf16, onnxruntime fp32."""
    path = out / "backends.json"
    script = Path(__file__).with_name("bench_backends.py")
    subprocess.run([str(PROJECT_PYTHON), str(script), "--json", str(path)], check=True)
    rows: list[dict[str, Any]] = json.loads(path.read_text())["rows"]
    return rows


def chart(results: dict[str, Any], baseline: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        axis.plot(CONCURRENCY, [result["load"][c]["sentences_per_s"] for c in CONCURRENCY], "o-", label=name)
    axis.axhline(
        baseline["sentences_per_s"],
        linestyle="--",
        color="grey",
        label="sentence-transformers fp32, in process, batch 32",
    )
    axis.set_xscale("log", base=2)
    axis.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
    axis.set_xlabel("concurrent single-text requests")
    axis.set_ylabel("sentences / s")
    axis.set_title("all-MiniLM-L6-v2 embeddings, sentences of 10-200 tokens")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def rounds_of(row: dict[str, Any]) -> str:
    return " / ".join(f"{rate:.1f}" for rate in row.get("rounds_sentences_per_s", []))


def report(
    results: dict[str, Any], baseline: dict[str, Any], rerank_note: str, backends: list[dict[str, Any]]
) -> str:
    ours, theirs = results["aios-serve"], results["infinity"]
    lines = [
        "| server | concurrency | sentences/s (median round) | every round | tokens/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for c in CONCURRENCY:
            row = result["load"][c]
            lines.append(
                f"| {name} | {c} | {row['sentences_per_s']:.1f} | {rounds_of(row)} | "
                f"{row['tokens_per_s']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
            )
    lines.append(
        f"| sentence-transformers fp32 (in process, batch 32) | - | {baseline['sentences_per_s']:.1f} | "
        f"{rounds_of(baseline)} | {baseline['tokens_per_s']:.0f} | - | - |"
    )
    for row in backends:
        lines.append(
            f"| our {row['backend']} backend (in process, batch {row['batch']} x {row['tokens']} tokens, "
            f"median of 5) | - | {row['sentences_per_s']:.1f} | - | "
            f"{row['sentences_per_s'] * row['tokens']:.0f} | - | - |"
        )
    top = CONCURRENCY[-1]
    ours_top, theirs_top = ours["load"][top]["sentences_per_s"], theirs["load"][top]["sentences_per_s"]
    ours_short, theirs_short = ours["short"]["p50_ms"], theirs["short"]["p50_ms"]
    ours_101, theirs_101 = ours["embed_101"]["p50_ms"], theirs["embed_101"]["p50_ms"]
    ratio_inf = ours["load"][top]["sentences_per_s"] / theirs["load"][top]["sentences_per_s"]
    ratio_st = ours["load"][top]["sentences_per_s"] / baseline["sentences_per_s"]
    lines += [
        "",
        "| target | ours | theirs | ratio (ours/theirs; latency: theirs/ours) | goal |",
        "|---|---|---|---|---|",
        f"| throughput c={top} vs Infinity (sent/s) | {ours_top:.1f} | {theirs_top:.1f} | "
        f"{ratio_inf:.2f}x | >= 1.5x |",
        f"| throughput c={top} vs sentence-transformers fp32 (sent/s) | {ours_top:.1f} | "
        f"{baseline['sentences_per_s']:.1f} | {ratio_st:.2f}x | >= 1.5x |",
        f"| single short request p50 (ms) | {ours_short:.1f} | {theirs_short:.1f} | "
        f"{theirs_short / ours_short:.2f}x | >= 1.0x |",
        f"| 1 query + 100 docs, embedding 101 texts p50 (ms) | {ours_101:.1f} | {theirs_101:.1f} | "
        f"{theirs_101 / ours_101:.2f}x | >= 1.0x |",
    ]
    if "rerank" in ours:
        lines.append(
            f"| our /rerank (cosine) 1 query + 100 docs p50 (ms) | {ours['rerank']['p50_ms']:.1f} | "
            f"{theirs['embed_101']['p50_ms']:.1f} | "
            f"{theirs['embed_101']['p50_ms'] / ours['rerank']['p50_ms']:.2f}x | >= 1.0x |"
        )
    lines += ["", rerank_note]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", type=int, default=384, help="corpus size per concurrency level")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed requests for the latency rows (x10 short)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="load rounds per concurrency level (median reported)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "encoders" / "results")
    args = parser.parse_args()
    ensure_bench_venv()
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    folder = model_folder()
    texts = synthetic_corpus(folder, args.sentences, args.seed)
    tokens = sum(token_counts(folder, texts))
    documents = synthetic_corpus(folder, 100, args.seed + 1)
    documents = [" ".join(d.split()[:98]) for d in documents]  # about 100 tokens each
    rerank = {
        "model": MODEL_NAME,
        "query": "which river runs past the old stone market",
        "documents": documents,
    }
    print(
        f"model {folder}\ncorpus {len(texts)} sentences, {tokens} tokens (mean {tokens / len(texts):.0f}); "
        f"{os.cpu_count()} cores; torch {torch.__version__}",
        flush=True,
    )

    print("sentence-transformers fp32 in process, batch 32", flush=True)
    baseline = sentence_transformers_baseline(folder, texts, tokens, args.rounds)
    rounds_text = ", ".join(f"{rate:.1f}" for rate in baseline["rounds_sentences_per_s"])
    print(f"  {baseline['sentences_per_s']:.1f} sent/s (median of {rounds_text})", flush=True)
    print("our backends in process: torch fp32, torch bf16, onnxruntime fp32", flush=True)
    backends = backend_baselines(args.out)

    ours_port, theirs_port = free_port(), free_port()
    config = args.out / "aios-serve.yaml"
    spec = {"name": MODEL_NAME, "kind": "embedding", "bundled": "all-minilm-l6-v2"}
    config.write_text(json.dumps({"models": [spec]}))
    ours_cmd = [
        str(PROJECT_PYTHON),
        "-m",
        "aios_serve.cli",
        "serve",
        "--port",
        str(ours_port),
        "--config",
        str(config),
    ]
    theirs_cmd = [
        str(BENCH_VENV / "bin" / "infinity_emb"),
        "v2",
        "--model-id",
        str(folder),
        "--served-model-name",
        MODEL_NAME,
        "--engine",
        "torch",
        "--device",
        "cpu",
        "--port",
        str(theirs_port),
    ]
    print("aios-serve (default precision) and infinity-emb (torch engine, CPU, its defaults)", flush=True)
    with (
        server(ours_cmd, f"http://127.0.0.1:{ours_port}/health", args.out / "aios-serve.log"),
        server(theirs_cmd, f"http://127.0.0.1:{theirs_port}/health", args.out / "infinity.log"),
    ):
        targets = {
            "aios-serve": (f"http://127.0.0.1:{ours_port}", "/v1/embeddings", "/rerank"),
            "infinity": (f"http://127.0.0.1:{theirs_port}", "/embeddings", None),
        }
        results = bench_servers(targets, texts, tokens, args, rerank)

    rerank_note = (
        "Rerank: Infinity reranks only with cross-encoder models, and no real cross-encoder ships with the "
        "project, so the comparable work is embedding the query and the 100 documents (101 texts) on both "
        "servers; our /rerank on the same embedding model (cosine) is shown against that too."
    )
    table = report(results, baseline, rerank_note, backends)
    chart(results, baseline, args.out / "throughput.png")
    (args.out / "results.json").write_text(
        json.dumps({"baseline": baseline, "backends": backends, **results}, indent=2)
    )
    (args.out / "table.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nchart: {args.out / 'throughput.png'}")


if __name__ == "__main__":
    main()
