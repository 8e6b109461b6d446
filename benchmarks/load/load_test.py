"""A bounded load test on loopback: many concurrent clients, mixed endpoints, for a fixed time.

The mix (MIX): embeddings (single, batched, base64), rerank, score and /v1/models on MiniLM
(encoder_mix.py), and greedy streamed chat and completions on a bundled chat model, with long
prompts that exhaust a small KV pool (generation_mix.py); a share of the clients closes every
stream after a few chunks. It asserts:

- no error but 503, in the status or as an error event inside a stream;
- no cross-talk: every encoder answer matches its single-request reference; no generated answer
  is nearer another prompt's reference than its own (plain mismatches are counted and reported);
- every KV block free again after the load: /metrics shows KV use and running and waiting
  requests at 0 within --kv-settle-s; no engine worker restarted;
- flat RSS of the server plus its child processes (the generation workers), after the OpenVINO
  worker's KV pool has been written once (kv_pool_fill.py) and a warm-up of the same load: it
  grows at most --max-rss-growth-mib from the median of the run's first minute to that of its
  last (single samples catch the heap high or low in the server's trim cycle), and the least-squares line
  through the samples of the run's last half grows at most as much over 5 minutes (over the last
  half, for runs shorter than 10 minutes). Each process is reported.

    python benchmarks/load/load_test.py --clients 64 --duration 60
    python benchmarks/load/load_test.py --clients 64 --duration 600 --dtype bfloat16  # a soak
    python benchmarks/load/load_test.py --no-generation  # encoders only
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import engine_metrics
import httpx
from encoder_mix import ENCODER_MIX, References, build_references, encoder_request, make_texts, model_entry
from generation_mix import (
    GENERATION_MIX,
    GenerationOutcome,
    GenerationReferences,
    GenerationSetup,
    build_generation_references,
    generation_request,
)
from kv_pool_fill import fill_kv_pool
from rss_trend import rss_series
from server_process import MIB, Server, TreeRss, cpu_name, rss_bytes, running_server

MIX: dict[str, int] = {**ENCODER_MIX, **GENERATION_MIX}
"""Every request kind and its weight; --no-generation leaves GENERATION_MIX's kinds out."""
SAMPLES = 5
COUNTED = {
    "errors": "error_samples",
    "mismatches": "mismatch_samples",
    "cross_talk": "cross_talk_samples",
    "generation_mismatches": "generation_mismatch_samples",
}
"""The counts (and their samples) where the warm-up's requests add to the measured run's."""


@dataclass
class Tally:
    """What the clients saw."""

    requests: int = 0
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)  # encoder answers: each fails the run
    verdicts: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    cross_talk: list[str] = field(default_factory=list)
    generation_mismatches: list[str] = field(default_factory=list)
    stream_errors: list[str] = field(default_factory=list)  # error events in 200 streams

    def record_generation(self, outcome: GenerationOutcome) -> None:
        """Per model: statuses other than 200, error events, streams closed early (these are
        judged too, on their prefix) and verdicts."""
        if outcome.status != 200:
            self.verdicts[(outcome.model, f"status {outcome.status}")] += 1
            return
        if outcome.closed_early:
            self.verdicts[(outcome.model, "closed early")] += 1
        if outcome.stream_error_code is not None:
            self.verdicts[(outcome.model, f"error event {outcome.stream_error_code}")] += 1
            self.stream_errors.append(f"{outcome.model} {outcome.kind}: {outcome.detail}")
            if outcome.stream_error_code != 503:
                self.errors.append(f"{outcome.kind}: error event {outcome.detail}")
        elif outcome.verdict is not None:
            self.verdicts[(outcome.model, outcome.verdict)] += 1
            if outcome.verdict == "cross-talk":
                self.cross_talk.append(outcome.detail)
            elif outcome.verdict == "mismatch":
                self.generation_mismatches.append(outcome.detail)

    def summary(self) -> dict[str, Any]:
        by_kind: collections.Counter[str] = collections.Counter()
        statuses: dict[str, dict[str, int]] = {}
        for (kind, status), count in sorted(self.statuses.items()):
            by_kind[kind] += count
            statuses.setdefault(kind, {})[str(status)] = count
        generation: dict[str, dict[str, int]] = {}
        for (model, verdict), count in sorted(self.verdicts.items()):
            generation.setdefault(model, {})[verdict] = count
        return {
            "requests": self.requests,
            "by_kind": dict(by_kind),
            "statuses": statuses,
            "errors": len(self.errors),
            "error_samples": self.errors[:SAMPLES],
            "mismatches": len(self.mismatches),
            "mismatch_samples": self.mismatches[:SAMPLES],
            "generation": generation,
            "cross_talk": len(self.cross_talk),
            "cross_talk_samples": self.cross_talk[:SAMPLES],
            "generation_mismatches": len(self.generation_mismatches),
            "generation_mismatch_samples": self.generation_mismatches[:SAMPLES],
            "stream_error_samples": self.stream_errors[:SAMPLES],
        }


@dataclass
class Load:
    """What every client needs: the references, the mix, who closes streams early."""

    refs: References
    generation: GenerationReferences | None
    mix: dict[str, int]
    closing_clients: int
    settle_s: float


async def one_request(
    client: httpx.AsyncClient, rng: random.Random, load: Load, tally: Tally, closes: bool
) -> None:
    kind = rng.choices(list(load.mix), list(load.mix.values()))[0]
    try:
        if kind in GENERATION_MIX:
            assert load.generation is not None
            outcome = await generation_request(
                client, kind, rng, load.generation, rng.randint(1, 4) if closes else None
            )
            status, detail, problem = outcome.status, outcome.detail, None
            tally.record_generation(outcome)
        else:
            status, detail, problem = await encoder_request(client, kind, rng, load.refs)
    except httpx.HTTPError as exc:
        tally.errors.append(f"{kind}: {type(exc).__name__} {exc}"[:200])
        return
    tally.requests += 1
    tally.statuses[(kind, status)] += 1
    if status not in (200, 503):
        tally.errors.append(f"{kind}: {status} {detail}")
    if problem:
        tally.mismatches.append(f"{kind}: {problem}")


async def run_load(server: Server, load: Load, clients: int, duration_s: float) -> dict[str, Any]:
    """`clients` loops of requests for `duration_s`, sampling RSS each second and /metrics."""
    tally = Tally()
    rss = TreeRss(server)
    deadline = rss.started + duration_s
    models = load.generation.setup.models if load.generation else ()
    peaks = engine_metrics.Peaks(models)

    async def client_loop(number: int) -> None:
        rng = random.Random(number)
        closes = number < load.closing_clients
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            while time.monotonic() < deadline:
                await one_request(client, rng, load, tally, closes)

    async def sample_rss() -> None:
        while time.monotonic() < deadline:
            rss.sample()
            await asyncio.sleep(1.0)

    watchers = [sample_rss()] + ([engine_metrics.watch_peaks(server.url, peaks, deadline)] if models else [])
    await asyncio.gather(*watchers, *(client_loop(n) for n in range(clients)))
    elapsed = time.monotonic() - rss.started
    summary = tally.summary()
    summary.update(duration_s=round(elapsed, 1), requests_per_s=round(tally.requests / elapsed, 1))
    if models:
        summary["engine_peaks"] = peaks.highest
        summary["kv_after"] = await engine_metrics.settle(server.url, models, load.settle_s)
    summary["rss_series_mib"] = [round(mib) for _, mib in rss.total[:: max(1, len(rss.total) // 12)]]
    summary["_rss"] = rss
    return summary


def measure(folder: Path, host: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, take the references, run the warm-up and the measured load."""
    setup = None if args.no_generation else GenerationSetup(args.chat_model, args.engine)
    models = [model_entry(args.dtype), *(setup.model_entries() if setup else [])]
    with running_server(folder, host, models) as server:
        fill = fill_pool(server, setup) if setup and setup.engine == "openvino" else None
        before = TreeRss(server).now()
        started = time.monotonic()
        refs = build_references(server.url, make_texts(args.texts), args.dtype)
        generation = (
            asyncio.run(build_generation_references(server.url, setup, args.gen_prompts)) if setup else None
        )
        mix = {k: w for k, w in MIX.items() if setup or k not in GENERATION_MIX}
        closing = round(args.close_share * args.clients) if setup else 0
        load = Load(refs, generation, mix, closing, args.kv_settle_s)
        references_s = time.monotonic() - started
        warmup = asyncio.run(run_load(server, load, args.clients, args.warmup)) if args.warmup else None
        summary = asyncio.run(run_load(server, load, args.clients, args.duration))
        summary["references_s"] = round(references_s, 1)
        if fill is not None:
            summary["kv_pool_fill"] = fill
        if generation is not None:
            summary["generation_references"] = generation.describe()
        if warmup is not None:  # its requests count too: any error, mismatch or leak fails the run
            warmup.pop("_rss")
            summary["warmup"] = {
                k: warmup[k]
                for k in ("duration_s", "requests", "statuses", "generation", "rss_series_mib", "kv_after")
                if k in warmup
            }
            for count, samples in COUNTED.items():
                summary[count] += warmup[count]
                summary[samples] += warmup[samples]
        time.sleep(2.0)  # let the last responses' buffers go
        rss: TreeRss = summary.pop("_rss")
        after = rss.now()
        summary["rss"] = rss_report(rss, before, after)
        summary["_tree"] = rss_series(rss.total, sum(after.values()))
    return summary


def fill_pool(server: Server, setup: GenerationSetup) -> dict[str, Any]:
    """Write the OpenVINO worker's KV pool once before anything is measured (kv_pool_fill.py)."""
    tree = TreeRss(server)
    tree.now()
    pid = next(pid for pid, label in tree.labels.items() if label == f"worker {setup.exact}")
    return asyncio.run(fill_kv_pool(server.url, setup.exact, lambda: (rss_bytes(pid) or 0) / MIB))


def rss_report(rss: TreeRss, before: dict[int, float], after: dict[int, float]) -> dict[str, Any]:
    """Per process (label and pid): before the references, start, peak, after, trend."""
    report: dict[str, Any] = {}
    for pid, samples in rss.per_process.items():
        series = rss_series(samples, after.get(pid, samples[-1][1]))
        entry: dict[str, Any] = {"before_references_mib": round(before[pid], 1)} if pid in before else {}
        entry.update(series.summary())
        if pid not in after:
            entry["exited"] = True
        report[f"{rss.labels[pid]} (pid {pid})"] = entry
    return report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds of the same load before, while RSS settles"
    )
    parser.add_argument("--texts", type=int, default=48, help="distinct encoder inputs with references")
    parser.add_argument(
        "--dtype",
        default=os.environ.get("LOAD_DTYPE", "float32"),
        choices=["float32", "bfloat16", "auto"],
        help="the encoder's dtype option (default: LOAD_DTYPE, else float32)",
    )
    parser.add_argument("--no-generation", action="store_true", help="encoders only: no chat model")
    parser.add_argument("--chat-model", default="smollm2-135m-instruct", help="the bundled chat model")
    parser.add_argument(
        "--engine",
        default="openvino",
        choices=["openvino", "llama.cpp"],
        help="engine of the exact copy (the small-KV copy is always llama.cpp)",
    )
    parser.add_argument("--gen-prompts", type=int, default=12, help="chat and completion prompts each")
    parser.add_argument(
        "--close-share", type=float, default=0.25, help="share of clients that close streams early"
    )
    parser.add_argument("--kv-settle-s", type=float, default=10.0, help="time for KV use to reach 0")
    parser.add_argument(
        "--max-rss-growth-mib",
        type=float,
        default=64.0,
        help="bound on first-to-last-minute growth, and on the last half's fitted growth over 5 minutes",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here (JSON)")
    return parser.parse_args()


def failures_of(summary: dict[str, Any], args: argparse.Namespace) -> list[str]:
    failures = []
    if summary["errors"]:
        failures.append("errors other than 503")
    if summary["mismatches"]:
        failures.append("encoder responses that do not match their inputs")
    if summary["cross_talk"]:
        failures.append("generated answers nearer another prompt's reference than their own")
    for phase, kv_after in (
        ("load", summary.get("kv_after")),
        ("warm-up", summary.get("warmup", {}).get("kv_after")),
    ):
        if kv_after is not None and not kv_after["free"]:
            failures.append(
                f"not free {kv_after['after_s']} s after the {phase}: {', '.join(kv_after['still_busy'])}"
            )
    restarted = [m for m, v in summary.get("kv_after", {}).get("values", {}).items() if v.get("restarts")]
    if restarted:
        failures.append(f"engine workers restarted (died or hung): {', '.join(restarted)}")
    failures += summary.pop("_tree").failures(args.max_rss_growth_mib, "server tree")
    if summary["requests"] == 0:
        failures.append("no requests completed")
    return failures


def main() -> int:
    args = parse_args()
    host = "127.0.0.1"  # loopback only
    with tempfile.TemporaryDirectory(prefix="aios-load-") as tmp:
        summary = measure(Path(tmp), host, args)
    tree = summary["_tree"]
    summary["rss_tree"] = tree.summary()
    summary.update(dtype=args.dtype, cpu=cpu_name())
    if not args.no_generation:
        summary.update(chat_model=args.chat_model, engine=args.engine)
    failures = failures_of(summary, args)
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
