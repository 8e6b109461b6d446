"""What the server process and a generation worker send each other over their pipe.

Every message is a small frozen dataclass, pickled by `multiprocessing.connection.Connection`
(one `send`/`recv` per message). Requests are named by an integer id the server picks. Errors
cross the pipe as `ErrorInfo` (plain data) and become the interface's typed errors again on the
server side, since exceptions with their own constructors do not always unpickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aios_serve.engine.errors import EngineUnavailable, GrammarError, QueueFull
from aios_serve.engine.generation.interface import RequestUpdate
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.observability.engine_stats import EngineStats

# --- server -> worker ---------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    """Start a request: the worker calls the engine's `generate` and streams its updates back."""

    request_id: int
    prompt_ids: list[int]
    params: SamplingParams
    n: int


@dataclass(frozen=True)
class Abort:
    """Cancel a request (the client left); nothing more is sent for it."""

    request_id: int


@dataclass(frozen=True)
class Check:
    """Run the engine's `check(params, n)`; the worker answers with a `Reply`."""

    request_id: int
    params: SamplingParams
    n: int


@dataclass(frozen=True)
class Stop:
    """Stop the engine (failing what still runs) and exit."""


# --- worker -> server ---------------------------------------------------------------------


@dataclass(frozen=True)
class EngineInfo:
    """The engine's fixed properties, sent once it has started."""

    engine_name: str
    context_length: int
    max_sequences: int
    eog_ids: tuple[int, ...]
    engine_details: str = ""


@dataclass(frozen=True)
class Ready:
    """The engine loaded and started; the worker takes requests from now on."""

    info: EngineInfo


@dataclass(frozen=True)
class Failed:
    """The engine could not load or start; the worker exits after sending this."""

    message: str


@dataclass(frozen=True)
class ErrorInfo:
    """An engine error as plain data: `kind` picks the exception type on the server side."""

    kind: str  # "queue_full" | "unavailable" | "grammar" | "internal"
    message: str
    retry_after: int = 1


@dataclass(frozen=True)
class Reply:
    """The answer to a `Check`: None when the parameters are fine."""

    request_id: int
    error: ErrorInfo | None


@dataclass(frozen=True)
class Updates:
    """What one engine step produced, for every request that moved (a batch per step).

    Each item is (request id, update, error): the update's own `error` is always None on the
    wire; an error travels as `ErrorInfo` beside it. `progress` is the worker's step count.
    """

    items: Sequence[tuple[int, RequestUpdate, ErrorInfo | None]]
    stats: EngineStats
    progress: int


@dataclass(frozen=True)
class Heartbeat:
    """Sent every second by a live worker: its step count and engine stats."""

    stats: EngineStats
    progress: int


ToWorker = Submit | Abort | Check | Stop
FromWorker = Ready | Failed | Reply | Updates | Heartbeat


# --- errors across the pipe ---------------------------------------------------------------


def encode_error(exc: BaseException) -> ErrorInfo:
    """An engine exception as plain data."""
    if isinstance(exc, QueueFull):
        return ErrorInfo("queue_full", str(exc), retry_after=exc.retry_after)
    if isinstance(exc, EngineUnavailable):
        return ErrorInfo("unavailable", str(exc), retry_after=exc.retry_after)
    if isinstance(exc, GrammarError):
        return ErrorInfo("grammar", str(exc))
    return ErrorInfo("internal", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def decode_error(info: ErrorInfo) -> Exception:
    """The typed exception an `ErrorInfo` stands for (RuntimeError for anything unexpected)."""
    if info.kind == "queue_full":
        return QueueFull(info.message, info.retry_after)
    if info.kind == "unavailable":
        return EngineUnavailable(info.message, info.retry_after)
    if info.kind == "grammar":
        return GrammarError(info.message)
    return RuntimeError(info.message)
