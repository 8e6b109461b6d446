"""`WorkerEngine`: a generation engine in a supervised worker process (implements EngineClient).

The server process keeps HTTP, templates, tokenization and metrics; the worker (spawned, never
forked) runs the engine. The event loop reads the pipe itself (`add_reader`) and routes the
worker's `Updates` batches to each request's `UpdateStream`: one wake-up per step, as an engine
in this process costs, not a reader thread's and then the loop's. All of its state is the
loop's (other threads only wait for the process to exit). Supervision:

- death (killed, crashed or exited: EOF on the pipe) fails the requests in flight at once with
  `EngineUnavailable`, logs the exit signal or code, and restarts the worker after 1 s, 2 s, 4 s
  ... capped at 30 s (the sequence starts over once a worker has stayed up for 60 s);
- a hang (requests in flight but no engine step for `hang_timeout_s`, default 60 s, or the
  `AIOS_WORKER_HANG_TIMEOUT_S` environment variable) kills the worker with SIGKILL, then as above;
- while it is not ready, `generate` raises `EngineUnavailable` with a retry delay.

`check()` is a request/reply to the worker (the grammar compiles where it will run, once); it
passes when no worker is ready, leaving the 503 to `generate`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from aios_serve.engine.generation.interface import EngineUnavailable, QueueFull, RequestUpdate, UpdateStream
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.engine.generation.worker.messages import (
    Abort,
    Check,
    EngineInfo,
    Failed,
    Heartbeat,
    Ready,
    Reply,
    Stop,
    Submit,
    ToWorker,
    Updates,
    decode_error,
)
from aios_serve.engine.generation.worker.process import Opener, WorkerOptions, worker_main
from aios_serve.engine.generation.worker.state import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    BACKOFF_RESET_AFTER_S,
    DEFAULT_HANG_TIMEOUT_S,
    HANG_TIMEOUT_ENV,
    STOP_TIMEOUT_S,
    TEST_HANG_ENV,
    WorkerHealth,
    WorkerState,
    describe_exit,
)
from aios_serve.observability.engine_stats import EngineStats

log = logging.getLogger("aios_serve.engine.generation.worker")

READ_BATCH = 64
"""Messages routed per wake-up of the loop at most (then other callbacks get their turn)."""


class _Launch:
    """One worker process and the pipe to it."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.ready: asyncio.Future[EngineInfo] = asyncio.get_running_loop().create_future()
        self.ready_at: float | None = None
        self.hung = False


class WorkerEngine:
    """Runs `opener(spec)` (default: `factory.open_engine`) in a spawned worker and supervises it."""

    def __init__(
        self,
        spec: Any,
        *,
        name: str,
        opener: Opener | None = None,
        max_queued: int | None = None,
        hang_timeout_s: float | None = None,
    ) -> None:
        self.spec = spec
        self.name = name
        self._opener = opener
        self._max_queued = max_queued
        env_timeout = os.environ.get(HANG_TIMEOUT_ENV)
        self.hang_timeout_s = hang_timeout_s or (
            float(env_timeout) if env_timeout else DEFAULT_HANG_TIMEOUT_S
        )
        hang = os.environ.get(TEST_HANG_ENV)
        self._test_hang_after = int(hang) if hang else None
        self._state: WorkerState = "starting"
        self._launch: _Launch | None = None
        self._info: EngineInfo | None = None
        self._stats = EngineStats()
        self._ids = itertools.count(1)
        self._streams: dict[int, UpdateStream] = {}
        self._checks: dict[int, asyncio.Future[Reply]] = {}
        self._progress = -1
        self._progress_at = time.monotonic()
        self._restarts = 0
        self._failures = 0
        self._retry_at = 0.0
        self.last_exit: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._step_ended: Callable[[], None] = lambda: None

    # --- EngineClient ---------------------------------------------------------------------

    @property
    def engine_name(self) -> str:
        return self._known().engine_name

    @property
    def engine_details(self) -> str:
        return self._known().engine_details

    @property
    def context_length(self) -> int:
        return self._known().context_length

    @property
    def max_sequences(self) -> int:
        return self._known().max_sequences

    @property
    def eog_ids(self) -> Sequence[int]:
        return self._known().eog_ids

    def _known(self) -> EngineInfo:
        if self._info is None:
            raise RuntimeError(f"the engine of {self.name} has not started")
        return self._info

    async def start(self) -> None:
        """Spawn the worker and wait until its engine has loaded (raises if it cannot)."""
        self._loop = asyncio.get_running_loop()
        launch = self._spawn(self._test_hang_after)
        try:
            self._info = await launch.ready
        except BaseException:
            self._state = "stopped"
            launch.process.kill()
            raise
        self._ready(launch)
        self._spawn_task(self._watchdog())

    async def stop(self) -> None:
        """Stop restarting, ask the worker to stop its engine and exit; kill it if it does not."""
        self._state = "stopped"
        for task in list(self._tasks):
            task.cancel()
        launch = self._launch
        if launch is not None and launch.process.is_alive():
            self._send(Stop())
            await asyncio.to_thread(launch.process.join, STOP_TIMEOUT_S)
            if launch.process.is_alive():
                log.warning("worker of %s did not stop in %.0f s; killing it", self.name, STOP_TIMEOUT_S)
                launch.process.kill()
                await asyncio.to_thread(launch.process.join, 5)
        self._fail_in_flight(EngineUnavailable(f"The model `{self.name}` is shutting down.", 1))
        if launch is not None:
            self._close(launch)

    async def check(self, params: SamplingParams, n: int) -> None:
        """The worker's engine checks the parameters (request/reply). Availability is not
        checked here: without a ready worker this passes and `generate` raises EngineUnavailable."""
        if self._state != "ready":
            return
        request_id = next(self._ids)
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if not (self._streams or self._checks):
            self._progress_at = time.monotonic()  # the hang clock starts with the work
        self._checks[request_id] = reply
        try:
            self._send(Check(request_id, params, n))
            answer = await reply
        finally:
            self._checks.pop(request_id, None)
        if answer.error is not None:
            raise decode_error(answer.error)

    def generate(self, prompt_ids: list[int], params: SamplingParams, n: int) -> UpdateStream:
        self._require_ready()
        if (
            self._max_queued is not None
            and len(self._streams) - (self._stats.running or 0) >= self._max_queued
        ):
            raise QueueFull(f"the model `{self.name}` has too many queued requests")
        request_id = next(self._ids)
        stream = UpdateStream(asyncio.get_running_loop(), len(prompt_ids))
        stream.on_cancel(lambda: self._abort(request_id))
        if not self._streams:
            self._progress_at = time.monotonic()  # the hang clock starts with the work
        self._streams[request_id] = stream
        self._send(Submit(request_id, prompt_ids, params, n))
        return stream

    def on_step_end(self, callback: Callable[[], None]) -> None:
        """`callback` runs on the event loop after each batch of updates has been routed."""
        self._step_ended = callback

    def stats(self) -> EngineStats:
        return self._stats

    def health(self) -> WorkerHealth:
        launch = self._launch
        pid = launch.process.pid if launch is not None and launch.process.is_alive() else None
        return WorkerHealth(self._state, self._restarts, pid, self.last_exit)

    @property
    def pid(self) -> int | None:
        return self.health().pid

    # --- the worker process ---------------------------------------------------------------

    def _spawn(self, hang_after: int | None) -> _Launch:
        context = get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)
        options = WorkerOptions(
            name=self.name,
            parent_pid=os.getpid(),
            log_level=logging.getLogger("aios_serve").getEffectiveLevel(),
            hang_after_steps=hang_after,
        )
        process = context.Process(
            target=worker_main,
            args=(theirs, self._opener, self.spec, options),
            name=f"aios-worker-{self.name}",
            daemon=True,
        )
        process.start()
        theirs.close()  # EOF on `ours` now means the worker is gone
        launch = _Launch(process, ours)
        self._launch = launch
        log.info("worker of %s started (pid %s)", self.name, process.pid)
        assert self._loop is not None
        self._loop.add_reader(ours.fileno(), self._read, launch)
        return launch

    def _read(self, launch: _Launch) -> None:
        """The pipe is readable (on the loop): route what is waiting; at EOF the worker is gone."""
        try:
            for _ in range(READ_BATCH):
                if not launch.conn.poll():
                    return
                message = launch.conn.recv()
                if isinstance(message, Updates):
                    self._route(message)
                elif isinstance(message, Heartbeat):
                    self._stats = message.stats
                    self._note_progress(message.progress)
                else:
                    self._control(launch, message)
        except (EOFError, OSError):
            self._close(launch)
            self._spawn_task(self._exited(launch))

    def _close(self, launch: _Launch) -> None:
        """Stop reading the worker's pipe and close it."""
        if not launch.conn.closed:
            if self._loop is not None:
                self._loop.remove_reader(launch.conn.fileno())
            launch.conn.close()

    def _route(self, message: Updates) -> None:
        self._stats = message.stats
        self._note_progress(message.progress)
        for request_id, update, error in message.items:
            stream = self._streams.get(request_id)
            if stream is not None and (update.finished or error is not None):
                del self._streams[request_id]
            if stream is None:
                continue  # aborted
            if error is not None:
                update.error = decode_error(error)
                update.finished = True
            stream.deliver(update)
        self._step_ended()

    def _note_progress(self, progress: int) -> None:
        if progress != self._progress:
            self._progress = progress
            self._progress_at = time.monotonic()

    def _control(self, launch: _Launch, message: object) -> None:
        if isinstance(message, Ready):
            if not launch.ready.done():
                launch.ready.set_result(message.info)
        elif isinstance(message, Failed):
            if not launch.ready.done():
                launch.ready.set_exception(
                    RuntimeError(f"the engine of {self.name} failed to start: {message.message}")
                )
        elif isinstance(message, Reply):
            future = self._checks.get(message.request_id)
            if future is not None and not future.done():
                future.set_result(message)

    def _ready(self, launch: _Launch) -> None:
        launch.ready_at = time.monotonic()
        self._state = "ready"
        self._progress_at = time.monotonic()

    # --- supervision ----------------------------------------------------------------------

    async def _exited(self, launch: _Launch) -> None:
        """The worker's pipe hit EOF: name how it ended, fail its requests, restart it."""
        process = launch.process
        await asyncio.to_thread(process.join, 5)
        if process.is_alive():  # closed its pipe but lingers
            process.kill()
            await asyncio.to_thread(process.join, 5)
        how = describe_exit(process.exitcode)
        if launch.hung:
            how = f"hung (no engine step in {self.hang_timeout_s:.0f} s) and {how}"
        if not launch.ready.done():
            launch.ready.set_exception(RuntimeError(f"the worker of {self.name} {how} while starting"))
        if launch is not self._launch or self._state in ("stopped", "starting"):
            return  # stopping, or the first start failed (start() raises it)
        self.last_exit = how
        if launch.ready_at is not None and time.monotonic() - launch.ready_at >= BACKOFF_RESET_AFTER_S:
            self._failures = 0
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**self._failures)
        self._failures += 1
        self._retry_at = time.monotonic() + delay
        in_flight = len(self._streams) + len(self._checks)
        log.error(
            "worker of %s (pid %s) %s; failing %d requests in flight, restarting in %.0f s",
            self.name, process.pid, how, in_flight, delay,
        )  # fmt: skip
        self._state = "restarting"
        message = f"The engine worker of the model `{self.name}` {how}; it is restarting, retry shortly."
        self._fail_in_flight(EngineUnavailable(message, retry_after=math.ceil(delay)))
        self._close(launch)
        await asyncio.sleep(delay)
        if self._state == "stopped":
            return
        self._restarts += 1
        log.info("restarting the worker of %s (restart %d)", self.name, self._restarts)
        new = self._spawn(None)
        try:
            self._info = await new.ready
        except Exception as exc:  # its own exit handler schedules the next try
            log.error("the restarted worker of %s failed: %s", self.name, exc)
            if new.process.is_alive():
                new.process.kill()
            return
        self._ready(new)
        log.info("worker of %s is back (pid %s)", self.name, new.process.pid)

    async def _watchdog(self) -> None:
        """Kill a worker that has requests in flight but has not stepped for `hang_timeout_s`."""
        while True:
            await asyncio.sleep(min(1.0, self.hang_timeout_s / 4))
            launch = self._launch
            busy = bool(self._streams or self._checks)
            if launch is None or self._state != "ready" or not busy or launch.hung:
                continue
            stalled = time.monotonic() - self._progress_at
            if stalled > self.hang_timeout_s:
                log.error("worker of %s (pid %s) made no progress in %.0f s; killing it",
                          self.name, launch.process.pid, stalled)  # fmt: skip
                launch.hung = True
                launch.process.kill()

    def _fail_in_flight(self, error: EngineUnavailable) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.deliver(RequestUpdate(error=error, finished=True))
        for request_id, future in self._checks.items():  # `generate` reports the outage
            if not future.done():
                future.set_result(Reply(request_id, None))

    def _require_ready(self) -> None:
        if self._state == "ready":
            return
        wait = max(1, math.ceil(self._retry_at - time.monotonic()))
        state = "stopped" if self._state == "stopped" else "restarting"
        raise EngineUnavailable(
            f"The engine worker of the model `{self.name}` is {state}; retry shortly.", wait
        )

    def _abort(self, request_id: int) -> None:
        if self._streams.pop(request_id, None) is not None:
            self._send(Abort(request_id))

    def _send(self, message: ToWorker) -> None:
        """Send to the worker; a dead pipe is left to the exit handler, which fails the request."""
        launch = self._launch
        if launch is None:
            return
        try:
            launch.conn.send(message)
        except (OSError, ValueError):
            log.debug("worker of %s is gone; dropped a %s", self.name, type(message).__name__)

    def _spawn_task(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
