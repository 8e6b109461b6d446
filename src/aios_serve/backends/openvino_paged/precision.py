"""How the CPU plugin computes the paged model: the activation precision that the
`inference_precision` option asks for and this CPU gets, and whether activations are quantized
to int8 on the fly (dynamic quantization). The compiled model reports what it became (graph.py).

Left alone, the plugin infers in bf16 wherever the CPU has AVX-512 BF16 or AMX, and in f32
elsewhere; at f32, on a CPU with VNNI, it quantizes activations per group of 32 and multiplies
integers where the weights allow it. Either way a row's result depends on what else is in the
batch (bf16 keeps 8 bits of mantissa; the quantized kernels are chosen by the batch's size),
so near-tied logits flip and batched greedy output no longer equals sequential.
`batch_invariant` asks for plain f32, which keeps it equal. We always pass both settings
explicitly and read them back.
"""

from __future__ import annotations

import logging

from aios_serve.cpu_features import has_int8_dot_product, has_native_bf16, reported_flags

log = logging.getLogger("aios_serve.backends.openvino_paged")


AUTO = "f32"
"""`auto`'s precision on every CPU class, with dynamic quantization where the CPU has VNNI
(`compute`; Zen 3 has none, and multiplies f32 activations).

Measured over HTTP on a 2-core Sapphire Rapids in one run (benchmarks/generation/README.md,
2026-12-06), against bf16 on AMX, Qwen2.5-Coder-0.5B / SmolLM2 / Qwen2.5-Coder-1.5B: one stream
30.1 / 63.4 / 10.0 tok/s against 23.0 / 48.9 / 6.0; 16 streams 211.2 / 443.9 / 60.6 against
163.0 / 342.9 / 44.1. bf16 gives the first token of a 500-token prompt sooner (0.47 / 0.30 / 2.07
s against 0.90 / 0.45 / 3.36), and `inference_precision: bf16` keeps it on offer. On a 2-core
Zen 4 (AVX-512 BF16, no AMX; 2026-12-07) f32 led everywhere: one stream 35.3 / 63.2 / 12.0
against 30.9 / 55.8 / 9.6, 16 streams 243.9 / 472.7 / 72.7 against 147.0 / 366.5 / 44.2, a
500-token prompt 0.99 / 0.48 / 4.20 s against 2.05 / 0.55 / 5.14. Zen 3 has no bf16."""


def resolve(option: str) -> str:
    """The precision to compile at, `f32` or `bf16`, for the option `auto`, `f32` or `bf16`.
    bf16 on a CPU without native bf16 falls back to f32 (the plugin would ignore it)."""
    if option == "auto":
        return AUTO
    if option == "bf16" and not has_native_bf16():
        log.warning("inference_precision bf16 asked on a CPU without native bf16; using f32")
        return "f32"
    return option


def dynamic_quantization(precision: str, batch_invariant: bool) -> bool:
    """Whether to quantize activations on the fly: at f32 (the plugin quantizes only f32
    activations) on a CPU with VNNI, unless the batch must not matter. Asked on a CPU without
    VNNI, the plugin failed to compile the MatMuls with `ONEDNN_MAX_CPU_ISA=AVX2` on a Sapphire
    Rapids ("could not create a primitive descriptor for the inner product"); on a real Zen 3 it
    compiled and gave plain f32's greedy tokens at plain f32's speed (2026-12-06)."""
    return precision == "f32" and not batch_invariant and has_int8_dot_product()


def zero_points(precision: str, quantized: bool) -> bool:
    """Whether the own-blocks IR keeps integer zero points (exact_ir.py): where the plugin
    quantizes activations to int8 (they keep Q4_K's and Q4_1's weights centred), and at bf16,
    unmeasured without them. At plain f32 they only cost time. On a 2-core Zen 3, one sequence's
    decode step without them took 1/1.15 (SmolLM2), 1/1.22 (Qwen2.5-Coder-0.5B) of the time
    (medians of 60 steps' ratios, both IRs loaded, in turns), Qwen2.5-Coder-1.5B's 92-98 ms
    against 117-119 (benchmarks/generation/openvino_profile.py --zero-points on|off); 16
    sequences' the same (1.01-1.05x); teacher-forced against llama.cpp, top-1 and mean
    |Δ logprob| unchanged (benchmarks/generation/README.md)."""
    return quantized or precision != "f32"


def kv_cache(batch_invariant: bool) -> str:
    """The KV cache's element type: u8 (a quarter of f32's bytes), f32 where the batch must not
    matter. A prompt's attention reads its own keys and values as computed, and a later chunk
    reads them from the cache: with oneDNN kept to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`, as on Zen 3)
    on a Sapphire Rapids, SmolLM2's logits after a prefix-cache hit then differed from a whole
    prefill's by up to 0.054 with u8, 0.0041 with f16 and 0.00004 with f32 (0 at every AVX-512
    level, whatever the type)."""
    return "f32" if batch_invariant else "u8"


def compute(option: str, batch_invariant: bool) -> tuple[str, bool]:
    """The precision to compile at and whether to quantize activations, for the options
    `inference_precision` and `batch_invariant` (plain f32, whatever `option` says)."""
    precision = "f32" if batch_invariant else resolve(option)
    return precision, dynamic_quantization(precision, batch_invariant)


def described(asked: str, compiled: str, quantized_group: int = 0) -> str:
    """The precision as logs and the start-up banner show it; where an option `asked` for it,
    with that option and the CPU's deciding flags."""
    quantized = f", int8 activations per {quantized_group}" if quantized_group else ""
    origin = f" (asked {asked}; CPU {reported_flags()})" if asked else ""
    return f"precision {compiled}{quantized}{origin}"
