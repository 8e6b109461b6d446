"""The in-process engine over a backend that decodes batches (llama.cpp or transformers): our own
continuous-batching loop, numpy sampling and llguidance grammars (implements EngineClient)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from aios_serve.backends.protocols.generation import GenerationBackend
from aios_serve.engine.generation.constraints import CompiledGrammar, ConstraintVocab
from aios_serve.engine.generation.constraints.spec import OutputConstraint
from aios_serve.engine.generation.engine import GenerationEngine
from aios_serve.engine.generation.interface import QueueFull, UpdateStream
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.engine.generation.sequence import RequestState
from aios_serve.observability.engine_stats import EngineStats

log = logging.getLogger("aios_serve.engine.generation")

GRAMMAR_CACHE_SIZE = 64
"""Compiled grammars kept per model, by grammar text (tools and schemas repeat across requests)."""


class LocalEngine:
    """Our batching loop on one thread of this process, over a loaded backend."""

    def __init__(
        self,
        backend: GenerationBackend,
        *,
        name: str,
        engine_name: str,
        kv_cells: int,
        max_queued: int | None,
        details: str = "",
    ) -> None:
        self.backend = backend
        self._name = name
        self._engine_name = engine_name
        self._details = details
        self._kv_cells = kv_cells
        self._max_queued = max_queued
        self._loop: GenerationEngine | None = None
        self._vocab: ConstraintVocab | None = None
        self._vocab_lock = threading.Lock()
        self._grammars: OrderedDict[str, CompiledGrammar] = OrderedDict()

    @property
    def engine_name(self) -> str:
        return self._engine_name

    @property
    def engine_details(self) -> str:
        return self._details

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    @property
    def max_sequences(self) -> int:
        return self.backend.max_sequences

    @property
    def eog_ids(self) -> Sequence[int]:
        return self._running().eog_ids

    def _running(self) -> GenerationEngine:
        if self._loop is None:
            raise RuntimeError(f"the engine of {self._name} is not running")
        return self._loop

    async def start(self) -> None:
        self._loop = GenerationEngine(self.backend, self._kv_cells, self._name)
        self._loop.start()

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            await asyncio.to_thread(loop.stop)
        self.backend.close()

    # --- grammars -------------------------------------------------------------------------

    def _constraint_vocab(self) -> ConstraintVocab:
        """The vocabulary for grammar masks, built on first use (~1-3 s: call off the loop)."""
        with self._vocab_lock:
            if self._vocab is None:
                backend = self.backend
                self._vocab = ConstraintVocab(
                    backend.n_vocab,
                    lambda t: backend.token_bytes(t, special=False),
                    lambda t: backend.token_bytes(t, special=True),
                    list(self.eog_ids),
                    lambda data: backend.tokenize(data.decode("utf-8", "replace"), False),
                )
            return self._vocab

    def compile(self, constraint: OutputConstraint) -> CompiledGrammar:
        """The constraint's grammar, compiled once (raises GrammarError; blocking)."""
        source = constraint.lark()
        with self._vocab_lock:
            found = self._grammars.get(source)
            if found is not None:
                self._grammars.move_to_end(source)
                return found
        compiled = self._constraint_vocab().compile(source)
        with self._vocab_lock:
            self._grammars[source] = compiled
            while len(self._grammars) > GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)
        return compiled

    # --- requests -------------------------------------------------------------------------

    async def check(self, params: SamplingParams, n: int) -> None:
        """Every API parameter runs here; only a constraint can fail (to compile)."""
        if params.constraint is not None:
            await asyncio.to_thread(self.compile, params.constraint)

    def generate(self, prompt_ids: list[int], params: SamplingParams, n: int) -> UpdateStream:
        loop = self._running()
        if self._max_queued is not None and loop.queued >= self._max_queued:
            raise QueueFull(f"the model `{self._name}` has too many queued requests")
        grammar = self.compile(params.constraint) if params.constraint is not None else None
        stream = UpdateStream(asyncio.get_running_loop(), len(prompt_ids))
        state = RequestState(prompt_ids, params, n, loop.eog_ids, stream.deliver, grammar)

        def abort() -> None:
            state.cancelled = True
            loop.wake()

        stream.on_cancel(abort)
        loop.submit(state)
        return stream

    def on_step_end(self, callback: Callable[[], None]) -> None:
        self._running().step_ended = callback

    def stats(self) -> EngineStats:
        loop = self._loop
        return loop.snapshot if loop is not None else EngineStats()
