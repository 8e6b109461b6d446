"""A token-budget batching queue: many requests' sequences share one forward pass."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from aios_serve.errors import ApiError, ErrorKind

log = logging.getLogger("aios_serve.engine.batching")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


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


class BatchScheduler(Generic[ItemT]):
    """Queues sequences from many requests and runs them in length-sorted batches.

    A batch takes sequences round-robin across waiting requests up to a token budget,
    so a large request is chunked and a small one that arrives later joins the next batch.
    Forward passes run on one dedicated thread; the event loop only moves results.
    """

    def __init__(
        self,
        forward: Callable[[list[ItemT]], np.ndarray],
        length_of: Callable[[ItemT], int],
        max_batch_tokens: int,
        max_batch_size: int,
        max_queued_requests: int,
        name: str,
    ) -> None:
        self._forward = forward
        self._length_of = length_of
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queued_requests = max_queued_requests
        self._jobs: collections.deque[_Job[ItemT]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"encoder-{name}")
        self._worker: asyncio.Task[None] | None = None
        self.last_batch_size = 0
        self.processed_items = 0
        """Sequences that went through a forward pass."""
        self.dropped_items = 0
        """Sequences never run because their request was cancelled (client gone, timeout)."""

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
            raise ApiError(
                ErrorKind.OVERLOADED,
                "The model's request queue is full; retry shortly.",
                headers={"Retry-After": "1"},
            )
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
        future_was_pending = job.future.cancel()
        with contextlib.suppress(ValueError):
            self._jobs.remove(job)
        dropped = len(job.items) - job.next_item
        self.dropped_items += dropped
        if future_was_pending:
            log.info("request cancelled: dropped %d of its %d queued sequences", dropped, len(job.items))

    def _take_batch(self) -> list[tuple[_Job[ItemT], int]]:
        """Pick sequences round-robin across jobs until the token budget is used."""
        picked: list[tuple[_Job[ItemT], int]] = []
        tokens = 0
        while len(picked) < self.max_batch_size:
            progressed = False
            for job in list(self._jobs):
                if job.future.done() or job.exhausted:
                    continue
                length = job.lengths[job.next_item]
                if picked and tokens + length > self.max_batch_tokens:
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

    def _forward_sorted(self, batch: list[ItemT]) -> list[np.ndarray]:
        """Sort by length into padding-light micro-batches, run them, restore order."""
        order = sorted(range(len(batch)), key=lambda i: self._length_of(batch[i]))
        results: list[np.ndarray | None] = [None] * len(batch)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order):
                longest = self._length_of(batch[order[end]])
                if longest * (end + 1 - start) > self.max_batch_tokens:
                    break
                end += 1
            chunk = order[start:end]
            outputs = self._forward([batch[i] for i in chunk])
            for position, row in zip(chunk, outputs, strict=True):
                results[position] = row
            start = end
        return [row for row in results if row is not None]

    def _drop_finished(self) -> None:
        self._jobs = collections.deque(
            job
            for job in self._jobs
            if not job.future.done() and not (job.exhausted and job.done_items == len(job.items))
        )

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_finished()
            picked = self._take_batch()
            if not picked:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self.last_batch_size = len(picked)
            batch = [job.items[index] for job, index in picked]
            try:
                outputs = await loop.run_in_executor(self._executor, self._forward_sorted, batch)
            except Exception as exc:
                log.exception("encoder forward failed for a batch of %d sequences", len(batch))
                await self._isolate_failure(picked, exc)
                continue
            self._deliver(picked, outputs)

    def _deliver(self, picked: list[tuple[_Job[ItemT], int]], outputs: list[np.ndarray]) -> None:
        self.processed_items += len(picked)
        for (job, index), row in zip(picked, outputs, strict=True):
            job.outputs[index] = row
            job.done_items += 1
            if job.done_items == len(job.items) and not job.future.done():
                job.future.set_result(np.stack([r for r in job.outputs if r is not None]))

    async def _isolate_failure(self, picked: list[tuple[_Job[ItemT], int]], error: Exception) -> None:
        """Rerun a failed batch one request at a time: only the requests whose own sequences
        fail get the 500; the others that shared the batch get their results."""
        loop = asyncio.get_running_loop()
        by_job: dict[int, list[tuple[_Job[ItemT], int]]] = {}
        for job, index in picked:
            by_job.setdefault(id(job), []).append((job, index))
        for group in by_job.values():
            job = group[0][0]
            if job.future.done():
                continue
            if len(by_job) > 1:
                try:
                    batch = [job.items[index] for _, index in group]
                    outputs = await loop.run_in_executor(self._executor, self._forward_sorted, batch)
                except Exception as exc:
                    error = exc
                else:
                    self._deliver(group, outputs)
                    continue
            if not job.future.done():
                job.future.set_exception(
                    ApiError(ErrorKind.INTERNAL, f"Inference failed: {type(error).__name__}")
                )
