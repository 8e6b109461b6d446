"""Monitoring around the API: metrics, request ids, access log, and usage recording."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Gauge

from aios_serve.config import ServerConfig
from aios_serve.observability.metrics import ServerMetrics
from aios_serve.observability.middleware import ObservabilityMiddleware, request_id_of
from aios_serve.observability.router import router as metrics_router
from aios_serve.registry import ModelRegistry
from aios_serve.usage.router import router as usage_router
from aios_serve.usage.store import UsageStore, default_store_path

__all__ = ["Observability", "install_observability", "request_id_of"]


class Observability:
    """The app's metrics and usage store; `start`/`stop` belong in the app's lifespan."""

    def __init__(self, metrics: ServerMetrics, store: UsageStore) -> None:
        self.metrics = metrics
        self.store = store

    def start(self) -> None:
        self.store.open()

    def stop(self) -> None:
        self.store.close()


def install_observability(app: FastAPI, config: ServerConfig, registry: ModelRegistry) -> Observability:
    """Add the middleware and the /metrics, /v1/usage and /usage routes to the app."""
    metrics = ServerMetrics(models=lambda: registry.models)
    store = UsageStore(default_store_path(config.data_dir))
    dropped = Gauge(
        "aios_serve_usage_records_dropped",
        "Usage records dropped because the store's writer fell behind.",
        registry=metrics.registry,
    )
    dropped.set_function(lambda: float(store.dropped))
    app.state.metrics = metrics
    app.state.usage_store = store
    app.add_middleware(
        ObservabilityMiddleware, metrics=metrics, store=store, record_usage=config.record_usage
    )
    app.include_router(metrics_router)
    app.include_router(usage_router)
    return Observability(metrics, store)
