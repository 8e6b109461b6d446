"""The IR with the GGUF file's own quantized blocks: GenAI's IR of the Q8_0 rewrite (its graph)
with every weight the original holds as Q4_0, Q4_1, Q4_K or Q5_0 (`PUT_BACK`) put back from
those blocks (gguf_blocks.py), codes at their own width (u4 or u8) and scales per group.

The CPU plugin multiplies by compressed weights of the form scale * (code - zero point). Q4_0,
Q5_0 and Q6_K have an integer zero point (8, 16, 32). Q4_1's and Q4_K's blocks subtract a
per-group offset instead, which becomes the zero point offset / scale, held in f16 as GenAI's
scales are: its rounding moves a weight by at most offset * 2**-11 (the zero points of
Qwen2.5-Coder-1.5B's Q4_K blocks are below 17, so under 0.008 of a code). Scales are products of
a block's f16 and 6-bit factors, also held in f16. Tensors of other types (Q6_K, Q5_1, Q5_K, Q3_K
...) and the token embedding (read by a Gather) keep the rewrite's Q8_0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aios_serve.backends.openvino_paged.gguf_blocks import Decoded, decode

log = logging.getLogger("aios_serve.backends.openvino_paged")

PUT_BACK = frozenset({"Q4_0", "Q4_1", "Q4_K", "Q5_0"})
"""The types put back by default: Q6_K's 16-value groups (u8 codes, a scale and a zero point per
16) made Qwen2.5-Coder-1.5B step slower than its Q8_0 rewrite (186.8 against 147.2 ms at bf16
on a 2-core Sapphire Rapids), where its Q4_K blocks alone made it faster (127.8 ms)."""
KEY_VALUES = 64
"""How many leading codes of a weight's first row identify it (the Q8_0 rewrite's, +128)."""


@dataclass
class _Weight:
    """A Q8_0 weight in GenAI's IR: Constant(u8) → Convert → Subtract(zero) → Multiply(scale)
    → Reshape [out, in] → (Convert) → the second input of a MatMul with `transpose_b`."""

    codes: Any
    matmul: Any


def rewrite_codes(raw: np.ndarray, values: int | None = None) -> np.ndarray:
    """A Q8_0 tensor's codes (its first `values`, default all) as GenAI's IR stores them:
    int8 + 128, in u8."""
    blocks = raw.reshape(-1).view(np.uint8)
    if values is not None:
        blocks = blocks[: -(-values // 32) * 34]
    codes = blocks.reshape(-1, 34)[:, 2:] ^ 0x80  # a byte's int8 + 128 is the byte with its top bit flipped
    return codes.reshape(-1)[:values]


def row_order(in_ir: np.ndarray, in_rewrite: np.ndarray) -> np.ndarray | None:
    """For each row of the IR's codes, the row of the rewrite's that holds the same codes (GenAI
    reorders the rows of some weights, e.g. a llama model's query and key projections for its
    rotary embedding); None where a row has no twin."""
    if np.array_equal(in_ir, in_rewrite):
        return np.arange(len(in_ir))
    rows = {row.tobytes(): index for index, row in enumerate(in_rewrite)}
    order = [rows.get(row.tobytes(), -1) for row in in_ir]
    return None if -1 in order else np.array(order)


def _q8_weights(model: Any) -> list[_Weight]:
    """The model's Q8_0 MatMul weights (not the embedding, which a Gather reads)."""
    found = []
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or str(node.get_output_element_type(0)) != "<Type: 'uint8_t'>":
            continue
        if len(node.get_output_partial_shape(0)) != 3:
            continue
        chain = node
        for expected in ("Convert", "Subtract", "Multiply", "Reshape"):
            users = list(chain.output(0).get_target_inputs())
            if len(users) != 1 or users[0].get_node().get_type_name() != expected:
                break
            chain = users[0].get_node()
        else:
            users = list(chain.output(0).get_target_inputs())
            if len(users) == 1 and users[0].get_node().get_type_name() == "Convert":
                users = list(users[0].get_node().output(0).get_target_inputs())
            if len(users) == 1 and _is_weight_of_matmul(users[0]):
                found.append(_Weight(node, users[0].get_node()))
    return found


def _is_weight_of_matmul(user: Any) -> bool:
    node = user.get_node()
    return bool(node.get_type_name() == "MatMul" and user.get_index() == 1 and node.get_transpose_b())


def _constant(values: np.ndarray, bits: int, kept: list[np.ndarray]) -> Any:
    """A u4 or u8 Constant of `values`; its memory is `kept`'s last array (alive until saved)."""
    import openvino as ov

    flat = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)
    if bits == 4:  # two codes a byte, the first in the low nibble
        flat = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    kept.append(flat)
    element = ov.Type.u4 if bits == 4 else ov.Type.u8
    return ov.op.Constant(ov.Tensor(flat, ov.Shape(list(values.shape)), element))


def _zero_points(weights: Decoded) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the scale and the zero point (f32) with scale * (code - zero point) equal to the
    format's scale * (code - zero) - offset. A group whose scale is 0 holds only -offset: its
    codes become 0 (by the caller) and it is written as offset * (0 - 1)."""
    assert weights.offset is not None
    scale = weights.scale.copy()
    flat = scale == 0
    scale[flat] = 1.0
    zero_points = weights.zero + weights.offset / scale
    scale[flat], zero_points[flat] = weights.offset[flat], 1.0
    return scale, zero_points


def _decompressed(weights: Decoded, rows: int, cols: int, kept: list[np.ndarray]) -> Any:
    """The weight subgraph as GenAI's IR holds one: [rows, cols] f16, codes at their own width,
    an integer zero point where the format has one, an f16 one where it has an offset."""
    import openvino as ov
    import openvino.opset13 as ops

    groups = cols // weights.group
    codes = weights.codes.reshape(rows, groups, weights.group)
    scale = weights.scale
    zero_points: Any = None
    if weights.offset is not None:
        scale, exact = _zero_points(weights)
        codes = np.where((weights.scale == 0)[:, :, None], 0, codes).astype(np.uint8)
        zero_points = ops.constant(exact.astype(np.float16)[:, :, None])
    elif weights.zero:
        zeros = np.full((rows, groups, 1), weights.zero, np.uint8)
        zero_points = ops.convert(_constant(zeros, weights.bits, kept), ov.Type.f16)
    values = ops.convert(_constant(codes, weights.bits, kept), ov.Type.f16)
    if zero_points is not None:
        values = ops.subtract(values, zero_points)
    scaled = ops.multiply(values, ops.constant(scale.astype(np.float16)[:, :, None]))
    return ops.reshape(scaled, ops.constant(np.array([rows, cols], np.int64)), False)


def _rows(weights: Decoded, order: np.ndarray) -> Decoded:
    """`weights` with its rows in `order`."""
    if np.array_equal(order, np.arange(len(order))):
        return weights
    offset = None if weights.offset is None else weights.offset[order]
    return replace(weights, codes=weights.codes[order], scale=weights.scale[order], offset=offset)


def _put_back(weight: _Weight, decoded: Decoded, kept: list[np.ndarray]) -> None:
    """Replace the MatMul's weight by `decoded`."""
    import openvino as ov
    import openvino.opset13 as ops

    rows, cols = decoded.codes.shape
    new_weight = ops.convert(_decompressed(decoded, rows, cols, kept), ov.Type.f32)
    weight.matmul.input(1).replace_source_output(new_weight.output(0))


def save_with_own_blocks(
    base: Path, original: Path, rewrite: Path, target: Path, types: frozenset[str] = PUT_BACK
) -> dict[str, int]:
    """Read `base` (GenAI's IR of `rewrite`, the Q8_0 rewrite of `original`), put the original's
    blocks back and save the result as `target`; per tensor type, how many weights were put back."""
    import openvino as ov
    from gguf import GGUFReader

    model = ov.Core().read_model(str(base))
    source = {t.name: t for t in GGUFReader(str(original)).tensors}
    rewritten = {}
    for q8 in GGUFReader(str(rewrite)).tensors:
        if q8.tensor_type.name == "Q8_0" and source.get(q8.name) is not None:
            key = rewrite_codes(np.asarray(q8.data), min(KEY_VALUES, int(q8.shape[0]))).tobytes()
            rewritten[(key, tuple(int(n) for n in q8.shape))] = q8
    counts: dict[str, int] = {}
    kept: list[np.ndarray] = []
    for weight in _q8_weights(model):
        out, groups, size = (d.get_length() for d in weight.codes.get_output_partial_shape(0))
        cols = groups * size
        in_ir = np.asarray(weight.codes.get_data()).reshape(out, cols)
        twin = rewritten.get((in_ir[0, : min(KEY_VALUES, cols)].tobytes(), (cols, out)))
        tensor = source[twin.name] if twin is not None else None
        if twin is None or tensor is None or tensor.tensor_type.name not in types:
            continue
        order = row_order(in_ir, rewrite_codes(np.asarray(twin.data)).reshape(out, cols))
        if order is None:
            log.warning("%s: an IR row has no twin in the rewrite; kept at Q8_0", twin.name)
            continue
        type_name = tensor.tensor_type.name
        decoded = _rows(
            decode(np.asarray(tensor.data).reshape(-1).view(np.uint8), type_name, out, cols), order
        )
        _put_back(weight, decoded, kept)
        counts[type_name] = counts.get(type_name, 0) + 1
    model.validate_nodes_and_infer_types()
    ov.save_model(model, str(target), compress_to_fp16=False)
    log.info("put the file's own blocks back: %s", counts)
    return counts
