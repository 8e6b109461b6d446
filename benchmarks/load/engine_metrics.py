"""The generation engines' gauges from /metrics: KV-cache use, running and waiting requests (peaks
while the load runs, and whether everything is free again once it has ended), and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

GAUGES = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "aios_serve_engine_restarts": "restarts",
}
"""The metric families read, and the short name each has in the summary."""


def parse(text: str, models: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """model -> short gauge name -> value, for `models` (a gauge the model does not report is absent)."""
    values: dict[str, dict[str, float]] = {model: {} for model in models}
    for family in text_string_to_metric_families(text):
        short = GAUGES.get(family.name)
        if short is None:
            continue
        for sample in family.samples:
            model = sample.labels.get("model_name")
            if model in values and not sample.name.endswith("_created"):
                values[model][short] = float(sample.value)
    return values


async def scrape(client: httpx.AsyncClient, models: tuple[str, ...]) -> dict[str, dict[str, float]]:
    response = await client.get("/metrics")
    response.raise_for_status()
    return parse(response.text, models)


@dataclass
class Peaks:
    """The highest value of each gauge per model over the scrapes of a run."""

    models: tuple[str, ...]
    scrapes: int = 0
    highest: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, values: dict[str, dict[str, float]]) -> None:
        self.scrapes += 1
        for model, gauges in values.items():
            mine = self.highest.setdefault(model, {})
            for name, value in gauges.items():
                mine[name] = max(value, mine.get(name, value))


async def watch_peaks(url: str, peaks: Peaks, deadline: float, every_s: float = 1.0) -> None:
    """Scrape /metrics until `deadline` (monotonic), keeping the peaks."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):  # a busy server: the next scrape counts
                peaks.add(await scrape(client, peaks.models))
            await asyncio.sleep(every_s)


def busy(values: dict[str, dict[str, float]]) -> list[str]:
    """What is not yet free: KV use, running or waiting requests above 0, or a gauge missing."""
    found = []
    for model, gauges in values.items():
        for name in ("kv_cache_usage", "running", "waiting"):
            value = gauges.get(name)
            if value is None:
                found.append(f"{model}: no {name} gauge")
            elif value > 0:
                found.append(f"{model}: {name} {value:g}")
    return found


async def settle(url: str, models: tuple[str, ...], within_s: float) -> dict[str, Any]:
    """Scrape until every model's KV use and running and waiting requests are 0, for `within_s` at
    most. `free` says whether they got there; `values` is the last scrape."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while True:
            values = await scrape(client, models)
            left = busy(values)
            waited = time.monotonic() - started
            if not left or waited >= within_s:
                return {"free": not left, "after_s": round(waited, 1), "still_busy": left, "values": values}
            await asyncio.sleep(0.5)
