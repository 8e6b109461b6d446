"""Each engine's own logits for a token sequence, computed in the test process from the same
GGUF the server loads: llama-cpp-python's `Llama` for llama.cpp, the paged backend at f32 (the
servers' exact setting) for openvino. Served logprobs must be their log-softmax."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aios_serve.models.bundled import resolve_bundled

SMOL = "smollm2-135m-instruct"


def log_softmax(row: Any) -> np.ndarray:
    logits = np.asarray(row, dtype=np.float64)
    shifted = logits - logits.max()
    return shifted - math.log(np.exp(shifted).sum())


def _llama() -> Any:
    """llama-cpp-python's own Llama on the GGUF, keeping every position's logits."""
    from llama_cpp import Llama

    return Llama(
        str(resolve_bundled(SMOL)), n_ctx=256, logits_all=True, verbose=False, n_threads=2, flash_attn=True
    )


def _openvino() -> Any:
    """The openvino engine's backend on the GGUF's weights route, one sequence, as the servers'
    `batch_invariant` compiles it: f32, no int8 activations, an f32 KV cache."""
    from aios_serve.backends.openvino_paged import OpenVinoPagedModel, paged_ir, precision

    path = resolve_bundled(SMOL)
    return OpenVinoPagedModel(
        path,
        ir=paged_ir(path)[0],
        context_length=256,
        max_sequences=1,
        max_batch_tokens=256,
        n_threads=2,
        precision="f32",
        kv_cache_precision=precision.kv_cache(batch_invariant=True),
        num_blocks=8,
    )


def output_rows(engine: str, prompt_ids: list[int], output_ids: list[int]) -> list[np.ndarray]:
    """Log-softmax before each output token: the prompt in one pass, then one token per pass,
    as the engine decodes a single stream."""
    if engine == "llama.cpp":
        llm = _llama()
        llm.eval(prompt_ids)
        rows = []
        for token_id in output_ids:
            rows.append(log_softmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([token_id])
        return rows
    from aios_serve.backends.protocols.generation import BatchItem

    model = _openvino()
    try:
        item = BatchItem(list(prompt_ids), 0, [0])
        rows = []
        for token_id in output_ids:
            model.decode([item])
            rows.append(log_softmax(item.logits))
            item = BatchItem([token_id], item.start_pos + len(item.tokens), [0])
        return rows
    finally:
        model.close()


def prompt_rows(engine: str, prompt_ids: list[int]) -> list[np.ndarray]:
    """Log-softmax after each prompt token but the last, from one pass over the prompt."""
    if engine == "llama.cpp":
        llm = _llama()
        llm.eval(prompt_ids)
        return [log_softmax(llm.scores[position]) for position in range(len(prompt_ids) - 1)]
    from aios_serve.backends.protocols.generation import BatchItem

    model = _openvino()
    try:
        item = BatchItem(list(prompt_ids), 0, [0], want_all_logits=True)
        model.decode([item])
        assert item.row_logits is not None
        return [log_softmax(row) for row in item.row_logits[:-1]]
    finally:
        model.close()
