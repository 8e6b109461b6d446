"""A remote model: a served name whose upstream servers run it. This process only health-checks
the upstreams and relays requests to them (`UpstreamProxy`, its `forwarder`)."""

from __future__ import annotations

import contextlib

import httpx

from aios_serve.config import ModelSpec
from aios_serve.observability.engine_stats import EngineStats
from aios_serve.remote.pool import UpstreamPool
from aios_serve.remote.proxy import UpstreamProxy
from aios_serve.remote.settings import RemoteOptions
from aios_serve.served_model import Forwarder


def _new_client(options: RemoteOptions, upstream_count: int) -> httpx.AsyncClient:
    """The HTTP client shared by the relay and the health checks of one remote model."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=options.connect_timeout_s,
            read=options.read_timeout_s,
            write=options.write_timeout_s,
            pool=options.connect_timeout_s,
        ),
        limits=httpx.Limits(max_connections=options.max_connections * upstream_count),
        headers={"Accept-Encoding": "identity"},  # bytes pass through as the upstream sent them
    )


class RemoteModel:
    """A served name backed by upstream OpenAI-compatible servers (implements ServedModel)."""

    forwarder: Forwarder | None

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.pool = UpstreamPool(spec.name, spec.upstreams, spec.remote)
        self._proxy = UpstreamProxy(self.pool)
        self.forwarder = self._proxy
        self._max_model_len = spec.max_model_len or 0

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def stats(self) -> EngineStats:
        """Requests in flight at the upstreams (vllm:num_requests_running in /metrics)."""
        return EngineStats(running=sum(upstream.outstanding for upstream in self.pool.upstreams))

    async def start(self) -> None:
        client = _new_client(self.spec.remote, len(self.pool.upstreams))
        self._proxy.client = client
        await self.pool.check_all(client)
        for upstream in self.pool.upstreams:
            if upstream.failed_checks:
                self.pool.eject(upstream, "not healthy at start-up")
        if not self._max_model_len:
            await self._learn_max_model_len(client)
        self.pool.start_checks(client)

    async def stop(self) -> None:
        await self.pool.stop_checks()
        client, self._proxy.client = self._proxy.client, None
        if client is not None:
            await client.aclose()

    async def _learn_max_model_len(self, client: httpx.AsyncClient) -> None:
        """Best effort: vLLM and aios-serve list `max_model_len` in /v1/models."""
        for upstream in self.pool.upstreams:
            if not upstream.healthy:
                continue
            with contextlib.suppress(httpx.HTTPError, ValueError, TypeError, AttributeError):
                response = await client.get(f"{upstream.url}/v1/models", headers=upstream.headers)
                for card in response.json().get("data", []):
                    if card.get("id") == upstream.model and isinstance(card.get("max_model_len"), int):
                        self._max_model_len = card["max_model_len"]
                        return
