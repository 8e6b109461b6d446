"""The served generation model: loads a backend, runs its engine loop, and offers tokenize,
chat rendering and `generate` to the API layer."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from aios_serve.config import Capability, ModelSpec
from aios_serve.engine.generation.backend import GenerationBackend
from aios_serve.engine.generation.chat_template import FALLBACK_TEMPLATE, ChatTemplate
from aios_serve.engine.generation.engine import GenerationEngine
from aios_serve.engine.generation.options import GenerationOptions
from aios_serve.engine.generation.sampling import SamplingParams
from aios_serve.engine.generation.sequence import RequestState, UpdateStream
from aios_serve.errors import ApiError, ErrorKind
from aios_serve.models.bundled import resolve_bundled
from aios_serve.observability.engine_stats import EngineStats

log = logging.getLogger("aios_serve.engine.generation")

DEFAULT_KV_CELLS = 16384
DEFAULT_CONTEXT = 8192


class GenerationModel:
    """A causal LM served through the continuous-batching engine (implements ServedModel)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options = GenerationOptions.model_validate(spec.options)
        self._backend: GenerationBackend | None = None
        self._engine: GenerationEngine | None = None
        self._template: ChatTemplate | None = None
        self._renders_tools = False
        self._backend_name = "auto"

    # --- lifecycle ------------------------------------------------------------------------

    def weights_path(self) -> Path:
        if self.spec.bundled is not None:
            return resolve_bundled(self.spec.bundled)
        return Path(str(self.spec.path)).expanduser()

    def _backend_kind(self, path: Path) -> str:
        if self.options.backend != "auto":
            return self.options.backend
        return "transformers" if path.is_dir() else "llama_cpp"

    def _load(self) -> tuple[GenerationBackend, int]:
        path = self.weights_path()
        options = self.options
        n_ctx = self.spec.max_model_len or options.n_ctx
        if n_ctx is None and not options.kv_unified:
            n_ctx = DEFAULT_CONTEXT
        threads = options.n_threads or os.cpu_count() or 1
        backend_kind = self._backend_kind(path)
        self._backend_name = "llama.cpp" if backend_kind == "llama_cpp" else backend_kind
        if backend_kind == "transformers":
            from aios_serve.backends.hf_causal import HfCausalModel

            hf = HfCausalModel(
                path,
                context_length=n_ctx,
                max_sequences=options.max_num_seqs,
                max_batch_tokens=options.max_batch_tokens,
                n_threads=threads,
                dtype=options.dtype,
            )
            return hf, hf.context_length * options.max_num_seqs
        from aios_serve.backends.llama_cpp import LlamaCppModel

        llama = LlamaCppModel(
            path,
            context_length=n_ctx,
            kv_cells=options.kv_cells or max(n_ctx or 0, DEFAULT_KV_CELLS),
            max_sequences=options.max_num_seqs,
            max_batch_tokens=max(options.max_batch_tokens, options.max_num_seqs),
            n_threads=threads,
            n_threads_batch=options.n_threads_batch or threads,
            flash_attn=options.flash_attn,
            kv_unified=options.kv_unified,
        )
        return llama, llama.kv_cells

    async def start(self) -> None:
        backend, kv_cells = await asyncio.to_thread(self._load)
        self._backend = backend
        source = self.options.chat_template or backend.chat_template or FALLBACK_TEMPLATE
        self._template = ChatTemplate(source, backend.bos_token, backend.eos_token)
        self._renders_tools = self._template.renders_tools()
        self._engine = GenerationEngine(backend, kv_cells, self.spec.name)
        self._engine.start()
        log.info(
            "generation model %s ready: context %d, %d sequences, %d KV cells",
            self.spec.name,
            backend.context_length,
            backend.max_sequences,
            kv_cells,
        )

    async def stop(self) -> None:
        engine, backend = self._engine, self._backend
        self._engine = None
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        if backend is not None:
            backend.close()
        self._backend = None

    # --- what the API layer uses ----------------------------------------------------------

    @property
    def backend(self) -> GenerationBackend:
        if self._backend is None:
            raise RuntimeError(f"model {self.spec.name} is not loaded")
        return self._backend

    @property
    def engine(self) -> GenerationEngine:
        if self._engine is None:
            raise RuntimeError(f"model {self.spec.name} is not loaded")
        return self._engine

    @property
    def max_model_len(self) -> int:
        return self.backend.context_length

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
        """`llama.cpp` or `transformers` once loaded (`auto` before)."""
        return self._backend_name

    @property
    def max_sequences(self) -> int:
        return self.backend.max_sequences

    def stats(self) -> EngineStats:
        """Running and waiting requests, KV-cache use and the last batch, for /metrics."""
        engine = self._engine
        return engine.snapshot if engine is not None else EngineStats()

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.backend.tokenize(text, add_special)

    def detokenize(self, token_ids: list[int], skip_special: bool = True) -> str:
        return self.backend.detokenize(token_ids, skip_special)

    def token_text(self, token_id: int) -> str:
        """A token as logprobs show it (special tokens spelled out)."""
        return self.backend.token_bytes(token_id, special=True).decode("utf-8", "replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.backend.token_bytes(token_id, special=True)

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

    def generate(self, prompt_ids: list[int], params: SamplingParams, n: int) -> UpdateStream:
        """Queue a request; iterate the returned stream for its updates, cancel() to stop it."""
        engine = self.engine
        if engine.queued >= self.options.max_queued_requests:
            raise ApiError(
                ErrorKind.OVERLOADED,
                f"The model `{self.spec.name}` has too many queued requests; retry shortly.",
                headers={"Retry-After": "1"},
            )
        stream = UpdateStream(asyncio.get_running_loop(), len(prompt_ids))
        state = RequestState(prompt_ids, params, n, engine.eog_ids, stream.deliver)
        stream.bind(state, engine.wake)
        engine.submit(state)
        return stream
