"""A worker's supervision settings and the state /health and /metrics show of it."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Literal

WorkerState = Literal["starting", "ready", "restarting", "stopped"]
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 60.0
DEFAULT_HANG_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
HANG_TIMEOUT_ENV = "AIOS_WORKER_HANG_TIMEOUT_S"
TEST_HANG_ENV = "AIOS_WORKER_TEST_HANG_AFTER_STEPS"
"""Test hook: the first worker's loop sleeps after this many update batches."""


@dataclass(frozen=True)
class WorkerHealth:
    """What /health and /metrics show of a worker."""

    state: WorkerState
    restarts: int
    pid: int | None
    last_exit: str | None


def describe_exit(code: int | None) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
