"""Relaying an upstream's server-sent events unchanged, reading the usage on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from aios_serve.api.common.context import Usage, context_of
from aios_serve.remote.pool import Upstream, UpstreamPool

EVENT_END = b"\n\n"
DONE_EVENT = b"data: [DONE]\n\n"


@dataclass
class Exchange:
    """One request in flight at an upstream; `close` ends it and releases the upstream once."""

    pool: UpstreamPool
    upstream: Upstream
    response: httpx.Response
    closed: bool = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.release(self.upstream)
            await self.response.aclose()


class RelayedStream(StreamingResponse):
    """A relayed event stream that ends its exchange however the response ends, also when the
    client left before the first event was read (the event generator then never runs)."""

    def __init__(
        self,
        exchange: Exchange,
        events: AsyncIterator[bytes],
        status_code: int,
        headers: Mapping[str, str],
        media_type: str,
    ) -> None:
        super().__init__(events, status_code, headers, media_type=media_type)
        self.exchange = exchange

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.exchange.close()


def usage_counts(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens from an OpenAI-style `usage` object."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("total_tokens"))
    completion = usage.get("completion_tokens") or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion


def usage_of(content: bytes) -> tuple[int, int] | None:
    """The usage a JSON answer reports, if any."""
    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return usage_counts(answer.get("usage")) if isinstance(answer, dict) else None


def _usage_event(event: bytes) -> tuple[tuple[int, int] | None, bool]:
    """The usage an SSE event carries, and whether it is the usage-only last chunk."""
    if b'"usage"' not in event or not event.startswith(b"data:"):
        return None, False
    try:
        chunk = orjson.loads(event[5:].strip())
    except orjson.JSONDecodeError:
        return None, False
    if not isinstance(chunk, dict):
        return None, False
    return usage_counts(chunk.get("usage")), chunk.get("choices") == []


def _error_event(message: str) -> bytes:
    error = {"error": {"message": message, "type": "BadGatewayError", "param": None, "code": 502}}
    return b"data: " + orjson.dumps(error) + EVENT_END


async def relay_events(exchange: Exchange, raw: Request, keep_usage_chunk: bool) -> AsyncIterator[bytes]:
    """Pass each event on as it completes; drop the usage-only chunk the client did not ask for.
    A failure after the stream began becomes an error event followed by `[DONE]`."""
    pending = b""
    saw_done = False
    try:
        try:
            async for data in exchange.response.aiter_bytes():
                pending += data
                while (end := pending.find(EVENT_END)) >= 0:
                    event, pending = pending[: end + 2], pending[end + 2 :]
                    usage, usage_only = _usage_event(event)
                    if usage is not None:
                        context_of(raw).usage = Usage(*usage)
                    saw_done = saw_done or event == DONE_EVENT
                    if usage_only and not keep_usage_chunk:
                        continue
                    yield event
            if pending:
                yield pending
        except httpx.HTTPError as exc:
            name = exchange.pool.served_name
            message = f"The upstream server for `{name}` failed mid-stream ({type(exc).__name__})."
            yield _error_event(message)
            if not saw_done:
                yield DONE_EVENT
    finally:
        await exchange.close()
