"""The continuous-batching loop: one thread per model owns the backend and its KV cache.

Each step decodes one token for every running sequence and, in the same batch, a chunk of
prompt for requests that just joined. Finished or cancelled sequences free their KV cells at
once; the n choices of a request share one prefill (the cache is copied to the others).
"""

from __future__ import annotations

import collections
import heapq
import logging
import queue
import threading
from collections.abc import Callable

import numpy as np

from aios_serve.backends.protocols.generation import (
    BatchItem,
    GenerationBackend,
    KvCacheFull,
    end_of_generation_ids,
)
from aios_serve.engine.generation.interface import RequestUpdate
from aios_serve.engine.generation.planning import Pass, plan_passes
from aios_serve.engine.generation.sampling import token_logprobs
from aios_serve.engine.generation.sequence import PrefillTask, RequestState, Sequence
from aios_serve.observability.engine_stats import EngineStats

log = logging.getLogger("aios_serve.engine.generation")

_WAKE = object()
_STOP = object()


class GenerationEngine:
    """Schedules requests as sequences of one multi-sequence batch."""

    def __init__(self, backend: GenerationBackend, kv_cells: int, name: str) -> None:
        self.backend = backend
        self.kv_cells = kv_cells
        self._commands: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._free_slots = list(range(backend.max_sequences))  # a heap: the lowest id goes first
        self._waiting: collections.deque[RequestState] = collections.deque()
        self._active: list[RequestState] = []
        self._prefills: list[PrefillTask] = []
        self._eog_ids = end_of_generation_ids(backend)
        self._eog_set = set(self._eog_ids)
        self._thread = threading.Thread(target=self._run, name=f"generate-{name}", daemon=True)
        self.steps = 0
        self.step_ended: Callable[[], None] = lambda: None
        """Called on this thread after each step has delivered its updates."""
        self.prompt_passes = 0
        self.prefix_queries: int | None = None
        """Prompt tokens looked up in the backend's prefix cache, and those found (vLLM's counters;
        None where the backend has no prefix cache)."""
        self.prefix_hits: int | None = None
        self.snapshot = EngineStats(
            running=0, waiting=0, kv_cache_usage=0.0, batch_size=0, prompt_passes=0, decode_passes=0
        )

    @property
    def eog_ids(self) -> list[int]:
        return list(self._eog_ids)

    @property
    def queued(self) -> int:
        """Requests waiting for the batch, counting those submitted since the last step."""
        return len(self._waiting) + self._commands.qsize()

    @property
    def running(self) -> int:
        return len(self._active)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._commands.put(_STOP)
        self._thread.join(timeout=30)

    def submit(self, state: RequestState) -> None:
        """Queue a request; it joins the batch at the next step (thread-safe)."""
        self._commands.put(state)

    def wake(self) -> None:
        self._commands.put(_WAKE)

    # --- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._take_commands(block=not (self._active or self._waiting)):
                break
            try:
                self._step()
            except Exception as exc:  # a backend failure fails the running requests, not the loop
                log.exception("generation step failed")
                self._fail_all(exc)
            self.step_ended()
        self._fail_all(RuntimeError("the model is shutting down"))
        self.step_ended()

    def _take_commands(self, block: bool) -> bool:
        """Move submitted requests into the waiting queue; False when asked to stop."""
        try:
            command = self._commands.get(block=block)
        except queue.Empty:
            return True
        while True:
            if command is _STOP:
                return False
            if isinstance(command, RequestState):
                self._waiting.append(command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _step(self) -> None:
        self._drop_cancelled()
        self._compact_slots()
        self._admit()
        touched: dict[int, RequestState] = {}
        decoded = 0
        passes = self._plan()
        while passes:
            items, owners = passes.pop(0)
            try:
                self.backend.decode(items)
            except KvCacheFull:
                self._preempt_newest()
                if touched:  # the rest waits for the next step
                    break
                # Nothing ran yet: plan again without the preempted request, so the others move on
                # (one mixed pass that always failed would otherwise stall every request).
                passes = self._plan()
                continue
            self.steps += 1
            self.prompt_passes += any(isinstance(target, PrefillTask) for _, target in owners)
            decoded += len(items)
            for item, (state, target) in zip(items, owners, strict=True):
                touched[id(state)] = state
                self._after_decode(state, target, item)
        for state in touched.values():
            self._publish(state)
        self._take_snapshot(decoded)

    def _plan(self) -> list[Pass]:
        mixed = self.backend.mixes_prompt_and_decode
        return plan_passes(self._active, self._prefills, self.backend.max_batch_tokens, mixed)

    def _take_snapshot(self, batch_size: int) -> None:
        """Publish the scheduler's state for the metrics (one attribute write, so thread-safe)."""
        pooled = self.backend.cells_in_use()
        used = pooled if pooled is not None else sum(state.cached_tokens() for state in self._active)
        self.snapshot = EngineStats(
            running=len(self._active),
            waiting=len(self._waiting),
            kv_cache_usage=min(1.0, used / self.kv_cells) if self.kv_cells else 0.0,
            batch_size=batch_size,
            prompt_passes=self.prompt_passes,
            decode_passes=self.steps - self.prompt_passes,
            prefix_cache_queries=self.prefix_queries,
            prefix_cache_hits=self.prefix_hits,
        )

    def _after_decode(self, state: RequestState, target: PrefillTask | Sequence, item: BatchItem) -> None:
        if isinstance(target, PrefillTask):
            if item.row_logits is not None:
                state.record_prompt_logits(item.start_pos, item.row_logits)
            target.done += len(item.tokens)
            if target.remaining:
                return
            self._prefills.remove(target)
            lead = target.seqs[0].slot
            for seq in target.seqs:
                if seq.slot != lead and seq.slot is not None and lead is not None:
                    self.backend.copy_sequence(lead, seq.slot)
                seq.n_cached = len(target.tokens)
            seqs = target.seqs
        else:
            target.n_cached += 1
            target.pending = None
            seqs = [target]
        assert item.logits is not None
        for seq in seqs:
            self._advance(state, seq, item.logits)

    # --- per-token work -------------------------------------------------------------------

    def _advance(self, state: RequestState, seq: Sequence, logits: np.ndarray) -> None:
        """Sample the next token of `seq` and decide whether it has finished."""
        if seq.finished:
            return
        params = state.params
        constraint = seq.constraint
        if constraint is None:
            token = seq.sampler.sample(logits, len(seq.generated))
        else:
            allowed = logits.copy()
            constraint.mask(allowed)
            token = seq.sampler.sample(allowed, len(seq.generated))
            constraint.accept(token)
        if params.logprobs is not None:
            seq.new_logprobs.append(token_logprobs(logits, token, params.logprobs))
        seq.generated.append(token)
        seq.new_tokens.append(token)
        seq.sampler.record(token)
        seq.pending = token
        if token in params.stop_token_ids:
            self._finish(seq, "stop", token)
        elif not params.ignore_eos and token in self._eog_set:
            self._finish(seq, "stop", None)
        else:
            stop = seq.text.append(self.backend.token_bytes(token))
            if stop is not None:
                self._finish(seq, "stop", stop)
            elif constraint is not None and constraint.is_complete:
                self._finish(seq, "stop", None)
        if seq.finished:
            return
        if (
            len(seq.generated) >= params.max_tokens
            or len(state.prompt_ids) + len(seq.generated) >= self.backend.context_length
        ):
            self._finish(seq, "length", None)

    def _finish(self, seq: Sequence, reason: str, stop_reason: int | str | None) -> None:
        seq.finish_reason = reason
        seq.stop_reason = stop_reason
        seq.pending = None
        seq.text.finish()
        self._release(seq)

    def _release(self, seq: Sequence) -> None:
        if seq.slot is not None:
            self.backend.remove_sequence(seq.slot)
            heapq.heappush(self._free_slots, seq.slot)
            seq.slot = None
        seq.n_cached = 0

    def _publish(self, state: RequestState) -> None:
        update = state.take_update()
        if update is not None:
            state.deliver(update)
        if state.done:
            self._remove(state)

    def _remove(self, state: RequestState) -> None:
        for seq in state.seqs:
            self._release(seq)
        self._prefills = [t for t in self._prefills if t.seqs[0] not in state.seqs]
        if state in self._active:
            self._active.remove(state)

    # --- scheduling -----------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        for state in [s for s in self._active if s.cancelled]:
            generated = sum(len(seq.generated) for seq in state.seqs)
            self._remove(state)
            log.info("request %d cancelled after %d tokens; its KV cells are free", state.order, generated)
        if any(s.cancelled for s in self._waiting):
            self._waiting = collections.deque(s for s in self._waiting if not s.cancelled)

    def _compact_slots(self) -> None:
        """Fill holes in the used sequence ids by moving the highest-numbered sequence down.

        With a cache per sequence, llama.cpp decodes a batch in one pass only when its sequence
        ids are consecutive; each gap costs a whole extra forward pass, every step.
        """
        if not self.backend.needs_consecutive_sequences:
            return
        by_slot = {seq.slot: seq for state in self._active for seq in state.seqs if seq.slot is not None}
        while self._free_slots and by_slot:
            highest = max(by_slot)
            if self._free_slots[0] > highest:
                return
            seq = by_slot.pop(highest)
            lowest = heapq.heapreplace(self._free_slots, highest)
            if seq.n_cached or any(task.seqs[0] is seq and task.done for task in self._prefills):
                self.backend.copy_sequence(highest, lowest)
                self.backend.remove_sequence(highest)
            seq.slot = lowest
            by_slot[lowest] = seq
            log.debug("moved a sequence from id %d to %d", highest, lowest)

    def _admit(self) -> None:
        """Move waiting requests into the batch while slots and KV cells allow."""
        used = sum(state.cached_tokens() for state in self._active)
        while self._waiting:
            state = self._waiting[0]
            tasks = state.unadmitted_tasks()
            needed_slots = sum(len(t.seqs) for t in tasks)
            needed_cells = sum(len(t.tokens) for t in tasks) + needed_slots
            if needed_slots > len(self._free_slots):
                break
            if self._active and used + needed_cells > self.kv_cells:
                break
            self._waiting.popleft()
            for task in tasks:
                for seq in task.seqs:
                    seq.slot = heapq.heappop(self._free_slots)
                    seq.n_cached = 0
                    seq.pending = None
                if not state.needs_prompt_logprobs:  # scoring needs every prompt position run
                    self._reuse_prefix(task)
            self._prefills.extend(tasks)
            self._active.append(state)
            used += needed_cells

    def _reuse_prefix(self, task: PrefillTask) -> None:
        """Start the prompt after the part the backend's prefix cache already holds."""
        lead = task.seqs[0].slot
        assert lead is not None
        reused = self.backend.reuse_prefix(lead, task.tokens)
        if reused is None:
            return
        task.done = reused
        self.prefix_queries = (self.prefix_queries or 0) + len(task.tokens)
        self.prefix_hits = (self.prefix_hits or 0) + reused

    def _preempt_newest(self) -> None:
        """The cache is full: put the newest request back to wait (it recomputes later)."""
        victim = max(self._active, key=lambda s: s.order)
        if len(self._active) == 1:
            log.warning("KV cache full with one request; ending it at its current length")
            for seq in victim.seqs:
                if not seq.finished:
                    self._finish(seq, "length", None)
            self._publish(victim)
            return
        log.info("KV cache full: preempting a request for recomputation")
        for seq in victim.seqs:
            self._release(seq)
            seq.pending = None
        self._prefills = [t for t in self._prefills if t.seqs[0] not in victim.seqs]
        self._active.remove(victim)
        self._waiting.appendleft(victim)

    def _fail_all(self, exc: BaseException) -> None:
        for state in [*self._active, *self._waiting]:
            for seq in state.seqs:
                self._release(seq)
            state.deliver(RequestUpdate(error=exc, finished=True))
        self._active.clear()
        self._waiting.clear()
        self._prefills.clear()
