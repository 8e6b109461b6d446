"""The generation worker's main: one spawned process per model, running the model's engine.

It opens the engine from its `EngineSpec`, answers `Ready`, then serves `Submit`/`Abort`/`Check`/
`Stop` messages on its own asyncio loop. Each request's updates are collected as the engine
delivers them and sent as one `Updates` batch per loop turn (one engine step delivers all its
requests' updates at once, so that is a batch per step). A `Heartbeat` goes out every second.

The worker never outlives the server: a thread reading the pipe exits the process at EOF, and
another polls `os.getppid()` (the pipe may stay open if its end leaked into another process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from aios_serve.engine.generation.interface import EngineClient, RequestUpdate, UpdateStream
from aios_serve.engine.generation.worker.messages import (
    Abort,
    Check,
    EngineInfo,
    ErrorInfo,
    Failed,
    Heartbeat,
    Ready,
    Reply,
    Stop,
    Submit,
    Updates,
    encode_error,
)

log = logging.getLogger("aios_serve.engine.generation.worker")

HEARTBEAT_S = 1.0
PARENT_POLL_S = 0.5

Opener = Callable[[Any], Awaitable[EngineClient]]


@dataclass(frozen=True)
class WorkerOptions:
    """How the server starts one worker."""

    name: str
    parent_pid: int
    log_level: int = logging.INFO
    hang_after_steps: int | None = None
    """Test hook: after this many update batches the worker's loop sleeps (a hung worker)."""


def worker_main(conn: Connection, opener: Opener | None, spec: Any, options: WorkerOptions) -> None:
    """The spawned process's entry point (`opener` None: `factory.open_engine`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the server's to handle
    logging.basicConfig(
        level=options.log_level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s worker[{options.name} pid {os.getpid()}] %(message)s",
    )
    _exit_with_parent(options.parent_pid)
    if opener is None:
        from aios_serve.engine.generation.factory import open_engine

        opener = open_engine
    try:
        asyncio.run(_Worker(conn, opener, spec, options).run())
    finally:
        conn.close()


def _exit_with_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        log.warning("the server process is gone; the worker exits")
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _Worker:
    """The worker's state: the engine, the requests it runs and their pending updates."""

    def __init__(self, conn: Connection, opener: Opener, spec: Any, options: WorkerOptions) -> None:
        self.conn = conn
        self.opener = opener
        self.spec = spec
        self.options = options
        self.engine: EngineClient | None = None
        self.streams: dict[int, UpdateStream] = {}
        self.pumps: dict[int, asyncio.Task[None]] = {}
        self.checks: set[asyncio.Task[None]] = set()
        self.outbox: list[tuple[int, RequestUpdate, ErrorInfo | None]] = []
        self.flush_scheduled = False
        self.batches = 0
        self.stopping: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        try:
            engine = await self.opener(self.spec)
        except Exception as exc:
            log.exception("the engine failed to start")
            self.conn.send(Failed(f"{type(exc).__name__}: {exc}"))
            return
        self.engine = engine
        info = EngineInfo(
            engine.engine_name, engine.context_length, engine.max_sequences, tuple(engine.eog_ids)
        )
        self.conn.send(Ready(info))
        threading.Thread(target=self._read, name="worker-reader", daemon=True).start()
        beat = asyncio.create_task(self._heartbeat())
        await self.stopping.wait()
        beat.cancel()
        await engine.stop()
        await asyncio.sleep(0)  # let the pumps see the engine's final errors (the server ignores them)

    # --- receiving ------------------------------------------------------------------------

    def _read(self) -> None:
        """Blocking reads on a thread; each message is handled on the loop. EOF: the server died."""
        assert self.loop is not None
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                log.warning("the server closed the pipe; the worker exits")
                os._exit(0)
            self.loop.call_soon_threadsafe(self._handle, message)
            if isinstance(message, Stop):
                return

    def _handle(self, message: object) -> None:
        if isinstance(message, Submit):
            self._submit(message)
        elif isinstance(message, Abort):
            stream = self.streams.pop(message.request_id, None)
            pump = self.pumps.pop(message.request_id, None)
            if stream is not None:
                stream.cancel()
            if pump is not None:
                pump.cancel()
        elif isinstance(message, Check):
            task = asyncio.create_task(self._check(message))
            self.checks.add(task)
            task.add_done_callback(self.checks.discard)
        elif isinstance(message, Stop):
            assert self.stopping is not None
            self.stopping.set()

    def _submit(self, message: Submit) -> None:
        assert self.engine is not None
        try:
            stream = self.engine.generate(message.prompt_ids, message.params, message.n)
        except Exception as exc:  # QueueFull, EngineUnavailable...: the request's only update
            self._queue(message.request_id, RequestUpdate(finished=True), encode_error(exc))
            return
        self.streams[message.request_id] = stream
        self.pumps[message.request_id] = asyncio.create_task(self._pump(message.request_id, stream))

    async def _check(self, message: Check) -> None:
        assert self.engine is not None
        error: ErrorInfo | None = None
        try:
            await self.engine.check(message.params, message.n)
        except Exception as exc:
            error = encode_error(exc)
        self.conn.send(Reply(message.request_id, error))

    # --- sending --------------------------------------------------------------------------

    async def _pump(self, request_id: int, stream: UpdateStream) -> None:
        try:
            async for update in stream:
                self._queue(request_id, update, None)
        except Exception as exc:
            self._queue(request_id, RequestUpdate(finished=True), encode_error(exc))
        finally:
            self.streams.pop(request_id, None)
            self.pumps.pop(request_id, None)

    def _queue(self, request_id: int, update: RequestUpdate, error: ErrorInfo | None) -> None:
        if update.error is not None:
            error, update = encode_error(update.error), replace(update, error=None, finished=True)
        self.outbox.append((request_id, update, error))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send what the last engine step produced, as one message."""
        self.flush_scheduled = False
        items, self.outbox = self.outbox, []
        if not items or self.engine is None:
            return
        self.batches += 1
        self.conn.send(Updates(items, self.engine.stats(), self._progress()))
        hang_after = self.options.hang_after_steps
        if hang_after is not None and self.batches >= hang_after:
            log.warning("test hook: the worker hangs after %d update batches", self.batches)
            time.sleep(3600)

    def _progress(self) -> int:
        """Steps so far: forward passes where the engine counts them, plus batches sent."""
        assert self.engine is not None
        stats = self.engine.stats()
        return self.batches + (stats.prompt_passes or 0) + (stats.decode_passes or 0)

    async def _heartbeat(self) -> None:
        assert self.engine is not None
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.conn.send(Heartbeat(self.engine.stats(), self._progress()))
