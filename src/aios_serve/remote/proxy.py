"""The HTTP relay of a remote model: every request is forwarded, as the raw JSON body with `model`
rewritten to the upstream's name, to one of its upstream servers; answers pass through unchanged
and the usage they report is recorded for the request."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response

from aios_serve.api.common.context import Usage, context_of
from aios_serve.config import Capability
from aios_serve.errors import ApiError, ErrorKind
from aios_serve.observability.request_ids import REQUEST_ID_HEADER
from aios_serve.remote.pool import Upstream, UpstreamPool
from aios_serve.remote.streaming import Exchange, RelayedStream, relay_events, usage_of

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


class UpstreamProxy:
    """Relays one served name's requests to its upstreams (a `registry.Forwarder`).

    `client` is set by the owning model while it runs; requests before that are a bug.
    """

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.client: httpx.AsyncClient | None = None

    @property
    def served_name(self) -> str:
        return self.pool.served_name

    async def forward(self, capability: Capability, raw: Request) -> Response:
        """Send an API request on to the upstream's endpoint for `capability`."""
        return await self._relay(UPSTREAM_PATHS[capability], raw, capability in STREAMING_CAPABILITIES)

    async def forward_path(self, path: str, raw: Request) -> Response:
        """Send a request that never streams (vLLM's /tokenize, /detokenize) on to `path` upstream."""
        return await self._relay(path, raw, may_stream=False)

    async def _relay(self, path: str, raw: Request, may_stream: bool) -> Response:
        """Send the request on; retry once on another upstream if the connection could not open."""
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
                    f"The upstream server for `{self.served_name}` rejected the configured API key.",
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
                context_of(raw).usage = Usage(*usage)
        return Response(content, response.status_code, headers, media_type=media_type)

    async def _send(self, path: str, body: dict[str, Any], raw: Request) -> Exchange:
        client = self._client()
        tried: tuple[Upstream, ...] = ()
        while True:
            upstream = self.pool.acquire(exclude=tried)
            request = client.build_request(
                "POST",
                upstream.url + path,
                content=orjson.dumps({**body, "model": upstream.model}),
                headers={
                    **upstream.headers,
                    "Content-Type": "application/json",
                    REQUEST_ID_HEADER: context_of(raw).request_id,
                },
            )
            try:
                response = await self._send_once(client, upstream, request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent: safe to try once more, elsewhere.
                self.pool.eject(upstream, f"connect failed: {type(exc).__name__}")
                tried += (upstream,)
                if len(tried) > 1 or len(tried) == len(self.pool.upstreams):
                    raise ApiError(
                        ErrorKind.BAD_GATEWAY,
                        f"Could not connect to an upstream server for `{self.served_name}`.",
                    ) from exc
            except httpx.TimeoutException as exc:
                raise self._timeout(exc) from exc
            except httpx.HTTPError as exc:
                raise self._broken(upstream, exc) from exc
            else:
                return Exchange(self.pool, upstream, response)

    async def _send_once(
        self, client: httpx.AsyncClient, upstream: Upstream, request: httpx.Request
    ) -> httpx.Response:
        """Send to one upstream; however that ends without a response (an error, or the client
        leaving before the upstream answered), the upstream is released."""
        try:
            return await client.send(request, stream=True)
        except BaseException:
            self.pool.release(upstream)
            raise

    def _client(self) -> httpx.AsyncClient:
        assert self.client is not None, f"remote model {self.served_name} used before start()"
        return self.client

    def _timeout(self, exc: httpx.TimeoutException) -> ApiError:
        return ApiError(
            ErrorKind.TIMEOUT,
            f"The upstream server for `{self.served_name}` did not answer in time ({type(exc).__name__}).",
        )

    def _broken(self, upstream: Upstream, exc: httpx.HTTPError) -> ApiError:
        log.warning("upstream %s of %s failed mid-request: %r", upstream.url, self.served_name, exc)
        return ApiError(
            ErrorKind.BAD_GATEWAY,
            f"The upstream server for `{self.served_name}` failed mid-request ({type(exc).__name__}).",
        )
