"""What a model engine may report for the metrics: running, waiting, KV-cache use, batch size.

A served model opts in by having a `stats()` method that returns an `EngineStats`. Models
without it (the encoder models) are read through their batching scheduler instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of an engine's scheduler; None where the engine has no such notion."""

    running: int | None = None  # sequences in the running batch (vllm:num_requests_running)
    waiting: int | None = None  # requests queued, not yet running (vllm:num_requests_waiting)
    kv_cache_usage: float | None = None  # fraction 0..1 of KV-cache cells in use
    batch_size: int | None = None  # sequences in the last batch the engine ran
    prompt_passes: int | None = None  # forward passes that wrote prompt tokens, since start
    decode_passes: int | None = None  # forward passes that decoded one token per sequence
    prefix_cache_queries: int | None = None  # prompt tokens looked up in the prefix cache, since start
    prefix_cache_hits: int | None = None  # of those, tokens found cached


@runtime_checkable
class ReportsEngineStats(Protocol):
    """Implemented by a served model (e.g. the generation model) to feed the metrics."""

    def stats(self) -> EngineStats: ...


def stats_of(model: object) -> EngineStats | None:
    """The model's own stats, else what its encoder scheduler shows, else None (not loaded)."""
    if isinstance(model, ReportsEngineStats):
        return model.stats()
    try:
        scheduler = getattr(model, "scheduler", None)
    except RuntimeError:  # not loaded yet
        return None
    if scheduler is None:
        return None
    return EngineStats(
        waiting=int(getattr(scheduler, "queued_requests", 0)),
        batch_size=int(getattr(scheduler, "last_batch_size", 0)),
    )
