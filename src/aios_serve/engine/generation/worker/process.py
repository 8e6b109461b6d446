"""The generation worker's main: one spawned process per model, running the model's engine.

It opens the engine from its `EngineSpec`, answers `Ready`, then takes `Submit`/`Abort`/`Check`/
`Stop` messages on its own asyncio loop. Updates do not pass through that loop: each request's
stream hands them, on the engine's own thread, to an outbox, and when the step has delivered
them all (`EngineClient.on_step_end`) that thread writes them as one `Updates` message, before
its next step starts: no other thread wakes up to send while the engine computes, which on a
2-core machine would take a core from it. A sender thread answers checks and sends a `Heartbeat`
when nothing was sent for a second.

The worker never outlives the server: a thread reading the pipe exits the process at EOF, and
another polls `os.getppid()` (the pipe may stay open if its end leaked into another process).
"""

from __future__ import annotations

import asyncio
import functools
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
from aios_serve.observability.engine_stats import EngineStats

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
    """Test hook: after this many update batches the engine's thread sleeps (a hung engine)."""


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
        self.checks: set[asyncio.Task[None]] = set()
        self.outbox: list[tuple[int, RequestUpdate, ErrorInfo | None]] = []
        self.replies: list[Reply] = []
        self.outbox_ready = threading.Condition()
        self.send_lock = threading.Lock()  # the pipe has writers on two threads
        self.sent_at = time.monotonic()
        self.sending = True
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
            engine.engine_name,
            engine.context_length,
            engine.max_sequences,
            tuple(engine.eog_ids),
            engine.engine_details,
        )
        engine.on_step_end(self._flush)
        self.conn.send(Ready(info))
        sender = threading.Thread(target=self._send_forever, name="worker-sender", daemon=True)
        sender.start()
        threading.Thread(target=self._read, name="worker-reader", daemon=True).start()
        await self.stopping.wait()
        await engine.stop()
        with self.outbox_ready:
            self.sending = False
            self.outbox_ready.notify()
        await asyncio.to_thread(sender.join, HEARTBEAT_S)

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
            with self.outbox_ready:
                stream = self.streams.pop(message.request_id, None)
            if stream is not None:
                stream.cancel()
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
            self._post(message.request_id, RequestUpdate(finished=True), encode_error(exc))
            self._flush()
            return
        with self.outbox_ready:
            self.streams[message.request_id] = stream
        stream.forward_to(functools.partial(self._post, message.request_id))

    async def _check(self, message: Check) -> None:
        assert self.engine is not None
        error: ErrorInfo | None = None
        try:
            await self.engine.check(message.params, message.n)
        except Exception as exc:
            error = encode_error(exc)
        with self.outbox_ready:
            self.replies.append(Reply(message.request_id, error))
            self.outbox_ready.notify()

    # --- sending --------------------------------------------------------------------------

    def _post(self, request_id: int, update: RequestUpdate, error: ErrorInfo | None = None) -> None:
        """An update for the next `Updates`; called on the engine's thread as it delivers it."""
        if update.error is not None:
            error, update = encode_error(update.error), replace(update, error=None, finished=True)
        with self.outbox_ready:
            if update.finished or error is not None:
                self.streams.pop(request_id, None)
            self.outbox.append((request_id, update, error))

    def _flush(self) -> None:
        """Write what the step delivered as one `Updates` (the engine's thread, at its step end)."""
        assert self.engine is not None
        with self.outbox_ready:
            items, self.outbox = self.outbox, []
        if not items:
            return
        stats = self.engine.stats()
        with self.send_lock:
            self.batches += 1
            self.conn.send(Updates(items, stats, self._progress(stats)))
            self.sent_at = time.monotonic()
        self._test_hang()

    def _send_forever(self) -> None:
        """The sender thread: check replies as they come; a heartbeat after a second of silence."""
        assert self.engine is not None
        while True:
            with self.outbox_ready:
                if not self.replies and self.sending:
                    self.outbox_ready.wait(HEARTBEAT_S)
                replies, self.replies = self.replies, []
                sending = self.sending
            if not sending:
                self._flush()  # what the engine's stop delivered
            with self.send_lock:
                for reply in replies:
                    self.conn.send(reply)
                if not replies and time.monotonic() - self.sent_at >= HEARTBEAT_S:
                    stats = self.engine.stats()
                    self.conn.send(Heartbeat(stats, self._progress(stats)))
                    self.sent_at = time.monotonic()
            if not sending:
                return

    def _test_hang(self) -> None:
        """Test hook: the engine's thread sleeps in its step loop, as a hung engine would."""
        hang_after = self.options.hang_after_steps
        if hang_after is not None and self.batches >= hang_after:
            log.warning("test hook: the engine hangs after %d update batches", self.batches)
            time.sleep(3600)

    def _progress(self, stats: EngineStats) -> int:
        """Steps so far: forward passes where the engine counts them, plus batches sent."""
        return self.batches + (stats.prompt_passes or 0) + (stats.decode_passes or 0)
