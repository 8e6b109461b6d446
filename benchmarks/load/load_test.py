"""A bounded load test on loopback: many concurrent clients, mixed endpoints, for a fixed time.

It asserts three things: no error other than 503; every response matches its own input (an
embedding equals the single-request reference, a rerank or score equals its reference), so
there is no cross-talk between requests batched together; and the server's RSS stays flat over
the measured window, after a warm-up of the same load: it grows at most --max-rss-growth-mib from
first to last sample, and the least-squares line through the samples of the run's last half grows
at most as much over 5 minutes (over the last half, for runs shorter than 10 minutes).

    python benchmarks/load/load_test.py --clients 64 --duration 60
    python benchmarks/load/load_test.py --clients 64 --duration 600 --dtype bfloat16  # a soak
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from rss_trend import WINDOW_S, last_half_trend

MODEL = "all-minilm-l6-v2"
WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "engine",
    "garden",
    "violin",
    "copper",
    "desert",
    "lantern",
    "orbit",
    "meadow",
]
MIB = 1024 * 1024


def make_texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))) + f" #{i}" for i in range(count)]


def cpu_name() -> str:
    """The CPU's model name and count, to print beside the figures."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return "unknown CPU"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def server(folder: Path, host: str, dtype: str) -> Iterator[tuple[str, int]]:
    """A real `aios-serve serve` process on loopback; yields its URL and pid."""
    config = folder / "config.yaml"
    model = {"name": MODEL, "kind": "embedding", "bundled": MODEL, "options": {"dtype": dtype}}
    config.write_text(yaml.safe_dump({"models": [model], "data_dir": str(folder / "data")}))
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    log = (folder / "server.log").open("wb")
    command = [sys.executable, "-m", "aios_serve.cli", "serve", "--host", host, "--port", str(port)]
    process = subprocess.Popen([*command, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


@dataclass(frozen=True)
class Tolerance:
    """How far an answer under load may be from its single-request reference. In bfloat16 a
    row's values move with the batch around it (kernels block by the batch's token count), so
    a vector must point the same way (cosine) and be nearer its own reference than any other."""

    vector_atol: float | None  # element-wise, where the dtype gives batch-independent rows
    min_cosine: float
    score_atol: float


TOLERANCES = {
    "float32": Tolerance(vector_atol=1e-4, min_cosine=0.0, score_atol=1e-4),
    "bfloat16": Tolerance(vector_atol=None, min_cosine=0.9999, score_atol=1e-2),
}


@dataclass
class References:
    """What each request must answer, computed one request at a time before the load."""

    texts: list[str]
    vectors: dict[str, np.ndarray]
    query: str
    rerank: dict[int, float]
    score: list[float]
    tolerance: Tolerance = TOLERANCES["float32"]

    def nearest_text(self, vector: np.ndarray) -> str:
        """The reference text whose vector points most nearly the way `vector` does."""
        return max(self.texts, key=lambda text: float(np.dot(self.vectors[text], vector)))


def build_references(url: str, texts: list[str], dtype: str) -> References:
    with httpx.Client(base_url=url, timeout=60) as client:
        vectors = {}
        for text in texts:
            body = client.post("/v1/embeddings", json={"model": MODEL, "input": text}).json()
            vectors[text] = np.array(body["data"][0]["embedding"])
        query, documents = texts[0], texts[1:9]
        rerank = client.post(
            "/v1/rerank", json={"model": MODEL, "query": query, "documents": documents}
        ).json()
        score = client.post("/v1/score", json={"model": MODEL, "text_1": query, "text_2": documents}).json()
    return References(
        texts=texts,
        vectors=vectors,
        query=query,
        rerank={r["index"]: r["relevance_score"] for r in rerank["results"]},
        score=[d["score"] for d in score["data"]],
        tolerance=TOLERANCES["float32" if dtype == "float32" else "bfloat16"],
    )


@dataclass
class Tally:
    requests: int = 0
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def check_embeddings(
    body: dict[str, Any], sent: list[str], refs: References, base64_format: bool
) -> str | None:
    """Each vector equals its single-request reference, taken from the same server."""
    rows = sorted(body["data"], key=lambda d: d["index"])
    if len(rows) != len(sent):
        return f"{len(rows)} vectors for {len(sent)} inputs"
    for text, row in zip(sent, rows, strict=True):
        given = row["embedding"]
        vector = np.frombuffer(base64.b64decode(given), "<f4") if base64_format else np.array(given)
        reference, tolerance = refs.vectors[text], refs.tolerance
        if tolerance.vector_atol is not None and not np.allclose(
            vector, reference, atol=tolerance.vector_atol
        ):
            return f"embedding of {text[:30]!r} differs from its single-request reference"
        cosine = float(np.dot(vector, reference) / (np.linalg.norm(vector) * np.linalg.norm(reference)))
        if cosine < tolerance.min_cosine or refs.nearest_text(vector) != text:
            return f"embedding of {text[:30]!r}: cosine {cosine:.6f} to its reference, or nearer another"
    return None


# The mix of request kinds and their weights. Chat streams are not in it yet: a "chat-stream"
# kind goes here, with a generation model in server()'s config and its check in one_request.
MIX: dict[str, int] = {
    "embed-one": 4,
    "embed-batch": 3,
    "embed-base64": 1,
    "rerank": 1,
    "score": 1,
    "models": 1,
}


async def one_request(client: httpx.AsyncClient, rng: random.Random, refs: References, tally: Tally) -> None:
    kind = rng.choices(list(MIX), list(MIX.values()))[0]
    documents = refs.texts[1:9]
    sent = rng.sample(refs.texts, rng.randint(2, 16)) if kind == "embed-batch" else [rng.choice(refs.texts)]
    if kind.startswith("embed"):
        body: dict[str, Any] = {"model": MODEL, "input": sent if kind == "embed-batch" else sent[0]}
        if kind == "embed-base64":
            body["encoding_format"] = "base64"
        request = client.post("/v1/embeddings", json=body)
    elif kind == "rerank":
        request = client.post(
            "/v1/rerank", json={"model": MODEL, "query": refs.query, "documents": documents}
        )
    elif kind == "score":
        request = client.post("/v1/score", json={"model": MODEL, "text_1": refs.query, "text_2": documents})
    else:
        request = client.get("/v1/models")
    try:
        response = await request
    except httpx.HTTPError as exc:
        tally.errors.append(f"{kind}: {type(exc).__name__}")
        return
    tally.requests += 1
    tally.by_kind[kind] += 1
    tally.statuses[response.status_code] += 1
    if response.status_code == 503:
        return
    if response.status_code != 200:
        tally.errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
        return
    body = response.json()
    problem: str | None = None
    if kind.startswith("embed"):
        problem = check_embeddings(body, sent, refs, kind == "embed-base64")
    elif kind == "rerank":
        got = {r["index"]: r["relevance_score"] for r in body["results"]}
        if got.keys() != refs.rerank.keys() or any(
            abs(got[i] - refs.rerank[i]) > refs.tolerance.score_atol for i in got
        ):
            problem = "rerank scores differ from the reference"
    elif kind == "score":
        got_scores = [d["score"] for d in body["data"]]
        if not np.allclose(got_scores, refs.score, atol=refs.tolerance.score_atol):
            problem = "score values differ from the reference"
    if problem:
        tally.mismatches.append(f"{kind}: {problem}")


async def run_load(url: str, pid: int, refs: References, clients: int, duration_s: float) -> dict[str, Any]:
    tally = Tally()
    rss: list[tuple[float, int]] = []
    started = time.monotonic()
    deadline = started + duration_s

    async def client_loop(number: int) -> None:
        rng = random.Random(number)
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            while time.monotonic() < deadline:
                await one_request(client, rng, refs, tally)

    async def sample_rss() -> None:
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - started, rss_bytes(pid)))
            await asyncio.sleep(1.0)

    await asyncio.gather(sample_rss(), *(client_loop(n) for n in range(clients)))
    elapsed = time.monotonic() - started
    return {
        "clients": clients,
        "duration_s": round(elapsed, 1),
        "requests": tally.requests,
        "requests_per_s": round(tally.requests / elapsed, 1),
        "by_kind": dict(tally.by_kind),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "errors": len(tally.errors),
        "error_samples": tally.errors[:5],
        "mismatches": len(tally.mismatches),
        "mismatch_samples": tally.mismatches[:5],
        "rss_start_mib": round(rss[0][1] / MIB, 1),
        "rss_peak_mib": round(max(v for _, v in rss) / MIB, 1),
        "rss_series_mib": [round(v / MIB) for at, v in rss[:: max(1, len(rss) // 12)]],
        "rss_samples": [(round(at, 1), round(v / MIB, 1)) for at, v in rss],
    }


def measure(folder: Path, host: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, take the references, run the warm-up and the measured load."""
    with server(folder, host, args.dtype) as (url, pid):
        rss_before = rss_bytes(pid)
        refs = build_references(url, make_texts(args.texts), args.dtype)
        warmup = asyncio.run(run_load(url, pid, refs, args.clients, args.warmup)) if args.warmup else None
        summary = asyncio.run(run_load(url, pid, refs, args.clients, args.duration))
        if warmup is not None:  # its requests count too: any error or mismatch fails the run
            summary["warmup"] = {
                k: warmup[k] for k in ("duration_s", "requests", "statuses", "rss_series_mib")
            }
            summary["errors"] += warmup["errors"]
            summary["mismatches"] += warmup["mismatches"]
            summary["error_samples"] += warmup["error_samples"]
            summary["mismatch_samples"] += warmup["mismatch_samples"]
        time.sleep(2.0)  # let the last responses' buffers go
        summary["rss_before_mib"] = round(rss_before / MIB, 1)
        summary["rss_after_mib"] = round(rss_bytes(pid) / MIB, 1)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds of the same load before, while RSS settles"
    )
    parser.add_argument("--texts", type=int, default=48, help="distinct inputs with references")
    parser.add_argument(
        "--dtype",
        default=os.environ.get("LOAD_DTYPE", "float32"),
        choices=["float32", "bfloat16", "auto"],
        help="the encoder's dtype option (default: LOAD_DTYPE, else float32)",
    )
    parser.add_argument(
        "--max-rss-growth-mib",
        type=float,
        default=64.0,
        help="bound on first-to-last growth, and on the last half's fitted growth over 5 minutes",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here (JSON)")
    args = parser.parse_args()
    host = "127.0.0.1"  # loopback only
    with tempfile.TemporaryDirectory(prefix="aios-load-") as tmp:
        summary = measure(Path(tmp), host, args)
    growth = summary["rss_after_mib"] - summary["rss_start_mib"]
    growth = summary["rss_after_mib"] - summary["rss_start_mib"]
    summary["rss_growth_mib"] = round(growth, 1)
    trend = last_half_trend(summary.pop("rss_samples"))
    summary["dtype"] = args.dtype
    summary["cpu"] = cpu_name()
    summary["rss_last_half"] = {
        "samples": trend.samples,
        "span_s": round(trend.span_s, 1),
        "slope_mib_per_min": round(trend.slope_mib_per_min, 2),
        "fitted_growth_over_5_min_mib": round(trend.growth_mib(WINDOW_S), 1),
        "judged_over_s": round(min(WINDOW_S, trend.span_s), 1),
        "judged_growth_mib": round(trend.judged_growth_mib, 1),
    }
    failures = []
    if summary["errors"]:
        failures.append("errors other than 503")
    if summary["mismatches"]:
        failures.append("responses that do not match their inputs")
    if growth > args.max_rss_growth_mib:
        failures.append(f"RSS grew {growth:.1f} MiB during the measured load")
    if trend.judged_growth_mib > args.max_rss_growth_mib:
        failures.append(
            f"RSS trend over the last half: {trend.slope_mib_per_min:.1f} MiB/min, "
            f"{trend.judged_growth_mib:.1f} MiB over {min(WINDOW_S, trend.span_s):.0f} s"
        )
    if summary["requests"] == 0:
        failures.append("no requests completed")
    summary["passed"] = not failures
    summary["failures"] = failures
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if not failures else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
