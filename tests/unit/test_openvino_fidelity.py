"""The openvino engine (the paged backend under our loop) against llama.cpp on the same GGUF, per
bundled model and per precision this CPU runs, and the precision each option compiles to."""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
import pytest

pytest.importorskip("openvino_genai")

from aios_serve.backends.llama_cpp import LlamaCppVocab
from aios_serve.backends.openvino_paged import OpenVinoPagedModel, precision
from aios_serve.engine.generation import fidelity
from aios_serve.engine.generation.factory import EngineSpec, open_engine
from aios_serve.engine.generation.local import LocalEngine
from aios_serve.engine.generation.options import GenerationOptions
from aios_serve.models.bundled import resolve_bundled
from tests.cpu import AUTO_OPENVINO_PRECISION, INT8_ACTIVATIONS, NATIVE_BF16

SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"

BOUNDS = {
    # (least top-1 agreement, most mean |Δ logprob|, most max |Δ logprob|, most tie margin)
    "f32": (0.93, 0.08, 1.0, 1.0),
    "f32, int8 activations": (0.93, 0.08, 1.0, 1.0),
    "bf16": (0.90, 0.10, 5.0, 5.0),
}
"""Teacher-forced fidelity to llama.cpp on the original file, per precision (the figures each
run prints are in the README, "Inference precision")."""


def _chat(vocab: Any, text: str) -> list[int]:
    ids: list[int] = vocab.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", True)
    return ids


@pytest.fixture(scope="module")
def references() -> dict[str, list[fidelity.ReferenceRun]]:
    """Each model's greedy llama.cpp runs over the fidelity prompts (computed on first use)."""
    return {}


def _references(model: str, cache: dict[str, list[fidelity.ReferenceRun]]) -> list[fidelity.ReferenceRun]:
    if model not in cache:
        path = resolve_bundled(model)
        vocab = LlamaCppVocab(path)
        prompts = [_chat(vocab, text) for text in fidelity.PROMPTS]
        cache[model] = fidelity.reference_runs(path, prompts, fidelity.TOKENS)
    return cache[model]


async def _engine(model: str, option: str, **extra: Any) -> LocalEngine:
    path = resolve_bundled(model)
    options = {"engine": "openvino", "inference_precision": option, "n_threads": 2, **extra}
    engine = await open_engine(EngineSpec(name=model, path=str(path), max_model_len=2048, options=options))
    assert isinstance(engine, LocalEngine) and isinstance(engine.backend, OpenVinoPagedModel)
    return engine


ROUTES = [
    ("f32", "gguf", False),
    ("f32", "gguf", True),
    *([("bf16", "gguf", False)] if NATIVE_BF16 else []),
    ("f32", "q8_0", False),
]
"""(precision, weights_type, batch_invariant): each precision on the default weights (the file's
own blocks), f32 also batch-invariant, and the default f32 on the Q8_0 rewrite."""


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(("precision_option", "weights_type", "batch_invariant"), ROUTES)
@pytest.mark.parametrize("model", [SMOL, QWEN])
async def test_fidelity_to_llama_cpp(
    model: str,
    precision_option: str,
    weights_type: str,
    batch_invariant: bool,
    references: dict[str, list[fidelity.ReferenceRun]],
) -> None:
    """Teacher-forced: at every position of llama.cpp's greedy output, OpenVINO's greedy token
    and its logprob against llama.cpp's distribution, 16 sequences at once."""
    runs = await asyncio.to_thread(_references, model, references)
    options = {"max_num_seqs": 16, "max_queued_requests": 1024, "weights_type": weights_type}
    engine = await _engine(model, precision_option, batch_invariant=batch_invariant, **options)
    try:
        assert engine.backend.precision == precision_option  # type: ignore[attr-defined]
        quantized = engine.backend.quantized_group  # type: ignore[attr-defined]
        quantizes = precision_option == "f32" and not batch_invariant and INT8_ACTIVATIONS
        assert quantized == (32 if quantizes else 0)
        assert engine.backend.cache.element_type == ("f32" if batch_invariant else "u8")  # type: ignore[attr-defined]
        result = await fidelity.measure(engine, runs)
    finally:
        await engine.stop()
    print(f"\n{model} {precision_option} ({engine.engine_details}): {result.describe()}")
    least_agreement, mean_diff, max_diff, tie_margin = BOUNDS[
        f"{precision_option}, int8 activations" if quantized else precision_option
    ]
    assert result.positions == fidelity.TOKENS * len(fidelity.PROMPTS)
    assert result.agreement >= least_agreement, result
    assert result.mean_logprob_diff <= mean_diff, result
    assert result.max_logprob_diff <= max_diff, result
    assert result.max_tie_margin <= tie_margin, result


EXPECTED_PRECISION = {"f32": "f32", "bf16": "bf16" if NATIVE_BF16 else "f32", "auto": AUTO_OPENVINO_PRECISION}
"""What each option must compile to on this CPU, from the test's own reading of its flags."""


@pytest.mark.parametrize("option", ["auto", "f32", "bf16"])
def test_each_option_resolves_to_what_this_cpu_runs(option: str) -> None:
    assert precision.resolve(option) == EXPECTED_PRECISION[option]


def test_int8_activations_only_at_f32_and_not_batch_invariant() -> None:
    assert precision.dynamic_quantization("f32", batch_invariant=False) == INT8_ACTIVATIONS
    assert not precision.dynamic_quantization("f32", batch_invariant=True)
    assert not precision.dynamic_quantization("bf16", batch_invariant=False)
    assert GenerationOptions(batch_invariant=True).inference_precision == "auto"
    with pytest.raises(pydantic.ValidationError, match="batch_invariant computes in f32"):
        GenerationOptions(batch_invariant=True, inference_precision="bf16")


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("option", ["auto", "bf16"])
async def test_the_compiled_model_reports_the_asked_precision(option: str) -> None:
    """Read back from OpenVINO's compiled model, and shown in the engine's details."""
    engine = await _engine(SMOL, option, max_num_seqs=2)
    try:
        compiled = engine.backend.precision  # type: ignore[attr-defined]
        assert compiled == EXPECTED_PRECISION[option]
        quantized = ", int8 activations per 32" if compiled == "f32" and INT8_ACTIVATIONS else ""
        assert engine.engine_details.startswith(f"precision {compiled}{quantized} (asked {option}; CPU ")
        assert "avx2" in engine.engine_details
    finally:
        await engine.stop()
