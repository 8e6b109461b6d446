"""The embedded usage store: a SQLite file in WAL mode, written in batches by one thread.

Requests only put a record on a queue; the writer thread sleeps and commits whatever has queued
every `flush_interval_s` (or sooner when `batch_size` records wait or someone flushes), so a
request does not wake a thread. A committed record survives a
crash of the server; records still on the queue when it dies are lost.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from dataclasses import astuple
from pathlib import Path
from typing import Any

from aios_serve.usage.queries import UsageQuery, aggregate_sql, shape_row
from aios_serve.usage.records import UsageRecord

log = logging.getLogger("aios_serve.usage")

STORE_FILE = "usage.sqlite3"
DEFAULT_DATA_DIR = "data"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    time REAL NOT NULL,
    request_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    model TEXT NOT NULL,
    api TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    status INTEGER NOT NULL,
    latency_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_time ON usage (time);
CREATE INDEX IF NOT EXISTS usage_caller_time ON usage (caller, time);
"""
_INSERT = "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def default_store_path(data_dir: str | None) -> Path:
    """The store file in the data folder (config `data_dir`, else ./data)."""
    return Path(data_dir or DEFAULT_DATA_DIR).expanduser() / STORE_FILE


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class _FlushMarker:
    """Put on the queue by `flush`; set once everything queued before it is committed."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class UsageStore:
    """Accepts records from the event loop without blocking; answers aggregate queries."""

    def __init__(
        self, path: Path, batch_size: int = 512, flush_interval_s: float = 0.25, max_queued: int = 100_000
    ) -> None:
        self.path = path
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queued)
        self._writer: threading.Thread | None = None
        self._wake = threading.Event()  # ends the writer's sleep early
        self.dropped = 0
        self.written = 0

    def open(self) -> None:
        """Create the file and schema, and start the writer thread."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = _connect(self.path)
            with connection:
                connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RuntimeError(f"cannot open the usage store {self.path} (config data_dir): {exc}") from exc
        self._writer = threading.Thread(
            target=self._write_forever, args=(connection,), name="usage-writer", daemon=True
        )
        self._writer.start()
        log.info("usage store at %s", self.path)

    def add(self, record: UsageRecord) -> None:
        """Queue a record; never blocks. A full queue (writer far behind) drops and counts it."""
        try:
            self._queue.put_nowait(record)
            if self._queue.qsize() >= self.batch_size:
                self._wake.set()
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("usage queue full; %d records dropped", self.dropped)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until every record queued so far is committed (False on timeout or no writer)."""
        if self._writer is None or not self._writer.is_alive():
            return False
        marker = _FlushMarker()
        self._queue.put(marker)
        self._wake.set()
        return marker.done.wait(timeout_s)

    async def flush_async(self) -> bool:
        return await asyncio.to_thread(self.flush)

    def close(self) -> None:
        """Commit what is queued and stop the writer."""
        if self._writer is None:
            return
        self._queue.put(_STOP)
        self._wake.set()
        self._writer.join(timeout=30)
        self._writer = None

    def _write_forever(self, connection: sqlite3.Connection) -> None:
        try:
            stop = False
            while not stop:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                batch: list[UsageRecord] = []
                markers: list[_FlushMarker] = []
                while not stop:  # everything queued by now, in one transaction
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    stop = self._collect(item, batch, markers)
                self._commit(connection, batch)
                for marker in markers:
                    marker.done.set()
        finally:
            connection.close()

    @staticmethod
    def _collect(item: object, batch: list[UsageRecord], markers: list[_FlushMarker]) -> bool:
        if isinstance(item, UsageRecord):
            batch.append(item)
        elif isinstance(item, _FlushMarker):
            markers.append(item)
        return item is _STOP

    def _commit(self, connection: sqlite3.Connection, batch: list[UsageRecord]) -> None:
        if not batch:
            return
        try:
            with connection:
                connection.executemany(_INSERT, [astuple(record) for record in batch])
            self.written += len(batch)
        except sqlite3.Error:
            log.exception("could not write %d usage records", len(batch))

    def aggregate(self, query: UsageQuery) -> list[dict[str, Any]]:
        """Aggregate rows for a query, read through a connection of its own."""
        return aggregate_file(self.path, query)

    async def aggregate_async(self, query: UsageQuery) -> list[dict[str, Any]]:
        """Commit what is queued, then aggregate, off the event loop."""
        await self.flush_async()
        return await asyncio.to_thread(self.aggregate, query)


def aggregate_file(path: Path, query: UsageQuery) -> list[dict[str, Any]]:
    """Aggregate a store file (also used by the CLI, on a server's file, read-only)."""
    if not path.exists():
        return []
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    connection.row_factory = sqlite3.Row
    try:
        sql, params = aggregate_sql(query)
        try:
            rows = connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        # Without GROUP BY an empty window still gives one row of zeros: drop it.
        return [shape_row(dict(row)) for row in rows if row["requests"]]
    finally:
        connection.close()
