"""The served generation model: the tokenizer and chat template in this process, and an engine
behind the engine interface (in process or in a worker) that turns token ids into deltas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from aios_serve.backends.protocols.generation import ChatTemplateSource, Vocabulary
from aios_serve.config import Capability, ModelSpec
from aios_serve.engine.generation.chat_template import FALLBACK_TEMPLATE, ChatTemplate
from aios_serve.engine.generation.factory import EngineSpec, open_engine
from aios_serve.engine.generation.interface import EngineClient, UpdateStream
from aios_serve.engine.generation.options import GenerationOptions
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.engine.generation.worker import WorkerEngine, WorkerHealth
from aios_serve.models.bundled import resolve_bundled
from aios_serve.observability.engine_stats import EngineStats
from aios_serve.served_model import Forwarder

log = logging.getLogger("aios_serve.engine.generation")


def worker_engine(spec: EngineSpec, options: GenerationOptions) -> WorkerEngine:
    """The engine of `spec` in a worker process. Its client refuses requests past
    `max_queued_requests` (a 503 before a stream starts); the worker queues what it lets in."""
    in_worker = replace(spec, queue_limited=False)
    return WorkerEngine(in_worker, name=spec.name, max_queued=options.max_queued_requests)


class ModelVocabulary(Vocabulary, ChatTemplateSource, Protocol):
    """A vocabulary with what the chat template needs."""


class GenerationModel:
    """A causal LM served through the continuous-batching engine (implements ServedModel)."""

    forwarder: Forwarder | None = None

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options = GenerationOptions.model_validate(spec.options)
        self._vocab: ModelVocabulary | None = None
        self._engine: EngineClient | None = None
        self._template: ChatTemplate | None = None
        self._renders_tools = False

    # --- lifecycle ------------------------------------------------------------------------

    def weights_path(self) -> Path:
        if self.spec.bundled is not None:
            return resolve_bundled(self.spec.bundled)
        return Path(str(self.spec.path)).expanduser()

    def engine_spec(self) -> EngineSpec:
        return EngineSpec(
            name=self.spec.name,
            path=str(self.weights_path()),
            max_model_len=self.spec.max_model_len,
            options=self.options.model_dump(),
        )

    async def start(self) -> None:
        spec = self.engine_spec()
        engine: EngineClient
        # A GGUF file's tokenizer loads here without its weights; a Hugging Face folder's engine
        # (transformers) stays in this process, its backend tokenizing too.
        if self.options.worker and not Path(spec.path).is_dir():
            engine = worker_engine(spec, self.options)
            await engine.start()
        else:
            engine = await open_engine(spec)
        vocab: ModelVocabulary
        in_process = getattr(engine, "backend", None) or getattr(engine, "vocab", None)
        if in_process is not None:  # an engine in this process: its tokenizer serves here too
            vocab = in_process
        else:
            from aios_serve.backends.llama_cpp import LlamaCppVocab

            vocab = await asyncio.to_thread(LlamaCppVocab, Path(spec.path))
        self._vocab, self._engine = vocab, engine
        source = self.options.chat_template or vocab.chat_template or FALLBACK_TEMPLATE
        self._template = ChatTemplate(source, vocab.bos_token, vocab.eos_token)
        self._renders_tools = self._template.renders_tools()
        log.info(
            "generation model %s ready on %s: context %d, %d sequences",
            self.spec.name,
            engine.engine_name,
            engine.context_length,
            engine.max_sequences,
        )

    async def stop(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.stop()

    # --- what the API layer uses ----------------------------------------------------------

    @property
    def vocab(self) -> ModelVocabulary:
        if self._vocab is None:
            raise RuntimeError(f"model {self.spec.name} is not loaded")
        return self._vocab

    @property
    def engine(self) -> EngineClient:
        if self._engine is None:
            raise RuntimeError(f"model {self.spec.name} is not loaded")
        return self._engine

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_vocab

    @property
    def eog_ids(self) -> Sequence[int]:
        return self.engine.eog_ids

    @property
    def max_model_len(self) -> int:
        return self.engine.context_length

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        """The config's capabilities; unless the config lists them, `tools` is added once the
        model has loaded and its chat template renders tools."""
        listed = self.spec.resolved_capabilities()
        if self.spec.capabilities is None and self._renders_tools and "chat" in listed:
            return (*listed, "tools")
        return listed

    @property
    def backend_name(self) -> str:
        """`openvino`, `llama.cpp` or `transformers` once loaded (the configured choice before)."""
        engine = self._engine
        return engine.engine_name if engine is not None else self.options.engine

    @property
    def backend_details(self) -> str:
        """What the engine says of itself at load (OpenVINO: precision, CPU flags, weights)."""
        engine = self._engine
        return engine.engine_details if engine is not None else ""

    @property
    def max_sequences(self) -> int:
        return self.engine.max_sequences

    def stats(self) -> EngineStats:
        """Running and waiting requests, KV-cache use and the last batch, for /metrics."""
        engine = self._engine
        return engine.stats() if engine is not None else EngineStats()

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.vocab.tokenize(text, add_special)

    def detokenize(self, token_ids: list[int], skip_special: bool = True) -> str:
        return self.vocab.detokenize(token_ids, skip_special)

    def token_text(self, token_id: int) -> str:
        """A token as logprobs show it (special tokens spelled out)."""
        return self.vocab.token_bytes(token_id, special=True).decode("utf-8", "replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab.token_bytes(token_id, special=True)

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool,
        extra: dict[str, Any] | None,
    ) -> str:
        assert self._template is not None
        return self._template.render(
            messages, tools=tools, add_generation_prompt=add_generation_prompt, extra=extra
        )

    def worker_health(self) -> WorkerHealth | None:
        """The worker's state and restarts, for /health and /metrics (None: engine in process)."""
        engine = self._engine
        return engine.health() if isinstance(engine, WorkerEngine) else None

    async def check(self, params: SamplingParams, n: int) -> None:
        """What the engine cannot run fails here, before anything streams (GrammarError;
        EngineUnavailable while its worker is down)."""
        await self.engine.check(params, n)

    def generate(self, prompt_ids: list[int], params: SamplingParams, n: int) -> UpdateStream:
        """Queue a request (QueueFull, EngineUnavailable); iterate the returned stream for its
        updates, cancel() to stop it."""
        return self.engine.generate(prompt_ids, params, n)
