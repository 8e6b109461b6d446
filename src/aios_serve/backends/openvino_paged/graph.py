"""The paged-attention model: GenAI's stateful IR turned paged, with the LM head fed only the
rows whose logits are asked for, compiled for the CPU at an explicit precision.

`paged_attention_transformation` replaces the model's state with the inputs input_ids,
position_ids, past_lens, subsequence_begins, block_indices_begins, block_indices,
max_context_len and key_cache.N / value_cache.N (N per layer). Its logits come out for every
fed token; we add an input `logits_indices` and gather those rows of the last hidden state
before the LM head's MatMul, so a 512-token prompt chunk does not pay 512 vocabulary-wide rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("aios_serve.backends.openvino_paged")

LOGITS_INDICES = "logits_indices"
PRECISION_HINT = "INFERENCE_PRECISION_HINT"
DYNAMIC_QUANTIZATION = "DYNAMIC_QUANTIZATION_GROUP_SIZE"
KV_CACHE_PRECISION = "KV_CACHE_PRECISION"
DYNAMIC_QUANTIZATION_GROUP = 32
"""Activations quantized to int8 per 32 values, the blocks' group: the plugin then multiplies
integers (at f32, with weights whose zero points are integers; in scratch runs on a 2-core
Sapphire Rapids, 64 and 256 gave Qwen2.5-Coder-0.5B's own blocks no speed-up: 38.6 ms a step for
one sequence, against 28.3-32.8 at 32)."""


@dataclass(frozen=True)
class CompiledPaged:
    """The compiled model and what OpenVINO reports it became."""

    compiled: Any
    precision: str
    """INFERENCE_PRECISION_HINT as read back from the compiled model (`f32`, `bf16`)."""
    gathers_logits: bool
    """Whether the model takes `logits_indices` (else it returns logits for every token)."""
    dynamic_quantization: int
    """DYNAMIC_QUANTIZATION_GROUP_SIZE as read back: 0 off, else int8 activations per group."""
    kv_cache: str
    """KV_CACHE_PRECISION as read back (`u8`, `f32`)."""


def _gather_before_lm_head(model: Any) -> bool:
    """Insert `Gather(hidden, logits_indices, axis 0)` before the LM head; False where the
    logits do not come straight from a MatMul (the model then keeps every row)."""
    import openvino as ov
    import openvino.opset13 as ops

    results = model.get_results()
    if len(results) != 1:
        return False
    head = results[0].input_value(0).get_node()
    if head.get_type_name() not in ("MatMul", "GgmlMatMul"):
        log.warning("the logits come from %s, not a MatMul: every row is computed", head.get_type_name())
        return False
    indices = ops.parameter([-1], ov.Type.i64, name=LOGITS_INDICES)
    indices.output(0).get_tensor().set_names({LOGITS_INDICES})
    hidden = head.input_value(0)
    gathered = ops.gather(hidden, indices, ops.constant(0, ov.Type.i64))
    head.input(0).replace_source_output(gathered.output(0))
    model.add_parameters([indices])
    model.validate_nodes_and_infer_types()
    return True


def compile_paged(
    xml: Path,
    *,
    threads: int,
    precision: str,
    dynamic_quantization: bool,
    kv_cache: str = "u8",
    ggml_library: Path | None = None,
) -> CompiledPaged:
    """Read the IR, make it paged, and compile it for the CPU at `precision` (f32 or bf16), with
    or without dynamic quantization of the activations (`DYNAMIC_QUANTIZATION_GROUP`), its KV
    cache in `kv_cache` (u8 or f32; precision.kv_cache). An IR with ggml's MatMuls needs their
    `ggml_library` (ggml_kernels.py), whose nodes split their rows between the plugin's threads."""
    import openvino as ov
    from openvino._offline_transformations import paged_attention_transformation

    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, PRECISION_HINT: precision}
    if ggml_library is not None:
        core.add_extension(str(ggml_library))
    model = core.read_model(str(xml))
    paged_attention_transformation(model)
    gathers = _gather_before_lm_head(model)
    config[DYNAMIC_QUANTIZATION] = DYNAMIC_QUANTIZATION_GROUP if dynamic_quantization else 0
    config[KV_CACHE_PRECISION] = kv_cache
    compiled = core.compile_model(model, "CPU", config)
    got = compiled.get_property(PRECISION_HINT)  # an element type: f32, bf16, f16
    group = int(compiled.get_property(DYNAMIC_QUANTIZATION))
    cache = str(compiled.get_property(KV_CACHE_PRECISION).to_string())
    return CompiledPaged(compiled, str(got.to_string()), gathers, group, cache)
