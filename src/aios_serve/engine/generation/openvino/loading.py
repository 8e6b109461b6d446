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

import hashlib
import logging
import os
from pathlib import Path

from aios_serve.models.bundled import cache_dir

log = logging.getLogger("aios_serve.engine.generation")

AS_IS_TYPES = frozenset({"F32", "F16"})
"""Tensor types OpenVINO reads without loss (a file of only these needs no rewrite)."""

_F16 = 1  # LLAMA_FTYPE_MOSTLY_F16


def tensor_types(gguf: Path) -> set[str]:
    """The tensor types in a GGUF file (read from its header, weights memory-mapped)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    return {tensor.tensor_type.name for tensor in reader.tensors}


def readable_as_is(gguf: Path) -> bool:
    """Whether the file holds only tensor types OpenVINO reads without loss."""
    try:
        return tensor_types(gguf) <= AS_IS_TYPES
    except Exception as exc:  # an unreadable header: let the rewrite decide
        log.warning("could not read the tensor types of %s: %s", gguf, exc)
        return False


def content_hash(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def f16_rewrite(gguf: Path) -> Path:
    """The file rewritten to F16 with llama.cpp's quantizer, made once per content hash under
    `cache_dir() / "openvino"` (written to a temporary name, then renamed into place)."""
    folder = cache_dir() / "openvino"
    target = folder / f"{gguf.stem}-{content_hash(gguf)[:16]}.f16.gguf"
    if target.is_file():
        return target
    import llama_cpp

    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.{os.getpid()}.partial"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _F16
    params.allow_requantize = True
    log.info("rewriting %s to F16 for OpenVINO (once) at %s", gguf, target)
    try:
        failed = llama_cpp.llama_model_quantize(str(gguf).encode(), str(partial).encode(), params)
        if failed:
            raise RuntimeError(f"llama.cpp could not rewrite {gguf} to F16 (status {failed})")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def openvino_weights(gguf: Path, *, force_rewrite: bool = False) -> tuple[Path, str]:
    """The file to give OpenVINO and the route taken: `as-is` or `f16-rewrite`.

    As is when the file holds only F16 and F32 tensors; else its F16 rewrite. `force_rewrite`
    takes the F16 route regardless.
    """
    if not force_rewrite and readable_as_is(gguf):
        log.info("OpenVINO reads %s as is", gguf)
        return gguf, "as-is"
    target = f16_rewrite(gguf)
    log.info("OpenVINO reads %s through its F16 rewrite %s", gguf, target)
    return target, "f16-rewrite"
