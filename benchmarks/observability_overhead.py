"""What the observability middleware and the usage store cost per request (no network, one process).

Run: .venv/bin/python benchmarks/observability_overhead.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aios_serve.api.common.context import Usage, context_of
from aios_serve.observability.metrics import ServerMetrics
from aios_serve.observability.middleware import ObservabilityMiddleware
from aios_serve.usage.records import UsageRecord
from aios_serve.usage.store import UsageStore

REQUESTS = 20_000
RECORDS = 100_000


async def model_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """A request that reached a model and reported its usage, answered at once."""
    context = context_of(scope)
    context.model, context.usage = "m", Usage(10, 2)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


async def seconds_per_request(app: ASGIApp, count: int) -> float:
    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(_: Message) -> None:
        return None

    started = time.perf_counter()
    for _ in range(count):
        scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": [], "state": {}}
        await app(scope, receive, send)
    return (time.perf_counter() - started) / count


async def main() -> None:
    store = UsageStore(Path(tempfile.mkdtemp()) / "usage.sqlite3")
    store.open()
    wrapped = ObservabilityMiddleware(model_endpoint, ServerMetrics(), store, record_usage=True)
    await seconds_per_request(model_endpoint, 1000)
    await seconds_per_request(wrapped, 1000)
    bare = await seconds_per_request(model_endpoint, REQUESTS)
    with_middleware = await seconds_per_request(wrapped, REQUESTS)
    print(
        f"middleware: {with_middleware * 1e6:.1f} us/request vs {bare * 1e6:.1f} bare "
        f"(+{(with_middleware - bare) * 1e6:.1f} us)"
    )
    store.flush(60)
    record = UsageRecord(time.time(), "id", "caller", "m", "embeddings", 1, 0, 200, 0.01)
    started = time.perf_counter()
    for _ in range(RECORDS):
        store.add(record)
    queued = time.perf_counter() - started
    store.flush(120)
    committed = time.perf_counter() - started
    print(
        f"store.add: {queued / RECORDS * 1e6:.2f} us each on the caller's thread; {RECORDS} records "
        f"committed in {committed:.2f} s ({RECORDS / committed:,.0f}/s), dropped {store.dropped}"
    )
    store.close()


if __name__ == "__main__":
    asyncio.run(main())
