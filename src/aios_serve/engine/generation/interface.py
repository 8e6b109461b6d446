"""The line between serving and generation engines.

A request goes in as prompt token ids, `SamplingParams` (with an `OutputConstraint` where the
output must match a grammar) and a number of choices. What comes out is an `UpdateStream`: an
async iterator of `RequestUpdate`s (per choice: new token ids, text, logprobs, finish reason),
with `cancel()` to abort. Engines also report `EngineStats`. Everything else (sequences, KV
caches, sampling, grammar matchers) stays behind this line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aios_serve.backends.protocols.generation import Vocabulary
from aios_serve.engine.errors import EngineError, EngineUnavailable, QueueFull
from aios_serve.engine.generation.constraints.spec import OutputConstraint
from aios_serve.engine.generation.sampling import SamplingParams, TokenLogprobs
from aios_serve.observability.engine_stats import EngineStats

log = logging.getLogger("aios_serve.engine.generation")

__all__ = [
    "ChoiceUpdate",
    "EngineClient",
    "EngineError",
    "EngineUnavailable",
    "OutputConstraint",
    "QueueFull",
    "RequestUpdate",
    "UpdateStream",
    "Vocabulary",
]


# --- what comes out -----------------------------------------------------------------------


@dataclass
class ChoiceUpdate:
    """What one choice produced since the last update."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprobs]
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestUpdate:
    """One engine step's output for a request: its choices that moved, or an error."""

    choices: list[ChoiceUpdate] = field(default_factory=list)
    error: BaseException | None = None
    finished: bool = False
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    """Set once, on the first update: an entry per prompt token (the first is None)."""


class UpdateStream:
    """The asyncio side of one request: an engine thread (or a worker's pipe) delivers updates,
    the API iterates them; `cancel()` tells the engine to stop and free the request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_tokens: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[RequestUpdate] = asyncio.Queue()
        self.prompt_tokens = prompt_tokens
        self._on_cancel: Callable[[], None] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._pending: list[RequestUpdate] = []
        self._wake_scheduled = False
        self._sink: Callable[[RequestUpdate], None] | None = None

    def on_cancel(self, abort: Callable[[], None]) -> None:
        """What `cancel()` calls (set by the engine when it accepts the request)."""
        self._on_cancel = abort

    def deliver(self, update: RequestUpdate) -> None:
        """Hand over an update; safe to call from any thread. Updates that arrive while the loop
        has not yet taken the last ones ride on the same wake-up."""
        with self._lock:
            sink = self._sink
            if sink is None:
                self._pending.append(update)
                if self._wake_scheduled:
                    return
                self._wake_scheduled = True
        if sink is not None:
            sink(update)
            return
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the event loop is gone (shutdown)
            log.debug("dropping an update for a closed event loop")

    def _wake(self) -> None:
        with self._lock:
            updates, self._pending = self._pending, []
            self._wake_scheduled = False
        for update in updates:
            self._queue.put_nowait(update)

    def forward_to(self, sink: Callable[[RequestUpdate], None]) -> None:
        """From now on, hand every update to `sink` on the delivering thread instead of queueing
        it for this loop (a worker gathers them for its pipe). Call on the loop's thread;
        updates already delivered go to `sink` first, in order."""
        with self._lock:
            while not self._queue.empty():
                sink(self._queue.get_nowait())
            for update in self._pending:
                sink(update)
            self._pending.clear()
            self._sink = sink

    def cancel(self) -> None:
        """Stop generating; the engine frees the request at its next step."""
        if self._on_cancel is not None and not self._closed:
            self._on_cancel()

    def __aiter__(self) -> UpdateStream:
        return self

    async def __anext__(self) -> RequestUpdate:
        if self._closed:
            raise StopAsyncIteration
        update = await self._queue.get()
        if update.error is not None:
            self._closed = True
            raise update.error
        if update.finished:
            self._closed = True
        return update


# --- the engine ---------------------------------------------------------------------------


@runtime_checkable
class EngineClient(Protocol):
    """A running generation engine for one model, in this process or in a worker."""

    @property
    def engine_name(self) -> str:
        """`openvino`, `llama.cpp` or `transformers` (named in logs, errors and /v1/models)."""

    @property
    def context_length(self) -> int:
        """The longest prompt plus output of one sequence."""

    @property
    def max_sequences(self) -> int:
        """The most choices one request may ask for."""

    @property
    def eog_ids(self) -> Sequence[int]:
        """Token ids that end generation (unless `ignore_eos`)."""

    @property
    def engine_details(self) -> str:
        """What the start-up banner adds after the engine's name (empty: nothing)."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Fail what is still running and release the engine."""

    async def check(self, params: SamplingParams, n: int) -> None:
        """Reject what this engine cannot run before anything streams: raises GrammarError for
        a constraint that does not compile."""

    def generate(self, prompt_ids: list[int], params: SamplingParams, n: int) -> UpdateStream:
        """Queue a request (raises QueueFull or EngineUnavailable); iterate the stream."""

    def on_step_end(self, callback: Callable[[], None]) -> None:
        """Have `callback` called on the engine's thread each time a step (or a failure) has
        delivered its updates: a worker writes them to its pipe then, as one batch."""

    def stats(self) -> EngineStats: ...
