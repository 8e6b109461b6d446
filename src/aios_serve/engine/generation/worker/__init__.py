"""Generation engines in supervised worker processes: `WorkerEngine` (the server's side),
`worker_main` (the spawned process) and the messages between them."""

from __future__ import annotations

from aios_serve.engine.generation.worker.client import WorkerEngine
from aios_serve.engine.generation.worker.state import WorkerHealth, WorkerState

__all__ = ["WorkerEngine", "WorkerHealth", "WorkerState"]
