"""A GGUF tensor requantized to Q8_0 as llama.cpp's quantizer does it: its values decoded to f32
(gguf-py's `dequantize`), then quantized by ggml's own `ggml_quantize_chunk` (the C library
llama-cpp-python ships), a tensor already in Q8_0 kept as it is."""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np
import numpy.typing as npt

GGML_TYPE_Q8_0 = 8
"""ggml's type id of Q8_0 (not llama.cpp's file type, `gguf_rewrite.Q8_0`)."""
Q8_0_BLOCK = (32, 34)
"""Q8_0's values and bytes per block (an f16 scale, then 32 int8 codes)."""
VALUES_AT_A_TIME = 1 << 22
"""About how many values `requantized_q8_0` decodes to f32 at a time (16 MiB): a tied LM head's
151,936 x 1,536 at once took 0.9 GB of f32, the peak of Qwen2.5-Coder-1.5B's IR build."""


@functools.cache
def _quantize_chunk() -> Any:
    from llama_cpp._ggml import libggml

    function = libggml.ggml_quantize_chunk
    function.argtypes = [
        ctypes.c_int,  # type
        ctypes.c_void_p,  # const float * src
        ctypes.c_void_p,  # void * dst
        ctypes.c_int64,  # start
        ctypes.c_int64,  # nrows
        ctypes.c_int64,  # n_per_row
        ctypes.c_void_p,  # const float * imatrix
    ]
    function.restype = ctypes.c_size_t
    return function


def dequantized(raw: npt.NDArray[np.uint8], type_id: int, rows: int, cols: int) -> npt.NDArray[np.float32]:
    """A `rows` x `cols` tensor's raw GGUF bytes as f32 values."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    values = dequantize(np.ascontiguousarray(raw).reshape(rows, -1), GGMLQuantizationType(type_id))
    return np.ascontiguousarray(values, dtype=np.float32).reshape(rows, cols)


def q8_0_bytes(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """[rows, cols] f32 values (cols a multiple of 32) as Q8_0 blocks, [rows, cols // 32 * 34]."""
    rows, cols = values.shape
    per_block, block_bytes = Q8_0_BLOCK
    if cols % per_block:
        raise ValueError(f"Q8_0 needs a multiple of {per_block} values a row, not {cols}")
    source = np.ascontiguousarray(values, dtype=np.float32)
    target = np.empty((rows, cols // per_block * block_bytes), np.uint8)
    written = _quantize_chunk()(GGML_TYPE_Q8_0, source.ctypes.data, target.ctypes.data, 0, rows, cols, None)
    if written != target.nbytes:
        raise RuntimeError(f"ggml wrote {written} bytes of Q8_0, not {target.nbytes}")
    return target


def requantized_q8_0(raw: npt.NDArray[np.uint8], type_id: int, rows: int, cols: int) -> npt.NDArray[np.uint8]:
    """A tensor's raw GGUF bytes as Q8_0 blocks, [rows, cols // 32 * 34]: kept where it is Q8_0
    (as llama.cpp's quantizer keeps a tensor already of the target type), else quantized from
    its f32 values, a few rows at a time (Q8_0's blocks lie within a row)."""
    source = np.ascontiguousarray(raw).reshape(rows, -1)
    if type_id == GGML_TYPE_Q8_0:
        return source
    per_block, block_bytes = Q8_0_BLOCK
    target = np.empty((rows, cols // per_block * block_bytes), np.uint8)
    step = max(1, VALUES_AT_A_TIME // cols)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        target[start:stop] = q8_0_bytes(dequantized(source[start:stop], type_id, stop - start, cols))
    return target
