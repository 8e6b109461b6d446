"""The /metrics text for a served model that reports engine stats (what a real server exposes:
tests/e2e/test_metrics.py)."""

from __future__ import annotations


def test_an_engine_with_stats_feeds_the_vllm_gauges() -> None:
    """The contract for the generation engine: a `stats()` method on the served model."""
    from types import SimpleNamespace

    from aios_serve.observability.engine_stats import EngineStats
    from aios_serve.observability.metrics import ServerMetrics

    class ReportingModel:
        spec = SimpleNamespace(name="gen")

        def stats(self) -> EngineStats:
            return EngineStats(running=3, waiting=2, kv_cache_usage=0.25, batch_size=3)

    text = ServerMetrics(models=lambda: [ReportingModel()]).render().decode()
    for line in (
        'vllm:num_requests_running{model_name="gen"} 3.0',
        'vllm:num_requests_waiting{model_name="gen"} 2.0',
        'vllm:kv_cache_usage_perc{model_name="gen"} 0.25',
        'aios_serve_batch_size{model_name="gen"} 3.0',
    ):
        assert line in text.splitlines()
