"""One pure ASGI middleware: request ids, the access log line, HTTP metrics and usage records."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aios_serve.api.common.context import RequestContext, context_of
from aios_serve.observability.metrics import ServerMetrics
from aios_serve.observability.request_ids import REQUEST_ID_HEADER, current_request_id, request_id_from
from aios_serve.usage.records import UsageRecord, api_type_of
from aios_serve.usage.store import UsageStore

access_log = logging.getLogger("aios_serve.access")

# A response cut short because the client went away (nginx's convention).
CLIENT_CLOSED_REQUEST = 499
GENERATION_APIS = frozenset({"completions", "chat"})


def request_id_of(request: Request) -> str:
    return context_of(request).request_id


@dataclass
class _Exchange:
    """What the middleware saw of one request's response."""

    started: float
    arrived: float
    request_id: str
    status: int | None = None
    streaming: bool = False
    first_body_at: float | None = None
    finished: bool = False


class ObservabilityMiddleware:
    """Wraps every HTTP request; records usage after the last body chunk (or a disconnect)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, store: UsageStore, record_usage: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.store = store
        self.record_usage = record_usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(_header(scope, b"x-request-id"))
        context = context_of(scope)
        context.request_id = request_id
        # Not reset: each request has its own task, and error handlers outside log with the id too.
        current_request_id.set(request_id)
        exchange = _Exchange(started=time.perf_counter(), arrived=time.time(), request_id=request_id)
        self.metrics.http_in_progress.inc()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                exchange.streaming = headers.get("content-type", "").startswith("text/event-stream")
            elif message["type"] == "http.response.body":
                if exchange.first_body_at is None and message.get("body"):
                    exchange.first_body_at = time.perf_counter()
                if not message.get("more_body", False):
                    # Recorded as the last chunk leaves, so a client that has read the whole
                    # response can already see it in /v1/usage.
                    self._finish(scope, exchange, exchange.status or 500)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if not exchange.finished:
                self._finish(scope, exchange, 500 if exchange.status is None else CLIENT_CLOSED_REQUEST)
            raise
        if not exchange.finished:
            # The app returned without a last chunk: the client left (the request guard marks
            # that in the state, also when it left before the response began).
            client_left = exchange.status is not None or context.cancelled == "client_disconnected"
            self._finish(scope, exchange, CLIENT_CLOSED_REQUEST if client_left else 500)

    def _finish(self, scope: Scope, exchange: _Exchange, status: int) -> None:
        exchange.finished = True
        self.metrics.http_in_progress.dec()
        try:
            self._account(scope, exchange, status)
        except Exception:  # accounting must never fail the response it accounts for
            access_log.exception("could not account for request %s", exchange.request_id)

    def _account(self, scope: Scope, exchange: _Exchange, status: int) -> None:
        now = time.perf_counter()
        latency_s = now - exchange.started
        context = context_of(scope)
        status = context.stream_status or status  # a stream that ended in an error
        route = scope.get("route")
        endpoint = str(getattr(route, "path", "unmatched"))
        model = context.model
        usage = context.usage
        api = api_type_of(endpoint)
        first_token_s = self._first_token_s(context, exchange, api)
        prompt_tokens, completion_tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        self.metrics.observe_request(
            endpoint,
            model,
            status,
            latency_s,
            (prompt_tokens, completion_tokens) if model else None,
            first_token_s,
        )
        caller = context.caller.name
        if model is not None and self.record_usage:
            self.store.add(
                UsageRecord(
                    time=exchange.arrived,
                    request_id=exchange.request_id,
                    caller=caller,
                    model=str(model),
                    api=api,
                    prompt_tokens=int(prompt_tokens),
                    completion_tokens=int(completion_tokens),
                    status=status,
                    latency_s=latency_s,
                )
            )
        # The CLI's log format puts the id on every line; it is in the message too, for processes
        # whose logging is set up by someone else (e.g. Ray workers).
        access_log.info(
            'request_id=%s "%s %s" %d %.1fms caller=%s model=%s tokens=%d/%d',
            exchange.request_id,
            scope.get("method", "-"),
            scope.get("path", "-"),
            status,
            latency_s * 1000,
            caller,
            model or "-",
            prompt_tokens,
            completion_tokens,
        )

    @staticmethod
    def _first_token_s(context: RequestContext, exchange: _Exchange, api: str) -> float | None:
        """The serving's note if any; else, for a streamed generation, its first chunk."""
        if api not in GENERATION_APIS or context.model is None:
            return None
        if context.first_token_at is not None:
            return context.first_token_at - exchange.started
        if exchange.streaming and exchange.first_body_at is not None:
            return exchange.first_body_at - exchange.started
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None
