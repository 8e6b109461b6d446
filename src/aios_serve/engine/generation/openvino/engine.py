"""OpenVINO GenAI's ContinuousBatchingPipeline behind our EngineClient interface.

One step thread owns the pipeline: it admits queued requests (each choice its own OpenVINO
request, at most `max_sequences` choices at once), calls `step()`, reads each handle's new
tokens, and decides stops itself (stop strings through OutputText and the vocabulary's token
bytes, stop_token_ids, EOG tokens, max_tokens, the context length), cancelling the OpenVINO
request of a finished or cancelled choice (`GenerationHandle.cancel()`, freed at the next step).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aios_serve.engine.generation.constraints.grammars import GrammarError
from aios_serve.engine.generation.interface import (
    EngineUnavailable,
    QueueFull,
    RequestUpdate,
    UpdateStream,
    Vocabulary,
)
from aios_serve.engine.generation.openvino import config as ovconfig
from aios_serve.engine.generation.openvino import precision
from aios_serve.engine.generation.openvino.loading import openvino_weights
from aios_serve.engine.generation.openvino.requests import Choice, Request
from aios_serve.engine.generation.options import InferencePrecision
from aios_serve.engine.generation.sampling import SamplingParams, TokenLogprobs
from aios_serve.observability.engine_stats import EngineStats

log = logging.getLogger("aios_serve.engine.generation")


class OpenVinoEngine:
    """A running OpenVINO GenAI engine for one GGUF model (implements EngineClient)."""

    engine_name = "openvino"

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        vocab: Vocabulary,
        eog_ids: list[int],
        context_length: int,
        max_sequences: int,
        max_batch_tokens: int,
        kv_cache_gb: int,
        max_queued_requests: int,
        enable_prefix_caching: bool = True,
        n_threads: int | None = None,
        inference_precision: InferencePrecision = "auto",
    ) -> None:
        self.path = path
        self.name = name
        self.vocab = vocab
        self._eog_ids = list(eog_ids)
        self._eog_set = set(eog_ids)
        self._context_length = context_length
        self._max_sequences = max_sequences
        self.max_batch_tokens = max_batch_tokens
        self.kv_cache_gb = kv_cache_gb
        self.max_queued_requests = max_queued_requests
        self.enable_prefix_caching = enable_prefix_caching
        self.n_threads = n_threads or os.cpu_count() or 1
        self.route: str | None = None
        self.inference_precision: InferencePrecision = inference_precision
        self.precision: precision.PrecisionChoice | None = None
        """What the precision option became, as OpenVINO reports it (set at load)."""
        self._pipeline: Any = None
        self._thread: threading.Thread | None = None
        self._cv = threading.Condition()
        self._pending: collections.deque[Request] = collections.deque()
        self._active: list[Request] = []
        self._stopping = False
        self._failed: BaseException | None = None
        self._batch_size = 0
        self._cache_usage: float | None = None
        self._settled = True
        """False after a step with requests: OpenVINO reads the cache's use as it schedules, and frees
        what finished (or what we cancelled) only after, so one more step is due, on nothing."""
        self._step_ended: Callable[[], None] = lambda: None

    # --- EngineClient properties -----------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def max_sequences(self) -> int:
        return self._max_sequences

    @property
    def eog_ids(self) -> Sequence[int]:
        return list(self._eog_ids)

    @property
    def engine_details(self) -> str:
        """The compiled precision, the CPU's deciding flags and the weights' route."""
        if self.precision is None:
            return ""
        caching = "on" if self.enable_prefix_caching else "off"
        return f"{self.precision.describe()}; prefix caching {caching}; weights {self.route}"

    # --- lifecycle ------------------------------------------------------------------------

    def _load(self) -> Any:
        import openvino_genai as ov

        scheduler = ov.SchedulerConfig()
        scheduler.cache_size = max(1, round(self.kv_cache_gb))
        scheduler.max_num_batched_tokens = self.max_batch_tokens
        scheduler.max_num_seqs = self._max_sequences
        plugin, self.precision = precision.choose(self.inference_precision)
        if self.enable_prefix_caching and not precision.prefix_caching_allowed(self.precision.compiled):
            log.warning("%s: prefix caching is off at %s (precision.py)", self.name, self.precision.compiled)
            self.enable_prefix_caching = False
        scheduler.enable_prefix_caching = self.enable_prefix_caching
        scheduler.dynamic_split_fuse = True
        properties: dict[str, Any] = {"INFERENCE_NUM_THREADS": self.n_threads, **plugin}
        weights, self.route = openvino_weights(self.path)
        try:
            return ov.ContinuousBatchingPipeline(str(weights), scheduler, "CPU", properties)
        except RuntimeError:
            if self.route != "as-is":
                raise
            log.warning("OpenVINO could not read %s as is; rewriting it to F16", self.path, exc_info=True)
            weights, self.route = openvino_weights(self.path, force_rewrite=True)
            return ov.ContinuousBatchingPipeline(str(weights), scheduler, "CPU", properties)

    async def start(self) -> None:
        self._pipeline = await asyncio.to_thread(self._load)
        self._stopping, self._failed = False, None
        self._thread = threading.Thread(target=self._run, name=f"openvino-{self.name}", daemon=True)
        self._thread.start()
        log.info(
            "OpenVINO engine for %s ready (%s): context %d, %d sequences, %d GB KV cache",
            self.name,
            self.engine_details,
            self._context_length,
            self._max_sequences,
            max(1, round(self.kv_cache_gb)),
        )

    async def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._fail_all(EngineUnavailable(f"the {self.name} engine stopped"))
        self._step_ended()
        self._pipeline = None

    # --- requests -------------------------------------------------------------------------

    async def check(self, params: SamplingParams, n: int) -> None:
        error = ovconfig.unsupported(params, n, self._max_sequences)
        if error is not None:
            raise error
        constraint = ovconfig.request_constraint(params)
        if constraint is not None:
            await asyncio.to_thread(ovconfig.validate_constraint, constraint)

    def generate(self, prompt_ids: list[int], params: SamplingParams, n: int) -> UpdateStream:
        error = ovconfig.unsupported(params, n, self._max_sequences)
        if error is not None:
            raise error
        constraint = ovconfig.request_constraint(params)
        structured = ovconfig.structured_output(constraint) if constraint is not None else None
        stream = UpdateStream(asyncio.get_running_loop(), len(prompt_ids))
        request = Request(list(prompt_ids), params, n, stream, structured)
        with self._cv:
            if self._thread is None or self._stopping or self._failed is not None:
                raise EngineUnavailable(f"the {self.name} engine is not running")
            if len(self._pending) >= self.max_queued_requests:
                raise QueueFull(f"{len(self._pending)} requests are waiting for {self.name}")
            self._pending.append(request)
            stream.on_cancel(lambda: self._cancel(request))
            self._cv.notify_all()
        return stream

    def _cancel(self, request: Request) -> None:
        with self._cv:
            request.cancelled = True
            self._cv.notify_all()

    def on_step_end(self, callback: Callable[[], None]) -> None:
        self._step_ended = callback

    def stats(self) -> EngineStats:
        with self._cv:
            running = sum(r.live_handles() for r in self._active)
            waiting = len(self._pending)
        return EngineStats(
            running=running,
            waiting=waiting,
            kv_cache_usage=self._cache_usage,
            batch_size=self._batch_size,
        )

    # --- the step thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step():
                self._step_ended()
        except Exception as exc:  # the pipeline failed: fail what runs
            log.exception("the OpenVINO engine for %s failed", self.name)
            with self._cv:
                self._failed = exc
            self._fail_all(EngineUnavailable(f"the {self.name} engine failed: {exc}"))
            self._step_ended()

    def _step(self) -> bool:
        """One scheduling round; False when the engine is stopping."""
        with self._cv:
            while not self._stopping and not self._pending and not self._active and self._settled:
                self._cv.wait()
            if self._stopping:
                return False
            cancelled = [r for r in self._active if r.cancelled]
            self._pending = collections.deque(r for r in self._pending if not r.cancelled)
            admitted: list[Request] = []
            live = sum(r.live_handles() for r in self._active) - sum(r.live_handles() for r in cancelled)
            while self._pending and live + len(self._pending[0].choices) <= self._max_sequences:
                request = self._pending.popleft()
                live += len(request.choices)
                admitted.append(request)
        for request in cancelled:
            self._drop(request)
            log.info("request cancelled after %d tokens", sum(len(c.generated) for c in request.choices))
        for request in admitted:
            self._admit(request)
        pipeline = self._pipeline
        working = pipeline.has_non_finished_requests()
        if working or not self._settled:
            pipeline.step()  # with no request left it schedules nothing: it frees and reads the use
            metrics = pipeline.get_metrics()
            if working:
                self._batch_size = int(metrics.scheduled_requests)
            self._cache_usage = float(metrics.cache_usage) / 100.0
            self._settled = not working
        for request in list(self._active):
            for choice in request.choices:
                if choice.handle is not None:
                    self._read(request, choice)
            self._publish(request)
        return True

    def _admit(self, request: Request) -> None:
        import openvino as ov_runtime

        params = request.params
        room = self._context_length - len(request.prompt_ids)
        max_new = min(params.max_tokens, room)
        with self._cv:
            self._active.append(request)
        if max_new <= 0:
            for choice in request.choices:
                choice.finish("length", None)
            self._publish(request)
            return
        ids = ov_runtime.Tensor(np.asarray([request.prompt_ids], dtype=np.int64))
        for choice in request.choices:
            config = ovconfig.generation_config(
                params,
                choice_index=choice.index,
                max_new_tokens=max_new,
                eog_ids=self._eog_ids,
                structured=request.structured,
            )
            try:
                choice.handle = self._pipeline.add_request(choice.request_id, ids, config)
            except Exception as exc:  # e.g. a schema xgrammar does not compile
                self._drop(request)
                error = GrammarError(str(exc)) if request.structured is not None else exc
                request.stream.deliver(RequestUpdate(error=error, finished=True))
                return

    def _read(self, request: Request, choice: Choice) -> None:
        """Take a handle's new tokens; finish the choice where our stop rules say so."""
        handle = choice.handle
        if handle.can_read():
            for output in handle.read().values():
                logprobs = list(output.generated_log_probs)
                for position, token in enumerate(output.generated_ids):
                    logprob = logprobs[position] if position < len(logprobs) else None
                    self._advance(request, choice, int(token), logprob)
                    if choice.finished:
                        break
        if not choice.finished:
            status = handle.get_status().name
            if status in ("FINISHED", "STOP"):  # OpenVINO ended it (length or a stop token)
                at_limit = len(choice.generated) >= request.params.max_tokens
                choice.finish("length" if at_limit else "stop", None)
            elif status in ("IGNORED", "CANCEL"):
                choice.finish("abort", None)
        if choice.finished:
            self._release(choice)

    def _advance(self, request: Request, choice: Choice, token: int, logprob: float | None) -> None:
        params = request.params
        if params.logprobs is not None and logprob is not None:
            known_rank = params.temperature <= ovconfig.GREEDY_BELOW and request.structured is None
            choice.new_logprobs.append(TokenLogprobs(token, float(logprob), [], rank=1 if known_rank else 0))
        choice.generated.append(token)
        choice.new_tokens.append(token)
        if token in params.stop_token_ids:
            choice.finish("stop", token)
        elif not params.ignore_eos and token in self._eog_set:
            choice.finish("stop", None)
        else:
            stop = choice.text.append(self.vocab.token_bytes(token))
            if stop is not None:
                choice.finish("stop", stop)
        if choice.finished:
            return
        if (
            len(choice.generated) >= params.max_tokens
            or len(request.prompt_ids) + len(choice.generated) >= self._context_length
        ):
            choice.finish("length", None)

    def _release(self, choice: Choice) -> None:
        """Cancel the choice's OpenVINO request (its KV blocks are freed at the next step)."""
        if choice.handle is not None:
            if choice.handle.get_status().name == "RUNNING":
                choice.handle.cancel()
            choice.handle = None

    def _drop(self, request: Request) -> None:
        for choice in request.choices:
            self._release(choice)
        with self._cv:
            if request in self._active:
                self._active.remove(request)

    def _publish(self, request: Request) -> None:
        update = request.take_update()
        if update is not None:
            request.stream.deliver(update)
        if request.done:
            self._drop(request)

    def _fail_all(self, error: BaseException) -> None:
        with self._cv:
            requests = list(self._active) + list(self._pending)
            self._active.clear()
            self._pending.clear()
        for request in requests:
            for choice in request.choices:
                choice.handle = None
            request.stream.deliver(RequestUpdate(error=error, finished=True))
