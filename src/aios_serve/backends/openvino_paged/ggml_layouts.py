"""ggml's interleaved weight layouts (its CPU_REPACK buffers, as llama.cpp loads weights): the
ggml IR holds a weight in the layout this CPU's ggml multiplies fastest where there is one (Q4_K
in 8-row groups on AVX2; Q6_K has none there), repacked once at build time by the native library
(`aios_ggml_repack` in native/ggml_matmul.cpp), so nothing is copied at load.

On a 2-core Zen 3, one Q4_K 8,960 x 1,536 weight on one core, plain / repacked (a scratch
program over ggml's public API): 1 row 0.65 / 0.58 ms, 4 rows 2.3 / 1.8, 8 rows 6.7 / 3.5, 16
rows 6.7 / 4.7. One decode step of Qwen2.5-Coder-1.5B (Q4_K_M: 168 of its 197 MatMuls are Q4_K),
each IR in its own process, three rounds in turns, ms, layout / plain: 1 sequence 60-75 / 65-81
(0.93x, median of the rounds' ratios), 8 sequences 270-371 / 331-434 (0.82x), 16 sequences
456-668 / 665-841 (0.79x) (benchmarks/generation/openvino_layouts.py FILE). A later single
round gave one sequence 84 / 76: for one sequence the gain is within this machine's noise.

A layout belongs to the CPU and the ggml build, so the IR is cached per `signature()`.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable, Iterable
from functools import cache

import numpy as np

from aios_serve.backends.openvino_paged.ggml_kernels import library

SAMPLE_ROWS, SAMPLE_COLUMNS = 8, 256
"""The sample each type is repacked as for `signature()`: one 8-row group of 256 values."""


@cache
def _repack() -> Callable[..., int] | None:
    built = library()
    if built is None:
        return None
    function = ctypes.CDLL(str(built)).aios_ggml_repack
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def repacked(type_name: str, blocks: np.ndarray) -> np.ndarray | None:
    """`blocks` (u8 [rows, row bytes], a GGUF tensor of `type_name`) in this CPU's layout for
    the type and shape, or None where ggml has none (or the library is not built)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    function = _repack()
    if function is None:
        return None
    kind = GGMLQuantizationType[type_name]
    block_size, type_size = GGML_QUANT_SIZES[kind]
    blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
    rows, row_bytes = blocks.shape
    if row_bytes % type_size:
        raise ValueError(f"a row of {row_bytes} bytes is not whole {type_name} blocks")
    columns = row_bytes // type_size * block_size
    packed = np.empty_like(blocks)
    done = function(int(kind), rows, columns, blocks.ctypes.data, packed.ctypes.data)
    return packed if done == 1 else None


@cache
def _signature(type_names: frozenset[str]) -> str:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    digest, found = hashlib.sha256(), False
    for name in sorted(type_names):
        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
        if SAMPLE_COLUMNS % block_size:
            continue
        row_bytes = SAMPLE_COLUMNS // block_size * type_size
        sample = (np.arange(SAMPLE_ROWS * row_bytes) % 251).astype(np.uint8).reshape(SAMPLE_ROWS, row_bytes)
        packed = repacked(name, sample)
        if packed is not None:
            digest.update(name.encode() + packed.tobytes())
            found = True
    return digest.hexdigest()[:12] if found else "plain"


def signature(type_names: Iterable[str]) -> str:
    """A short name for the layouts this CPU's ggml gives these GGUF types (a hash of a sample of
    each as repacked), `plain` where it has none: IRs made on CPUs with other layouts differ."""
    return _signature(frozenset(type_names))
