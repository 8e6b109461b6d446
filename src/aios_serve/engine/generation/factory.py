"""Which engine runs a generation model, built from a picklable `EngineSpec` (so a worker
process can build it too). `auto` takes OpenVINO for a GGUF file where it loads, else llama.cpp."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aios_serve.backends.protocols.generation import GenerationBackend
from aios_serve.engine.generation.interface import EngineClient
from aios_serve.engine.generation.options import GenerationOptions

log = logging.getLogger("aios_serve.engine.generation")

DEFAULT_KV_CELLS = 16384
DEFAULT_CONTEXT = 8192


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to load one model's engine, in this process or a worker."""

    name: str
    path: str
    max_model_len: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    queue_limited: bool = True
    """Whether the engine refuses requests past `max_queued_requests` (QueueFull). False in a
    worker: its client in the server process refuses them, before a stream's 200 is sent, and
    the worker queues whatever its client let through (the client counts from stats a step old)."""

    @property
    def parsed_options(self) -> GenerationOptions:
        return GenerationOptions.model_validate(self.options)

    def engine_choice(self) -> str:
        """The configured engine, with `auto` resolved as far as the path alone allows."""
        engine = self.parsed_options.engine
        if engine != "auto":
            return engine
        return "transformers" if Path(self.path).is_dir() else "auto"


def build_engine(spec: EngineSpec, choice: str) -> EngineClient:
    """The engine `choice` over the model's weights (blocking: seconds). Call `start()` next."""
    if choice == "transformers":
        return _transformers(spec)
    if choice == "openvino":
        return _openvino(spec)
    return _llama_cpp(spec)


async def open_engine(spec: EngineSpec) -> EngineClient:
    """Build and start the model's engine; `auto` falls back to llama.cpp, saying why, wherever
    OpenVINO cannot load the model."""
    choice = spec.engine_choice()
    if choice == "auto":
        try:
            return await _started(spec, "openvino")
        except Exception as exc:  # any model OpenVINO cannot load runs on llama.cpp
            log.warning("%s: OpenVINO cannot load %s (%s); using llama.cpp", spec.name, spec.path, exc)
            choice = "llama.cpp"
    return await _started(spec, choice)


async def _started(spec: EngineSpec, choice: str) -> EngineClient:
    engine = await asyncio.to_thread(build_engine, spec, choice)
    await engine.start()
    return engine


def _context(spec: EngineSpec, options: GenerationOptions) -> int | None:
    n_ctx = spec.max_model_len or options.n_ctx
    if n_ctx is None and not options.kv_unified:
        n_ctx = DEFAULT_CONTEXT
    return n_ctx


def _threads(options: GenerationOptions) -> int:
    return options.n_threads or os.cpu_count() or 1


def _local(
    spec: EngineSpec, backend: GenerationBackend, engine_name: str, kv_cells: int, details: str = ""
) -> EngineClient:
    """Our batching loop in this process over a loaded backend (`details`: what the backend
    says of itself, for the banner)."""
    from aios_serve.engine.generation.local import LocalEngine

    return LocalEngine(
        backend,
        name=spec.name,
        engine_name=engine_name,
        kv_cells=kv_cells,
        max_queued=spec.parsed_options.max_queued_requests if spec.queue_limited else None,
        details=details,
    )


def _llama_cpp(spec: EngineSpec) -> EngineClient:
    from aios_serve.backends.llama_cpp import LlamaCppModel

    options = spec.parsed_options
    n_ctx = _context(spec, options)
    threads = _threads(options)
    backend = LlamaCppModel(
        Path(spec.path),
        context_length=n_ctx,
        kv_cells=options.kv_cells or max(n_ctx or 0, DEFAULT_KV_CELLS),
        max_sequences=options.max_num_seqs,
        max_batch_tokens=max(options.max_batch_tokens, options.max_num_seqs),
        n_threads=threads,
        n_threads_batch=options.n_threads_batch or threads,
        flash_attn=options.flash_attn,
        kv_unified=options.kv_unified,
    )
    return _local(spec, backend, "llama.cpp", backend.kv_cells)


def llama_cpp_reference(path: Path, context_length: int = 2048) -> GenerationBackend:
    """llama.cpp over a GGUF on one sequence and 2 threads: what fidelity is measured against."""
    from aios_serve.backends.llama_cpp import LlamaCppModel

    return LlamaCppModel(
        path,
        context_length=context_length,
        kv_cells=None,
        max_sequences=1,
        max_batch_tokens=512,
        n_threads=2,
        n_threads_batch=2,
    )


def _transformers(spec: EngineSpec) -> EngineClient:
    from aios_serve.backends.hf_causal import HfCausalModel

    options = spec.parsed_options
    backend = HfCausalModel(
        Path(spec.path),
        context_length=_context(spec, options),
        max_sequences=options.max_num_seqs,
        max_batch_tokens=options.max_batch_tokens,
        n_threads=_threads(options),
        dtype=options.dtype,
    )
    return _local(spec, backend, "transformers", backend.context_length * options.max_num_seqs)


def _openvino(spec: EngineSpec) -> EngineClient:
    """OpenVINO's paged-attention model under our loop, built from the file's own blocks, or
    from a rewrite (`weights_type`; backends/openvino_paged/weights.py), in a child process
    the first time."""
    from aios_serve.backends.openvino_paged import OpenVinoPagedModel, ggml_kernels, precision
    from aios_serve.backends.openvino_paged.child_build import prepared_ir
    from aios_serve.backends.openvino_paged.model import FEW_ROWS

    options = spec.parsed_options
    gguf = Path(spec.path)
    if gguf.is_dir():
        raise ValueError(f"the openvino engine reads a .gguf file; {gguf} is a folder")
    compiled_at, quantized = precision.compute(options.inference_precision, options.batch_invariant)
    kernels = "openvino"
    if options.weights_type == "gguf":
        kernels = ggml_kernels.chosen(
            options.matmul_kernels,
            precision=compiled_at,
            quantized=quantized,
            batch_invariant=options.batch_invariant,
            file_bytes=gguf.stat().st_size,
        )
    library = ggml_kernels.library() if kernels != "openvino" else None
    zero_points = precision.zero_points(compiled_at, quantized)
    ir, route = prepared_ir(
        gguf, options.weights_type, zero_points, ggml=kernels == "ggml" and library is not None
    )
    few_rows_ir = None
    if kernels == "both" and library is not None:
        few_rows_ir, few_rows_route = prepared_ir(gguf, "gguf", zero_points, ggml=True)
        route += f"; below {FEW_ROWS} rows, {few_rows_route}"
    backend = OpenVinoPagedModel(
        gguf,
        ir=ir,
        context_length=_context(spec, options),
        max_sequences=options.max_num_seqs,
        max_batch_tokens=max(options.max_batch_tokens, options.max_num_seqs),
        n_threads=_threads(options),
        precision=compiled_at,
        dynamic_quantization=quantized,
        kv_cache_precision=precision.kv_cache(options.batch_invariant),
        kv_cache_gb=options.kv_cache_gb,
        num_blocks=options.num_kv_blocks,
        prefix_caching=options.prefix_caching,
        ggml_library=library,
        few_rows_ir=few_rows_ir,
    )
    details = f"{backend.describe(options.inference_precision)}; weights {route}"
    log.info("%s: openvino (%s)", spec.name, details)
    return _local(spec, backend, "openvino", backend.kv_cells, details)
