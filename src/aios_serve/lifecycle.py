"""A request's life around the app: timeout, client disconnect, fault logging; and the server's:
graceful shutdown that drains requests in flight before the app's own shutdown runs."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aios_serve.api.common.context import context_of
from aios_serve.config import ServerConfig
from aios_serve.errors import ApiError, ErrorKind, error_response
from aios_serve.limits import BodySizeLimitMiddleware
from aios_serve.observability.request_ids import REQUEST_ID_HEADER
from aios_serve.security import ApiKeyMiddleware, KeyRing

log = logging.getLogger("aios_serve.lifecycle")


def _request_id(scope: Scope, response_headers: list[tuple[bytes, bytes]]) -> str:
    """The id the observability middleware gave the request, else the response's or the client's."""
    state_id = context_of(scope).request_id
    if state_id != "-":
        return state_id
    wanted = REQUEST_ID_HEADER.lower().encode()
    for name, value in [*response_headers, *scope["headers"]]:
        if name.lower() == wanted:
            return value.decode("latin-1")
    return f"unlabelled-{uuid.uuid4().hex[:12]}"


class _ClientWatch:
    """Passes the body through to the app; once it is read, listens for the client leaving."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.body_read = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def receive(self) -> Message:
        if self.body_read.is_set():
            await self.disconnected.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected.set()
        elif not message.get("more_body", False):
            self.body_read.set()
        return message

    async def wait_for_disconnect(self) -> None:
        await self.body_read.wait()
        while not self.disconnected.is_set():
            if (await self._receive())["type"] == "http.disconnect":
                self.disconnected.set()


class RequestGuardMiddleware:
    """Cancels a request whose client disconnected (its queued work is dropped by the engine),
    answers 504 when no response began within the timeout, and logs every 5xx but 503 (that is
    back-pressure) and every escaping exception with the request id, so a failure is traceable."""

    def __init__(self, app: ASGIApp, request_timeout_s: float) -> None:
        self.app = app
        self.request_timeout_s = request_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = _ClientWatch(receive)
        started = finished = timed_out = client_left = False
        status = 0
        headers: list[tuple[bytes, bytes]] = []

        async def guarded_send(message: Message) -> None:
            nonlocal started, finished, status, headers
            if message["type"] == "http.response.start":
                started, status, headers = True, message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        async def run_app() -> None:
            await self.app(scope, watch.receive, guarded_send)

        app_task = asyncio.create_task(run_app())

        def on_timeout() -> None:
            nonlocal timed_out
            if not started:
                timed_out = True
                context_of(scope).cancelled = "timeout"
                app_task.cancel()

        def on_disconnect(_: asyncio.Task[None]) -> None:
            nonlocal client_left
            if watch.disconnected.is_set() and not finished and not app_task.done():
                client_left = True
                context_of(scope).cancelled = "client_disconnected"
                log.info("client left %s %s; cancelling its request", scope["method"], scope["path"])
                app_task.cancel()

        timer = asyncio.get_running_loop().call_later(self.request_timeout_s, on_timeout)
        watcher = asyncio.create_task(watch.wait_for_disconnect())
        watcher.add_done_callback(on_disconnect)
        try:
            await app_task
        except asyncio.CancelledError:
            if not (timed_out or client_left):  # this middleware itself was cancelled (drain timeout)
                app_task.cancel()
                raise
            if timed_out:
                error = ApiError(
                    ErrorKind.TIMEOUT,
                    f"The request did not complete within {self.request_timeout_s:g} s.",
                )
                await error_response(error)(scope, receive, send)
        except Exception as exc:
            log.error(
                "request_id=%s %s %s failed: %s",
                _request_id(scope, headers),
                scope["method"],
                scope["path"],
                type(exc).__name__,
            )
            raise
        finally:
            timer.cancel()
            watcher.cancel()
        if status >= 500 and status != 503:  # 503 is back-pressure working, not a fault
            log.error(
                "request_id=%s %s %s answered %d",
                _request_id(scope, headers),
                scope["method"],
                scope["path"],
                status,
            )


def install_guards(app: FastAPI, config: ServerConfig) -> None:
    """Outermost first: request guard, API keys, body size (add_middleware prepends)."""
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=config.limits.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=KeyRing(config.api_keys), open_paths=config.open_paths)
    app.add_middleware(RequestGuardMiddleware, request_timeout_s=config.limits.request_timeout_s)


def _exit_after_drain(signum: int, _: FrameType | None) -> None:
    """uvicorn re-raises the signal it stopped on after the drain; this makes that a clean exit."""
    raise SystemExit(0)


def serve(app: FastAPI, host: str, port: int, log_level: str, drain_timeout_s: int) -> None:
    """Run uvicorn. On SIGTERM/SIGINT it stops accepting, lets requests in flight finish for up
    to `drain_timeout_s` (then cancels them), runs the app's lifespan shutdown (models stop,
    usage records flush), and the process exits 0."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_after_drain)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=drain_timeout_s,
        )
    )
    try:
        server.run()
    finally:
        log.info("shutdown complete")
