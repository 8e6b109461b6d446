"""The encoder's token-budget batching queue: many requests' sequences share one forward pass,
split into length-sorted micro-batches so that padding costs little."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from aios_serve.backends.length_groups import plan_length_groups
from aios_serve.engine.errors import InferenceFailed, QueueFull

log = logging.getLogger("aios_serve.engine.encoder.scheduler")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


def plan_token_budget_groups(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Length-sorted groups of at most `max_tokens` real tokens (a single long row may exceed it).

    For backends that do not pad: only the sum of lengths counts, not the longest row.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and tokens + lengths[index] > max_tokens:
            groups.append(current)
            current, tokens = [], 0
        current.append(index)
        tokens += lengths[index]
    if current:
        groups.append(current)
    return groups


@dataclass
class _Job(Generic[ItemT]):
    """One request's sequences; results land in `outputs` by position."""

    items: list[ItemT]
    lengths: list[int]
    future: asyncio.Future[np.ndarray]
    outputs: list[np.ndarray | None] = field(default_factory=list)
    next_item: int = 0
    done_items: int = 0

    @property
    def exhausted(self) -> bool:
        return self.next_item >= len(self.items)


@dataclass
class SchedulerStats:
    """Counters since start: what the forward thread ran, for tests, metrics and benchmarks."""

    batches: int = 0  # batches taken from the queue
    forward_passes: int = 0  # model calls (a batch splits into length-sorted micro-batches)
    sequences: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0  # rows x longest row (real tokens when packed), summed over forward passes
    largest_forward: int = 0  # most sequences in one forward pass
    most_batches_at_once: int = 0  # batches running side by side, at most
    dropped_sequences: int = 0  # never run: their request was cancelled (client gone, timeout)


class BatchScheduler(Generic[ItemT]):
    """Queues sequences from many requests and runs them in length-sorted batches.

    A batch takes sequences round-robin across waiting requests up to a token budget,
    so a large request is chunked and a small one that arrives later joins the next batch.
    The batch is split into padding-light micro-batches, shortest first, and each request
    is answered as soon as its last sequence is done. Up to `workers` forward passes run at
    once, each on its own thread; an idle worker takes its share of what is queued, so one large
    request is split across workers. A pass that runs alone gets all `threads` math threads,
    passes side by side share them (`set_threads` applies a count on the calling thread). The
    event loop only moves results.
    """

    def __init__(
        self,
        forward: Callable[[list[ItemT]], np.ndarray],
        length_of: Callable[[ItemT], int],
        max_batch_tokens: int,
        max_batch_size: int,
        max_queued_requests: int,
        name: str,
        micro_batch_tokens: int = 4096,
        packed: bool = False,
        workers: int = 1,
        threads: int = 1,
        set_threads: Callable[[int], None] | None = None,
    ) -> None:
        self._forward = forward
        self._length_of = length_of
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queued_requests = max_queued_requests
        self.micro_batch_tokens = micro_batch_tokens
        self.packed = packed  # the forward runs real tokens only, so padding does not count
        self._jobs: collections.deque[_Job[ItemT]] = collections.deque()
        self._wakeup = asyncio.Event()
        self.workers = workers
        self.threads = threads
        self._set_threads = set_threads
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"encoder-{name}")
        self._worker: asyncio.Task[None] | None = None
        self.last_batch_size = 0
        self.stats = SchedulerStats()

    @property
    def queued_requests(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run_forever())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def run_blocking(self, function: Callable[[], ResultT]) -> ResultT:
        """Run model-bound work (loading, warm-up) on the forward thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def submit(self, items: list[ItemT]) -> np.ndarray:
        """Queue one request's sequences and wait for their stacked outputs."""
        if len(self._jobs) >= self.max_queued_requests:
            raise QueueFull(retry_after=1)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        job = _Job(
            items=items,
            lengths=[self._length_of(item) for item in items],
            future=future,
            outputs=[None] * len(items),
        )
        self._jobs.append(job)
        self._wakeup.set()
        try:
            return await future
        except asyncio.CancelledError:
            self._forget(job)
            raise

    def _forget(self, job: _Job[ItemT]) -> None:
        """A cancelled request leaves the queue at once; its sequences not yet run are dropped."""
        job.future.cancel()
        with contextlib.suppress(ValueError):
            self._jobs.remove(job)
        dropped = len(job.items) - job.next_item
        self.stats.dropped_sequences += dropped
        if job.done_items < len(job.items):
            log.info("request cancelled: dropped %d of its %d queued sequences", dropped, len(job.items))

    def _share_of_queue(self, idle_workers: int) -> int:
        """The token budget for the next batch: an even share of what waits, within the limit."""
        enough = self.max_batch_tokens * idle_workers  # past this, every share is the limit
        waiting = 0
        for job in self._jobs:
            if not job.future.done():
                waiting += sum(job.lengths[job.next_item :])
                if waiting >= enough:
                    break
        return max(1, min(self.max_batch_tokens, -(-waiting // idle_workers)))

    def _take_batch(self, budget: int) -> list[tuple[_Job[ItemT], int]]:
        """Pick sequences round-robin across jobs until the token budget is used."""
        picked: list[tuple[_Job[ItemT], int]] = []
        tokens = 0
        while len(picked) < self.max_batch_size:
            progressed = False
            for job in list(self._jobs):
                if job.future.done() or job.exhausted:
                    continue
                length = job.lengths[job.next_item]
                if picked and tokens + length > budget:
                    return picked
                picked.append((job, job.next_item))
                job.next_item += 1
                tokens += length
                progressed = True
                if len(picked) >= self.max_batch_size:
                    return picked
            if not progressed:
                break
        return picked

    def _threads_for_next_pass(self, passes_running: int) -> int:
        """All threads for a pass with nothing beside it and nothing left waiting; else a share."""
        waiting = any(not job.exhausted and not job.future.done() for job in self._jobs)
        if passes_running == 0 and not waiting:
            return self.threads
        return max(1, self.threads // self.workers)

    def _run_batch(
        self, loop: asyncio.AbstractEventLoop, picked: list[tuple[_Job[ItemT], int]], threads: int
    ) -> None:
        """On a forward thread: run the micro-batches and hand each one's rows to the loop."""
        if self._set_threads is not None:
            self._set_threads(threads)
        lengths = [job.lengths[index] for job, index in picked]
        for group in self._plan(lengths):
            members = [picked[k] for k in group if not picked[k][0].future.done()]
            if not members:
                continue  # every request here was cancelled or has failed
            try:
                outputs = self._forward([job.items[index] for job, index in members])
            except Exception as exc:  # one bad request fails alone: rerun the others without it
                log.exception("encoder forward failed for a batch of %d sequences", len(members))
                self._run_isolated(loop, members, exc)
                continue
            loop.call_soon_threadsafe(self._deliver, members, outputs)

    def _plan(self, lengths: list[int]) -> list[list[int]]:
        """Length-sorted micro-batches: by padded tokens, or by real tokens for a packing backend."""
        if self.packed:
            return plan_token_budget_groups(lengths, self.micro_batch_tokens)
        return plan_length_groups(lengths, self.micro_batch_tokens)

    def _run_isolated(
        self, loop: asyncio.AbstractEventLoop, members: list[tuple[_Job[ItemT], int]], error: Exception
    ) -> None:
        """On the forward thread: rerun a failed micro-batch one request at a time, so only the
        requests whose own sequences fail get the failure and the others get their results."""
        by_job: dict[int, list[tuple[_Job[ItemT], int]]] = {}
        for job, index in members:
            by_job.setdefault(id(job), []).append((job, index))
        for own in by_job.values():
            if len(by_job) == 1:
                loop.call_soon_threadsafe(self._fail, own, error)
                continue
            try:
                outputs = self._forward([job.items[index] for job, index in own])
            except Exception as exc:
                loop.call_soon_threadsafe(self._fail, own, exc)
                continue
            loop.call_soon_threadsafe(self._deliver, own, outputs)

    def _count(self, rows: list[int]) -> None:
        stats = self.stats
        stats.forward_passes += 1
        stats.sequences += len(rows)
        stats.real_tokens += sum(rows)
        stats.padded_tokens += sum(rows) if self.packed else len(rows) * max(rows)
        stats.largest_forward = max(stats.largest_forward, len(rows))

    def _deliver(self, members: list[tuple[_Job[ItemT], int]], outputs: np.ndarray) -> None:
        """On the loop: count one forward pass and hand its rows to their requests."""
        self._count([job.lengths[index] for job, index in members])
        for (job, index), row in zip(members, outputs, strict=True):
            job.outputs[index] = row
            job.done_items += 1
            if job.done_items == len(job.items) and not job.future.done():
                job.future.set_result(np.stack([r for r in job.outputs if r is not None]))

    @staticmethod
    def _fail(members: list[tuple[_Job[ItemT], int]], exc: Exception) -> None:
        for job, _ in members:
            if not job.future.done():
                failure = InferenceFailed(type(exc).__name__)
                failure.__cause__ = exc
                job.future.set_exception(failure)

    def _drop_finished(self) -> None:
        self._jobs = collections.deque(
            job
            for job in self._jobs
            if not job.future.done() and not (job.exhausted and job.done_items == len(job.items))
        )

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        running: dict[asyncio.Future[None], list[tuple[_Job[ItemT], int]]] = {}
        woken: asyncio.Task[bool] | None = None
        try:
            while True:
                self._drop_finished()
                self._wakeup.clear()
                while len(running) < self.workers:
                    picked = self._take_batch(self._share_of_queue(self.workers - len(running)))
                    if not picked:
                        break
                    self.stats.batches += 1
                    self.last_batch_size = len(picked)
                    threads = self._threads_for_next_pass(len(running))
                    running[loop.run_in_executor(self._executor, self._run_batch, loop, picked, threads)] = (
                        picked
                    )
                    self.stats.most_batches_at_once = max(self.stats.most_batches_at_once, len(running))
                waiting_on: set[asyncio.Future[Any]] = set(running)
                if len(running) < self.workers:  # an idle worker waits for new requests too
                    if woken is None or woken.done():
                        woken = loop.create_task(self._wakeup.wait())
                    waiting_on.add(woken)
                done, _ = await asyncio.wait(waiting_on, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    picked = running.pop(finished, [])
                    if picked and finished.exception() is not None:  # a bug in planning
                        log.error("encoder batch failed", exc_info=finished.exception())
                        self._fail(picked, RuntimeError("batch planning failed"))
        finally:
            if woken is not None:
                woken.cancel()
