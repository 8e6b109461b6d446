"""A GGUF file's tensors (names, types, shapes, where their bytes lie), read by ggml's own GGUF
reader (the C library llama-cpp-python ships) from the header alone: gguf-py's reader builds an
array per metadata value and took 6-7 s over the 151k-token vocabulary of a Qwen file, ggml's
takes milliseconds."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_DIMS = 4
"""GGML_MAX_DIMS: the length of a tensor's `ne`."""


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of a GGUF file."""

    name: str
    type_id: int
    """Its ggml type (`GGMLQuantizationType`)."""
    shape: tuple[int, ...]
    """ggml's `ne`, innermost first (a weight's columns, then its rows), trailing 1s dropped."""
    data: np.ndarray
    """Its bytes (u8), mapped from the file."""


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
    libggml.gguf_get_tensor_name.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    libggml.gguf_get_tensor_name.restype = ctypes.c_char_p
    libggml.gguf_get_tensor_ne.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    libggml.gguf_get_tensor_ne.restype = ctypes.POINTER(ctypes.c_int64)
    for sized in (libggml.gguf_get_tensor_offset, libggml.gguf_get_tensor_size):
        sized.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        sized.restype = ctypes.c_size_t
    libggml.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
    libggml.gguf_get_data_offset.restype = ctypes.c_size_t
    return libggml


@contextmanager
def _header(gguf: Path) -> Iterator[Any]:
    """ggml's parsed header of `gguf` (freed after); OSError where ggml cannot read it (not a
    GGUF file, a version it does not know, cut short)."""
    libggml = _ggml()
    header = libggml.gguf_init_from_file(str(gguf).encode(), _InitParams(no_alloc=True, ctx=None))
    if not header:
        raise OSError(f"ggml could not read the GGUF header of {gguf}")
    try:
        yield header
    finally:
        libggml.gguf_free(header)


def tensor_type_ids(gguf: Path) -> list[int]:
    """Each tensor's ggml type id, in the file's order."""
    libggml = _ggml()
    with _header(gguf) as header:
        return [libggml.gguf_get_tensor_type(header, i) for i in range(libggml.gguf_get_n_tensors(header))]


def tensors(gguf: Path) -> list[GgufTensor]:
    """Every tensor of the file, in its order, its bytes mapped read-only; OSError where a
    tensor's bytes would lie past the file's end."""
    libggml = _ggml()
    with _header(gguf) as header:
        data_start = libggml.gguf_get_data_offset(header)
        found = []
        for i in range(libggml.gguf_get_n_tensors(header)):
            ne = libggml.gguf_get_tensor_ne(header, i)
            dims = [int(ne[d]) for d in range(MAX_DIMS)]
            while len(dims) > 1 and dims[-1] == 1:
                dims.pop()
            start = data_start + libggml.gguf_get_tensor_offset(header, i)
            size = libggml.gguf_get_tensor_size(header, i)
            found.append(
                (
                    libggml.gguf_get_tensor_name(header, i).decode(),
                    libggml.gguf_get_tensor_type(header, i),
                    tuple(dims),
                    start,
                    size,
                )
            )
    mapped = np.memmap(gguf, dtype=np.uint8, mode="r")
    if any(start + size > len(mapped) for *_, start, size in found):
        raise OSError(f"{gguf} is shorter than its header says")
    return [
        GgufTensor(name, kind, dims, mapped[start : start + size]) for name, kind, dims, start, size in found
    ]


def tensor_type_names(gguf: Path) -> frozenset[str]:
    """The file's tensor types by gguf-py's names (`Q4_K`, `F32`, ...)."""
    from gguf import GGMLQuantizationType

    return frozenset(GGMLQuantizationType(type_id).name for type_id in tensor_type_ids(gguf))
