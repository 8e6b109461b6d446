"""GGUF files rewritten by llama.cpp's quantizer to one tensor type, made once per content hash
and cached (the OpenVINO routes read these where GenAI misreads the original's types)."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from aios_serve.models.bundled import cache_dir, file_sha256
from aios_serve.models.gguf_header import tensor_type_names

log = logging.getLogger("aios_serve.models")

F16 = 1  # LLAMA_FTYPE_MOSTLY_F16
Q4_0 = 2  # LLAMA_FTYPE_MOSTLY_Q4_0
Q8_0 = 7  # LLAMA_FTYPE_MOSTLY_Q8_0


def tensor_types(gguf: Path) -> frozenset[str]:
    """The tensor types in a GGUF file (read from its header; remembered per path, size and
    modification time)."""
    stat = gguf.stat()
    return _read_types(str(gguf.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_types(path: str, size: int, modified_ns: int) -> frozenset[str]:
    return tensor_type_names(Path(path))


def holds_only(gguf: Path, types: frozenset[str]) -> bool:
    """Whether every tensor of the file is of one of `types`; False (logged) where its header
    cannot be read, so the caller rewrites it."""
    found = _readable_types(gguf)
    return found is not None and found <= types


def holds_any(gguf: Path, types: frozenset[str]) -> bool:
    """Whether some tensor of the file is of one of `types`; False (logged) where its header
    cannot be read."""
    found = _readable_types(gguf)
    return found is not None and bool(found & types)


def _readable_types(gguf: Path) -> frozenset[str] | None:
    try:
        return tensor_types(gguf)
    except Exception as exc:
        log.warning("could not read the tensor types of %s: %s", gguf, exc)
        return None


def rewrite_path(gguf: Path, *, label: str, folder: str) -> Path:
    """Where `rewritten` keeps `gguf`'s rewrite: `cache_dir() / folder / <stem>-<sha16>.<label>.gguf`."""
    return cache_dir() / folder / f"{gguf.stem}-{file_sha256(gguf)[:16]}.{label}.gguf"


def rewritten(gguf: Path, *, ftype: int, label: str, folder: str, pure: bool = False) -> Path:
    """`gguf` rewritten to `ftype` (`pure`: every tensor, none kept at another type) at
    `rewrite_path`, written to a temporary name and renamed into place; an existing rewrite is
    returned as is."""
    target = rewrite_path(gguf, label=label, folder=folder)
    target_folder = target.parent
    if target.is_file():
        return target
    target_folder.mkdir(parents=True, exist_ok=True)
    partial = target_folder / f".{target.name}.{os.getpid()}.partial"
    log.info("rewriting %s to %s for OpenVINO (once) at %s", gguf, label, target)
    try:
        quantize(gguf, partial, ftype=ftype, pure=pure)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def quantize(gguf: Path, target: Path, *, ftype: int, pure: bool, embedding_type: int | None = None) -> None:
    """Write `gguf` rewritten by llama.cpp's quantizer to `target` (see `rewritten`; the token
    embedding at the ggml type `embedding_type` where given)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.pure = pure
    params.allow_requantize = True
    if embedding_type is not None:
        params.token_embedding_type = embedding_type
    failed = llama_cpp.llama_model_quantize(str(gguf).encode(), str(target).encode(), params)
    if failed:
        raise RuntimeError(f"llama.cpp could not rewrite {gguf} (ftype {ftype}, status {failed})")
