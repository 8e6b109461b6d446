"""Which GGUF file OpenVINO GenAI reads: the file as is when it holds only F16 and F32 tensors,
else an F16 rewrite made once with llama.cpp's quantizer and cached by content hash.

F16 holds the dequantized weights, so it loses nothing against the file. OpenVINO GenAI 2026.4's
own reading of quantized files refuses some types (the bundled Qwen2.5-Coder q4_k_m holds Q5_0
tensors), and where it does read them it does not decode as llama.cpp does: SmolLM2's Q4_1 file
read as is matched llama.cpp's first 32 greedy tokens for 70 of 640 tokens over 20 prompts, its F16
rewrite for 546 (Zen 3, AVX2; tests/unit/test_openvino_engine.py). F16 was also the faster route at 16
streams on both models.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aios_serve.models.gguf_rewrite import F16, holds_only, rewritten

log = logging.getLogger("aios_serve.engine.generation")

AS_IS_TYPES = frozenset({"F32", "F16"})
"""Tensor types OpenVINO reads without loss (a file of only these needs no rewrite)."""


def f16_rewrite(gguf: Path) -> Path:
    """The file rewritten to F16, made once per content hash under `cache_dir() / "openvino"`."""
    return rewritten(gguf, ftype=F16, label="f16", folder="openvino")


def openvino_weights(gguf: Path, *, force_rewrite: bool = False) -> tuple[Path, str]:
    """The file to give OpenVINO and the route taken: `as-is` or `f16-rewrite`.

    As is when the file holds only F16 and F32 tensors; else its F16 rewrite. `force_rewrite`
    takes the F16 route regardless.
    """
    if not force_rewrite and holds_only(gguf, AS_IS_TYPES):
        log.info("OpenVINO reads %s as is", gguf)
        return gguf, "as-is"
    target = f16_rewrite(gguf)
    log.info("OpenVINO reads %s through its F16 rewrite %s", gguf, target)
    return target, "f16-rewrite"
