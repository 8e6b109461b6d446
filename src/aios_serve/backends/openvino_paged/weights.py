"""Which GGUF file GenAI builds the paged model from (the `weights_type` option), each rewrite
made once by llama.cpp's quantizer and cached by content hash. GenAI decodes F32, F16 and Q8_0 as
llama.cpp does but misreads 4-bit k-quants, so a file of other types is never read as is.

- `q8_0` (default): the file as is when it holds only F32, F16 and Q8_0 tensors, else a Q8_0
  rewrite (`pure`: every tensor Q8_0, none kept at a k-quant GenAI misreads).
- `f16`: the file as is when it holds only F32 and F16 tensors, else an F16 rewrite. At bf16 on
  AMX the CPU plugin multiplies by weights it converted once, where it decompresses u8 weights
  in every call. Sapphire Rapids, in process, bf16, 64 greedy tokens, medians of two rounds
  (`benchmarks/generation/openvino_speed.py --precision bf16 --weights-type q8_0 f16 --rounds 2
  --max-tokens 64`): SmolLM2 at 16 streams 722.2 tok/s against 527.1 from Q8_0, one stream 62.1
  against 65.0; Qwen2.5-Coder-0.5B 289.1 against 188.8, one stream 22.4 against 25.3. But the
  compiled model holds about 6 bytes a weight: Qwen2.5-Coder-1.5B took 10.2 GiB of anonymous
  memory once loaded at bf16 against 0.7 GiB (2.2 GiB after the first pass) from Q8_0
  (benchmarks/generation/openvino_footprint.py FILE --precision bf16 [--weights-type f16]).
  Memory near the file's size is the default.

Why Q8_0 and not an F16 rewrite (the route of the GenAI pipeline engine this one replaced): on a
2-core Sapphire Rapids at f32 (dynamic activation quantization off, see graph.py), SmolLM2's
Q8_0 model stepped in 15.8 ms for one sequence and 35.6 ms for 16, against 26.4 and 42.9 ms from
F16 (it reads half the weight bytes; with dynamic quantization on, 12.9 and 21.8 ms, but prompt
and decode passes then disagree). Teacher-forced against llama.cpp on the original Q4_1 file
(engine/generation/fidelity.py, 20 prompts x 32 tokens): top-1 624/640, mean |Δ logprob| 0.036
(F16: 625/640, 0.029). The file is 138 MiB, not 258; RSS was not compared.

Why not Q4_0 (llama.cpp's quantizer, Q8_0 kept for the embeddings and the output layer), though
GenAI reads it exactly too: it is faster but requantizes 4-bit k-quants a second time. Same
machine, f32, in process (10 prompts x 32 tokens teacher-forced against llama.cpp on the original):
SmolLM2 one stream 86.2 against 64.1 tok/s, 16 streams 435 against 371, top-1 77.8% against
98.1%; Qwen2.5-Coder-0.5B 31.4 against 25.0 tok/s, 156 against 147, top-1 88.8% against 97.8%.
Weights near 4 bits that keep the agreement need the file's own Q4_K/Q6_K blocks rebuilt with
their exact zero points.
"""

from __future__ import annotations

from pathlib import Path

from aios_serve.models.gguf_rewrite import F16, Q8_0, holds_only, rewritten

EXACT_TYPES = frozenset({"F32", "F16", "Q8_0"})
"""Tensor types GenAI 2026.4 decodes as llama.cpp does."""
FLOAT_TYPES = frozenset({"F32", "F16"})
"""Tensor types the f16 route reads as is."""


def q8_0_rewrite(gguf: Path) -> Path:
    """The file with every tensor rewritten to Q8_0, made once per content hash under
    `cache_dir() / "openvino-ir"`."""
    return rewritten(gguf, ftype=Q8_0, label="q8_0-pure", folder="openvino-ir", pure=True)


def f16_rewrite(gguf: Path) -> Path:
    """The file with every tensor rewritten to F16 (F32 ones kept), made once per content hash."""
    return rewritten(gguf, ftype=F16, label="f16", folder="openvino")


def paged_weights(gguf: Path, weights_type: str = "q8_0") -> tuple[Path, str]:
    """The file to build the model from for `weights_type` (q8_0, f16) and its route: `as-is`,
    `q8_0-rewrite` or `f16-rewrite`."""
    if weights_type == "f16":
        if holds_only(gguf, FLOAT_TYPES):
            return gguf, "as-is"
        return f16_rewrite(gguf), "f16-rewrite"
    if holds_only(gguf, EXACT_TYPES):
        return gguf, "as-is"
    return q8_0_rewrite(gguf), "q8_0-rewrite"
