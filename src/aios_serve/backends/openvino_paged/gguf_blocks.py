"""GGUF quantized tensors decoded to integer codes with per-group scales and offsets, without
rounding: weight[row, g*size + j] = scale[row, g] * (code[row, g*size + j] - zero) - offset[row, g].

Each format keeps its own codes (4-bit ones stay 4-bit); only the block's header is multiplied
out (a K-quant's 6-bit sub-scale times its f16 super-scale, held in f32). The block layouts are
ggml's (`ggml-common.h`): Q4_0, Q4_1, Q5_0, Q8_0, Q4_K (256 values, 8 sub-blocks of 32) and
Q6_K (256 values, 16 sub-blocks of 16).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Decoded:
    """One weight matrix as codes, scales and offsets (see the module docstring)."""

    codes: U8
    """[rows, cols], each below 2**bits."""
    bits: int
    """4 or 8: the width the codes are stored at."""
    group: int
    """Values sharing one scale and offset along a row."""
    zero: int
    """Subtracted from every code before scaling (0, 8, 16, 32 or 128)."""
    scale: F32
    """[rows, cols // group]."""
    offset: F32 | None
    """[rows, cols // group], subtracted after scaling; None where a format has none."""


def _half(raw: U8) -> F32:
    return raw.copy().view(np.float16).astype(np.float32)


def _split_nibbles(packed: U8) -> U8:
    """32-value runs stored as 16 bytes, low nibbles first then high nibbles."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1)


def _q4_0(blocks: U8) -> tuple[U8, F32, F32 | None, int, int]:
    scale = _half(blocks[:, 0:2])
    return _split_nibbles(blocks[:, 2:18]), scale, None, 8, 32


def _q4_1(blocks: U8) -> tuple[U8, F32, F32 | None, int, int]:
    scale, minimum = _half(blocks[:, 0:2]), _half(blocks[:, 2:4])
    return _split_nibbles(blocks[:, 4:20]), scale, -minimum, 0, 32


def _q5_0(blocks: U8) -> tuple[U8, F32, F32 | None, int, int]:
    scale = _half(blocks[:, 0:2])
    high_bits = np.unpackbits(blocks[:, 2:6], axis=-1, bitorder="little")  # bit j: value j's 5th bit
    codes = (_split_nibbles(blocks[:, 6:22]) | (high_bits << 4)).astype(np.uint8)
    return codes, scale, None, 16, 32


def _q8_0(blocks: U8) -> tuple[U8, F32, F32 | None, int, int]:
    codes = (blocks[:, 2:34] ^ 0x80).astype(np.uint8)  # an int8 + 128: the byte, its top bit flipped
    return codes, _half(blocks[:, 0:2]), None, 128, 32


def _k_scales(packed: U8) -> tuple[U8, U8]:
    """Q4_K's 12 bytes → 8 six-bit scales and 8 six-bit mins."""
    low, mid, top = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([low & 0x3F, (top & 0x0F) | ((low >> 6) << 4)], axis=-1)
    mins = np.concatenate([mid & 0x3F, (top >> 4) | ((mid >> 6) << 4)], axis=-1)
    return scales, mins


def _q4_k(blocks: U8) -> tuple[U8, F32, F32 | None, int, int]:
    super_scale, super_min = _half(blocks[:, 0:2]), _half(blocks[:, 2:4])
    scales, mins = _k_scales(blocks[:, 4:16])
    codes = _split_nibbles(blocks[:, 16:144].reshape(-1, 4, 32)).reshape(-1, 256)
    return codes, super_scale * scales, super_min * mins, 0, 32


def _q6_k(blocks: U8) -> tuple[U8, F32, F32 | None, int, int]:
    low, high = blocks[:, 0:128], blocks[:, 128:192]
    sub_scales = blocks[:, 192:208].view(np.int8).astype(np.float32)
    super_scale = _half(blocks[:, 208:210])
    halves = []
    for half in range(2):  # each 128 values: 64 bytes of low nibbles, 32 of high bit pairs
        low_half, high_half = low[:, 64 * half : 64 * half + 64], high[:, 32 * half : 32 * half + 32]
        low_codes = [
            low_half[:, 0:32] & 0x0F,
            low_half[:, 32:64] & 0x0F,
            low_half[:, 0:32] >> 4,
            low_half[:, 32:64] >> 4,
        ]
        halves += [
            part | (((high_half >> (2 * quarter)) & 0x03) << 4) for quarter, part in enumerate(low_codes)
        ]
    return np.concatenate(halves, axis=-1), super_scale * sub_scales, None, 32, 16


_FORMATS = {
    # name: (decoder, values per block, bytes per block, bits the codes need)
    "Q4_0": (_q4_0, 32, 18, 4),
    "Q4_1": (_q4_1, 32, 20, 4),
    "Q5_0": (_q5_0, 32, 22, 8),
    "Q8_0": (_q8_0, 32, 34, 8),
    "Q4_K": (_q4_k, 256, 144, 4),
    "Q6_K": (_q6_k, 256, 210, 8),
}
DECODED_TYPES = frozenset(_FORMATS)
"""The tensor types `decode` takes."""


def decode(raw: U8, type_name: str, rows: int, cols: int) -> Decoded:
    """A `rows` x `cols` tensor's raw GGUF bytes (row-major, `cols` a multiple of the block)."""
    decoder, per_block, block_bytes, bits = _FORMATS[type_name]
    blocks = np.ascontiguousarray(raw).reshape(rows * cols // per_block, block_bytes)
    codes, scale, offset, zero, group = decoder(blocks)
    groups = cols // group

    def per_group(values: F32) -> F32:
        return np.ascontiguousarray(values, dtype=np.float32).reshape(rows, groups)

    return Decoded(
        codes=np.ascontiguousarray(codes, dtype=np.uint8).reshape(rows, cols),
        bits=bits,
        group=group,
        zero=zero,
        scale=per_group(scale),
        offset=None if offset is None else per_group(offset),
    )


def dequantized(weights: Decoded) -> F32:
    """The float matrix the codes stand for (tests and checks)."""
    rows, cols = weights.codes.shape
    grouped = weights.codes.reshape(rows, -1, weights.group).astype(np.float32) - weights.zero
    values = grouped * weights.scale[:, :, None]
    if weights.offset is not None:
        values -= weights.offset[:, :, None]
    return values.reshape(rows, cols)
