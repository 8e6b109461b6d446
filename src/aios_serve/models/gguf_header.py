"""A GGUF file's tensor types, read by ggml's own GGUF reader (the C library llama-cpp-python
ships) from the header alone: gguf-py's reader builds an array per metadata value and took 6-7 s
over the 151k-token vocabulary of a Qwen file, ggml's takes milliseconds."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any


class _InitParams(ctypes.Structure):
    """ggml's `struct gguf_init_params`."""

    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@functools.cache
def _ggml() -> Any:
    from llama_cpp._ggml import libggml

    libggml.gguf_init_from_file.argtypes = [ctypes.c_char_p, _InitParams]
    libggml.gguf_init_from_file.restype = ctypes.c_void_p
    libggml.gguf_get_n_tensors.argtypes = [ctypes.c_void_p]
    libggml.gguf_get_n_tensors.restype = ctypes.c_int64
    libggml.gguf_get_tensor_type.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    libggml.gguf_get_tensor_type.restype = ctypes.c_int
    libggml.gguf_free.argtypes = [ctypes.c_void_p]
    libggml.gguf_free.restype = None
    return libggml


def tensor_type_ids(gguf: Path) -> list[int]:
    """Each tensor's ggml type id, in the file's order; OSError where ggml cannot read the header
    (not a GGUF file, a version it does not know, cut short)."""
    libggml = _ggml()
    header = libggml.gguf_init_from_file(str(gguf).encode(), _InitParams(no_alloc=True, ctx=None))
    if not header:
        raise OSError(f"ggml could not read the GGUF header of {gguf}")
    try:
        return [libggml.gguf_get_tensor_type(header, i) for i in range(libggml.gguf_get_n_tensors(header))]
    finally:
        libggml.gguf_free(header)


def tensor_type_names(gguf: Path) -> frozenset[str]:
    """The file's tensor types by gguf-py's names (`Q4_K`, `F32`, ...)."""
    from gguf import GGMLQuantizationType

    return frozenset(GGMLQuantizationType(type_id).name for type_id in tensor_type_ids(gguf))
