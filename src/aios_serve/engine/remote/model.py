"""A remote model: every request is forwarded, as the raw JSON body with `model` rewritten to the
upstream's name, to one of its upstream servers; answers pass through unchanged."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response

from aios_serve.api.common.request_state import note_usage
from aios_serve.config import Capability, ModelSpec
from aios_serve.engine.remote.pool import Upstream, UpstreamPool
from aios_serve.engine.remote.streaming import Exchange, RelayedStream, relay_events, usage_of
from aios_serve.errors import ApiError, ErrorKind
from aios_serve.observability.engine_stats import EngineStats

log = logging.getLogger("aios_serve.remote")

UPSTREAM_PATHS: dict[Capability, str] = {
    "embeddings": "/v1/embeddings",
    "rerank": "/v1/rerank",
    "score": "/v1/score",
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
}
STREAMING_CAPABILITIES: tuple[Capability, ...] = ("completions", "chat")
PASSED_HEADERS = ("retry-after",)


class RemoteModel:
    """A served name backed by upstream OpenAI-compatible servers."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.pool = UpstreamPool(spec.name, spec.upstreams, spec.remote)
        self._client: httpx.AsyncClient | None = None
        self._max_model_len = spec.max_model_len or 0

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def stats(self) -> EngineStats:
        """Requests in flight at the upstreams (vllm:num_requests_running in /metrics)."""
        return EngineStats(running=sum(upstream.outstanding for upstream in self.pool.upstreams))

    async def start(self) -> None:
        options = self.spec.remote
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=options.connect_timeout_s,
                read=options.read_timeout_s,
                write=options.write_timeout_s,
                pool=options.connect_timeout_s,
            ),
            limits=httpx.Limits(max_connections=options.max_connections * len(self.pool.upstreams)),
            headers={"Accept-Encoding": "identity"},  # bytes pass through as the upstream sent them
        )
        await self.pool.check_all(self._client)
        for upstream in self.pool.upstreams:
            if upstream.failed_checks:
                self.pool.eject(upstream, "not healthy at start-up")
        if not self._max_model_len:
            await self._learn_max_model_len(self._client)
        self.pool.start_checks(self._client)

    async def stop(self) -> None:
        await self.pool.stop_checks()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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

    async def forward(self, capability: Capability, raw: Request) -> Response:
        """Send an API request on to the upstream's endpoint for `capability`."""
        return await self._relay(UPSTREAM_PATHS[capability], raw, capability in STREAMING_CAPABILITIES)

    async def forward_path(self, path: str, raw: Request) -> Response:
        """Send a request that never streams (vLLM's /tokenize, /detokenize) on to `path` upstream."""
        return await self._relay(path, raw, may_stream=False)

    async def _relay(self, path: str, raw: Request, may_stream: bool) -> Response:
        """Send the request on; retry once on another upstream if the connection could not open."""
        assert self._client is not None, "remote model used before start()"
        body: dict[str, Any] = orjson.loads(await raw.body())
        streaming = may_stream and bool(body.get("stream"))
        client_wants_usage = False
        if streaming:
            stream_options = dict(body.get("stream_options") or {})
            client_wants_usage = bool(stream_options.get("include_usage"))
            # Ask for the usage chunk always, so the usage report counts the call; it is
            # dropped again on the way back when the client did not ask for it.
            body["stream_options"] = {**stream_options, "include_usage": True}
        exchange = await self._send(path, body, raw)
        upstream, response = exchange.upstream, exchange.response
        relayed = False
        try:
            if response.status_code in (401, 403):
                raise ApiError(
                    ErrorKind.BAD_GATEWAY,
                    f"The upstream server for `{self.spec.name}` rejected the configured API key.",
                )
            media_type = response.headers.get("content-type", "application/json")
            headers = {k: v for k, v in response.headers.items() if k.lower() in PASSED_HEADERS}
            if streaming and media_type.startswith("text/event-stream"):
                events = relay_events(exchange, raw, client_wants_usage)
                relayed = True  # the stream closes the exchange when it ends
                return RelayedStream(exchange, events, response.status_code, headers, media_type)
            content = await response.aread()
        except httpx.TimeoutException as exc:
            raise self._timeout(exc) from exc
        except httpx.HTTPError as exc:
            raise self._broken(upstream, exc) from exc
        finally:
            if not relayed:
                await exchange.close()
        if response.is_success:
            usage = usage_of(content)
            if usage is not None:
                note_usage(raw, *usage)
        return Response(content, response.status_code, headers, media_type=media_type)

    async def _send(self, path: str, body: dict[str, Any], raw: Request) -> Exchange:
        assert self._client is not None
        tried: tuple[Upstream, ...] = ()
        while True:
            upstream = self.pool.acquire(exclude=tried)
            request = self._client.build_request(
                "POST",
                upstream.url + path,
                content=orjson.dumps({**body, "model": upstream.model}),
                headers={
                    **upstream.headers,
                    "Content-Type": "application/json",
                    "X-Request-Id": str(getattr(raw.state, "request_id", "")),
                },
            )
            try:
                response = await self._send_once(upstream, request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent: safe to try once more, elsewhere.
                self.pool.eject(upstream, f"connect failed: {type(exc).__name__}")
                tried += (upstream,)
                if len(tried) > 1 or len(tried) == len(self.pool.upstreams):
                    raise ApiError(
                        ErrorKind.BAD_GATEWAY,
                        f"Could not connect to an upstream server for `{self.spec.name}`.",
                    ) from exc
            except httpx.TimeoutException as exc:
                raise self._timeout(exc) from exc
            except httpx.HTTPError as exc:
                raise self._broken(upstream, exc) from exc
            else:
                return Exchange(self.pool, upstream, response)

    async def _send_once(self, upstream: Upstream, request: httpx.Request) -> httpx.Response:
        """Send to one upstream; however that ends without a response (an error, or the client
        leaving before the upstream answered), the upstream is released."""
        assert self._client is not None
        try:
            return await self._client.send(request, stream=True)
        except BaseException:
            self.pool.release(upstream)
            raise

    def _timeout(self, exc: httpx.TimeoutException) -> ApiError:
        return ApiError(
            ErrorKind.TIMEOUT,
            f"The upstream server for `{self.spec.name}` did not answer in time ({type(exc).__name__}).",
        )

    def _broken(self, upstream: Upstream, exc: httpx.HTTPError) -> ApiError:
        log.warning("upstream %s of %s failed mid-request: %r", upstream.url, self.spec.name, exc)
        return ApiError(
            ErrorKind.BAD_GATEWAY,
            f"The upstream server for `{self.spec.name}` failed mid-request ({type(exc).__name__}).",
        )
