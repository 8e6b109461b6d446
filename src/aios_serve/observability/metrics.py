"""Prometheus metrics: vLLM's names where the meaning is the same, `aios_serve_*` for the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from aios_serve.observability.engine_stats import stats_of

# fmt: off
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
    0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
# fmt: on


class WorkerStatus(Protocol):
    """A model's engine worker as /health and /metrics see it (`WorkerEngine.health()`)."""

    @property
    def state(self) -> str:
        """`starting`, `ready`, `restarting` or `stopped`."""

    @property
    def restarts(self) -> int: ...


@runtime_checkable
class ReportsWorkerHealth(Protocol):
    """A served model whose engine may run in a supervised worker process."""

    def worker_health(self) -> WorkerStatus | None:
        """None when the engine runs in this process (or has not started)."""


def worker_health_of(model: object) -> WorkerStatus | None:
    """The model's worker state, or None for a model without a worker."""
    return model.worker_health() if isinstance(model, ReportsWorkerHealth) else None


class EngineCollector(Collector):
    """Reads queue depth, running batch and KV-cache use from the served models at scrape time."""

    def __init__(self, models: Callable[[], Iterable[object]]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "vllm:num_requests_running", "Number of requests in the running batch.", labels=["model_name"]
        )
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels=["model_name"]
        )
        kv_cache = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels=["model_name"]
        )
        batch = GaugeMetricFamily(
            "aios_serve_batch_size", "Sequences in the last batch the engine ran.", labels=["model_name"]
        )
        passes = CounterMetricFamily(
            "aios_serve_engine_forward_passes",
            "Generation forward passes: phase prompt (prompt chunks, merged) or decode.",
            labels=["model_name", "phase"],
        )
        prefix_queries = CounterMetricFamily(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            labels=["model_name"],
        )
        prefix_hits = CounterMetricFamily(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            labels=["model_name"],
        )
        restarts = CounterMetricFamily(
            "aios_serve_engine_restarts",
            "Restarts of a model's engine worker process after it died or hung.",
            labels=["model_name"],
        )
        for model in self._models():
            worker = worker_health_of(model)
            if worker is not None:
                restarts.add_metric([str(model.spec.name)], float(worker.restarts))  # type: ignore[attr-defined]
            stats = stats_of(model)
            if stats is None:
                continue
            name = [str(model.spec.name)]  # type: ignore[attr-defined]
            for family, value in (
                (running, stats.running),
                (waiting, stats.waiting),
                (kv_cache, stats.kv_cache_usage),
                (batch, stats.batch_size),
                (prefix_queries, stats.prefix_cache_queries),
                (prefix_hits, stats.prefix_cache_hits),
            ):
                if value is not None:
                    family.add_metric(name, float(value))
            for phase, count in (("prompt", stats.prompt_passes), ("decode", stats.decode_passes)):
                if count is not None:
                    passes.add_metric([*name, phase], float(count))
        yield from (running, waiting, kv_cache, batch, passes, prefix_queries, prefix_hits, restarts)


class ServerMetrics:
    """All metrics of one app, in a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, models: Callable[[], Iterable[object]] | None = None) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.http_requests = Counter(
            "aios_serve_http_requests",
            "HTTP requests by endpoint, model and status.",
            ["endpoint", "model", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "aios_serve_http_request_duration_seconds",
            "HTTP request latency, to the last byte of the response.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_in_progress = Gauge(
            "aios_serve_http_requests_in_progress", "HTTP requests being served.", registry=registry
        )
        self.e2e_latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            ["model_name"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.request_prompt_tokens = Histogram(
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            ["model_name"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.request_generation_tokens = Histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            ["model_name"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", ["model_name"], registry=registry
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            ["model_name"],
            registry=registry,
        )
        ProcessCollector(registry=registry)
        if models is not None:
            registry.register(EngineCollector(models))

    def observe_request(
        self,
        endpoint: str,
        model: str | None,
        status: int,
        latency_s: float,
        usage: tuple[int, int] | None,
        first_token_s: float | None,
    ) -> None:
        """Count one finished HTTP request; model metrics only for requests that reached a model."""
        self.http_requests.labels(endpoint, model or "", str(status)).inc()
        self.http_latency.labels(endpoint).observe(latency_s)
        if model is None:
            return
        self.e2e_latency.labels(model).observe(latency_s)
        if usage is not None:
            self.prompt_tokens.labels(model).inc(usage[0])
            self.generation_tokens.labels(model).inc(usage[1])
            self.request_prompt_tokens.labels(model).observe(usage[0])
            self.request_generation_tokens.labels(model).observe(usage[1])
        if first_token_s is not None:
            self.time_to_first_token.labels(model).observe(first_token_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
