"""The IR with the GGUF file's own quantized blocks: GenAI's IR of a frame (the file rewritten
by llama.cpp's quantizer to Q4_0, its token embedding to Q8_0) gives the graph, and every
MatMul weight is put back: those the original holds as Q4_0, Q4_1, Q4_K or Q5_0 (`PUT_BACK`)
from its own blocks (gguf_blocks.py), codes at their own width (u4 or u8) and scales per group;
the others (Q6_K, Q8_0, F16 ...) as Q8_0, requantized as llama.cpp's quantizer does
(models/ggml_quants.py). The frame's 4-bit weights are never served: one with no twin in the
original stops the build. The token embedding (read by a Gather) keeps the frame's Q8_0.

The frame is there for its graph, and the smallest file GenAI reads exactly keeps its build
small: on Qwen2.5-Coder-1.5B (1.1 GB Q4_K_M), on a 2-core Zen 3, the whole build peaked at
5,704 MiB of RSS over a Q8_0 rewrite (1.8 GB) and at 2,019 over the Q4_0 frame (1.2 GB)
(benchmarks/generation/openvino_build_memory.py).

The CPU plugin multiplies by compressed weights of the form scale * (code - zero point), and with
integer zero points (Q4_0's 8, Q5_0's 16) or none it quantizes the activations to int8 per
group of 32 and multiplies integers (dynamic quantization), which a fractional zero point turns
off. Q4_1's and Q4_K's blocks subtract a per-group offset instead: the weight takes the nearest
integer zero point, and the MatMul's output then subtracts what remains of the offsets times
each group's sum of the input (`remaining offsets @ group_sums(x)`, a MatMul 1/32 the size);
such weights that read one input are stacked into one MatMul, split after the subtraction.
Scales and offsets are products of a block's f16 and 6-bit factors, held in f16 as GenAI's
scales are (a rounding of at most 2**-11 of each).

Where activations stay f32 (no VNNI, or `batch_invariant`), zero points only cost time: the
plugin's AVX2 kernel subtracts them from every weight it unpacks. There the weights go back
without any (`zero_points=False`): a format with a fixed zero (Q4_0's 8, Q5_0's 16, Q8_0's 128)
as signed codes, code - zero, in i4 or i8; one with offsets (Q4_1, Q4_K) as its unsigned codes,
the whole offset taken off the output. A 1,536 x 8,960 MatMul of one row took 1.12 ms with u4
codes and zero points per 32, 0.69 ms with i4 codes (u8 and zero points 1.20, i8 0.71; 2-core
Zen 3, f32, a scratch script).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aios_serve.backends.openvino_paged.gguf_blocks import Decoded, decode
from aios_serve.backends.openvino_paged.mapped_file import release, releasing
from aios_serve.models.ggml_quants import requantized_q8_0
from aios_serve.models.gguf_header import GgufTensor, tensors

log = logging.getLogger("aios_serve.backends.openvino_paged")

PUT_BACK = frozenset({"Q4_0", "Q4_1", "Q4_K", "Q5_0"})
"""The types put back by default: Q6_K's 16-value groups (u8 codes, a scale and a zero point per
16) made Qwen2.5-Coder-1.5B step slower than its Q8_0 rewrite (186.8 against 147.2 ms at bf16
on a 2-core Sapphire Rapids), where its Q4_K blocks alone made it faster (127.8 ms)."""
KEY_VALUES = 64
"""How many leading codes of a weight's first row identify it (as the IR holds them)."""


FRAME_TYPES = frozenset({"Q4_0", "Q8_0"})
"""The frame's weight types (GenAI's IR holds their codes at 4 and 8 bits)."""


@dataclass
class _Weight:
    """A weight in GenAI's IR: Constant(u4 or u8) → Convert → Subtract(zero) → Multiply(scale)
    → Reshape [out, in] → (Convert) → the second input of a MatMul with `transpose_b`."""

    codes: Any
    matmul: Any
    bits: int = 8


@dataclass
class _Plan:
    """What replaces one weight: the original's tensor, as its own blocks (`type_name` in
    PUT_BACK) or requantized to Q8_0, its rows in the IR's `order`."""

    weight: _Weight
    tensor: GgufTensor
    type_name: str
    order: np.ndarray
    rows: int
    cols: int

    def decoded(self, rows: int | None = None) -> Decoded:
        """The replacement's codes, scales and offsets (of its first `rows` only, if given)."""
        rows = rows or self.rows
        raw = np.asarray(self.tensor.data).reshape(self.rows, -1)[:rows]
        if self.type_name == "Q8_0":
            raw = requantized_q8_0(raw, self.tensor.type_id, rows, self.cols)
        decoded = decode(raw, self.type_name, rows, self.cols)
        return decoded if rows < self.rows else _rows(decoded, self.order)


def frame_codes(tensor: GgufTensor, rows: int = 0) -> np.ndarray:
    """A frame tensor's codes (of its first `rows`, default all) as GenAI's IR holds them."""
    from gguf import GGMLQuantizationType

    cols, out = tensor.shape
    rows = rows or out
    raw = np.asarray(tensor.data).reshape(out, -1)[:rows]
    return decode(raw, GGMLQuantizationType(tensor.type_id).name, rows, cols).codes


def _ir_codes(weight: _Weight) -> np.ndarray:
    """The weight's codes in the IR, [out, in] u8 (4-bit ones unpacked, the low nibble first)."""
    out, groups, size = (d.get_length() for d in weight.codes.get_output_partial_shape(0))
    packed = np.asarray(weight.codes.get_data())
    if weight.bits == 4:
        packed = np.stack([packed & 0x0F, packed >> 4], axis=-1)
    return packed.reshape(out, groups * size)


def row_order(in_ir: np.ndarray, in_rewrite: np.ndarray) -> np.ndarray | None:
    """For each row of the IR's codes, the row of the rewrite's that holds the same codes (GenAI
    reorders the rows of some weights, e.g. a llama model's query and key projections for its
    rotary embedding); None where a row has no twin."""
    if np.array_equal(in_ir, in_rewrite):
        return np.arange(len(in_ir))
    rows = {row.tobytes(): index for index, row in enumerate(in_rewrite)}
    order = [rows.get(row.tobytes(), -1) for row in in_ir]
    return None if -1 in order else np.array(order)


def _frame_weights(model: Any) -> list[_Weight]:
    """The model's quantized MatMul weights (not the embedding, which a Gather reads)."""
    widths = {"<Type: 'uint8_t'>": 8, "<Type: 'uint4_t'>": 4}
    found = []
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or len(node.get_output_partial_shape(0)) != 3:
            continue
        bits = widths.get(str(node.get_output_element_type(0)))
        if bits is None:
            continue
        chain = node
        for expected in ("Convert", "Subtract", "Multiply", "Reshape"):
            users = list(chain.output(0).get_target_inputs())
            if len(users) != 1 or users[0].get_node().get_type_name() != expected:
                break
            if expected == "Subtract" and users[0].get_index() != 0:
                break  # the zero points, which the codes' Convert is subtracted from
            chain = users[0].get_node()
        else:
            users = list(chain.output(0).get_target_inputs())
            if len(users) == 1 and users[0].get_node().get_type_name() == "Convert":
                users = list(users[0].get_node().output(0).get_target_inputs())
            if len(users) == 1 and _is_weight_of_matmul(users[0]):
                found.append(_Weight(node, users[0].get_node(), bits))
    return found


def _is_weight_of_matmul(user: Any) -> bool:
    node = user.get_node()
    return bool(
        node.get_type_name() == "MatMul"
        and user.get_index() == 1
        and node.get_transpose_b()
        and not node.get_transpose_a()
    )


def _constant(values: np.ndarray, bits: int, kept: list[np.ndarray], signed: bool = False) -> Any:
    """A u4 or u8 Constant of `values` (i4 or i8 where `signed`: values from -2**(bits-1));
    its memory is `kept`'s last array (alive until saved)."""
    import openvino as ov

    flat = values.reshape(-1).astype(np.uint8, copy=False)  # signed: the two's complement
    if bits == 4:  # two codes a byte, the first in the low nibble
        flat = ((flat[0::2] & 0x0F) | (flat[1::2] << 4)).astype(np.uint8)
    kept.append(flat)
    types = {(4, False): ov.Type.u4, (8, False): ov.Type.u8, (4, True): ov.Type.i4, (8, True): ov.Type.i8}
    return ov.op.Constant(ov.Tensor(flat, ov.Shape(list(values.shape)), types[bits, signed]))


def _centred(weights: Decoded) -> tuple[np.ndarray, Decoded]:
    """Per group, an integer zero point near the group's centre and `weights` with the offsets
    that remain: scale * (code - zero point) - remaining offset equals the format's weight.

    A format with offsets (Q4_1, Q4_K) has codes all of one sign; multiplied as they are, the
    int8 rounding of the activations would meet weights that do not average out (SmolLM2's
    teacher-forced top-1 fell from 624 to 608 of 640). With the nearest integer to
    zero + offset / scale as zero point, at most half a step of offset remains."""
    rows, groups = weights.scale.shape
    if weights.offset is None:
        return np.full((rows, groups), weights.zero, np.uint8), weights
    safe = np.where(weights.scale == 0, 1.0, weights.scale)
    nearest = np.rint(weights.zero + weights.offset / safe)
    zero_points = np.where(weights.scale == 0, 0, np.clip(nearest, 0, 2**weights.bits - 1))
    remaining = weights.offset - weights.scale * (zero_points - weights.zero)
    return zero_points.astype(np.uint8), replace(weights, offset=remaining.astype(np.float32))


def _decompressed(weights: Decoded, zero_points: np.ndarray | None, kept: list[np.ndarray]) -> Any:
    """The weight subgraph as GenAI's IR holds one, without offsets: [rows, cols] f16 of
    scale * (code - zero point), codes and integer zero points at the codes' width; with
    `zero_points` None, scale * code, the codes signed (code - the format's zero) where the
    format's zero is not 0."""
    import openvino as ov
    import openvino.opset13 as ops

    rows, cols = weights.codes.shape
    groups = cols // weights.group
    codes = weights.codes.reshape(rows, groups, weights.group)
    if zero_points is None and weights.zero:
        signed = codes - np.uint8(weights.zero)  # wraps to the two's complement of code - zero
        values = ops.convert(_constant(signed, weights.bits, kept, signed=True), ov.Type.f16)
    else:
        values = ops.convert(_constant(codes, weights.bits, kept), ov.Type.f16)
    if zero_points is not None and zero_points.any():
        zeros = _constant(zero_points[:, :, None], weights.bits, kept)
        values = ops.subtract(values, ops.convert(zeros, ov.Type.f16))
    scaled = ops.multiply(values, ops.constant(weights.scale.astype(np.float16)[:, :, None]))
    return ops.reshape(scaled, ops.constant(np.array([rows, cols], np.int64)), False)


GroupSums = dict[tuple[str, int, int], Any]
"""Per (input node, output index, group size), the input's sums per group, made once (a layer's
query, key and value projections read one input, as do its gate and up projections)."""


def _offsets_term(matmul: Any, weights: Decoded, group_sums: GroupSums) -> Any:
    """`group_sums(x) @ offsets.T` for the MatMul's input x: what the offsets take off its output."""
    import openvino as ov
    import openvino.opset13 as ops

    assert weights.offset is not None
    groups = weights.offset.shape[1]
    x = matmul.input_value(0)
    key = (x.get_node().get_name(), x.get_index(), weights.group)
    if key not in group_sums:
        rank = x.get_partial_shape().rank.get_length()
        split = ops.constant(np.array([0] * (rank - 1) + [groups, weights.group], np.int64))
        axis = ops.constant(np.array([rank], np.int64))
        group_sums[key] = ops.reduce_sum(ops.reshape(x, split, True), axis, False)
    offsets = ops.convert(ops.constant(weights.offset.astype(np.float16)), ov.Type.f32)
    return ops.matmul(group_sums[key], offsets, False, True)


def _rows(weights: Decoded, order: np.ndarray) -> Decoded:
    """`weights` with its rows in `order`."""
    if np.array_equal(order, np.arange(len(order))):
        return weights
    offset = None if weights.offset is None else weights.offset[order]
    return replace(weights, codes=weights.codes[order], scale=weights.scale[order], offset=offset)


def _merged(parts: list[Decoded]) -> Decoded:
    """Weights read by one input, their rows stacked (one MatMul for all, split after)."""
    if len(parts) == 1:
        return parts[0]
    offsets = [part.offset for part in parts]
    return replace(
        parts[0],
        codes=np.concatenate([part.codes for part in parts]),
        scale=np.concatenate([part.scale for part in parts]),
        offset=None if offsets[0] is None else np.concatenate(offsets),  # type: ignore[arg-type]
    )


def _put_back(
    weights: list[_Weight],
    decoded: list[Decoded],
    kept: list[np.ndarray],
    group_sums: GroupSums,
    zero_points: bool = True,
) -> None:
    """Replace MatMuls that read one input by one MatMul of their weights (`decoded`, in
    order) stacked; with offsets, its output minus the offsets' term; each old MatMul's users
    then read their rows of it. Without `zero_points`, the module docstring's signed form."""
    import openvino as ov
    import openvino.opset13 as ops

    points: np.ndarray | None
    if zero_points:
        points, stacked = _centred(_merged(decoded))
    else:
        points, stacked = None, _merged(decoded)
    new_weight = ops.convert(_decompressed(stacked, points, kept), ov.Type.f32)
    first = weights[0].matmul
    matmul = ops.matmul(first.input_value(0), new_weight, False, True)
    matmul.set_friendly_name(first.get_friendly_name())
    output = matmul.output(0)
    if stacked.offset is not None:
        output = ops.subtract(output, _offsets_term(first, stacked, group_sums)).output(0)
    if len(weights) > 1:
        rows = np.array([len(part.codes) for part in decoded], np.int64)
        parts = ops.variadic_split(output, ops.constant(np.int64(-1)), ops.constant(rows)).outputs()
    else:
        parts = [output]
    for weight, part in zip(weights, parts, strict=True):
        for user in list(weight.matmul.output(0).get_target_inputs()):
            user.replace_source_output(part)


def _stackable(weight: _Weight, decoded: Decoded) -> tuple[object, ...]:
    """Weights with the same key become one MatMul: those with offsets that read one input
    (a layer's query, key and value projections; its gate and up projections) in one layout.
    Stacked, one offsets' term and one subtraction serve them all. On a 2-core Sapphire Rapids
    at f32 with int8 activations, model alone: SmolLM2 stepped in 14.0-14.9 ms for one sequence
    against 16.3; Qwen2.5-Coder-1.5B in 0.93-1.03x the time (three rounds, 16 sequences
    0.91-1.01x), its 500-token prompt 1.00-1.06x. Weights without offsets stay apart: the CPU
    plugin fuses a bias or an activation into each MatMul, which a split after them prevents
    (Qwen2.5-Coder-0.5B's Q5_0 weights stacked stepped slower)."""
    if decoded.offset is None:
        return (weight.matmul.get_name(),)
    source = weight.matmul.input_value(0)
    layout = (decoded.bits, decoded.group, decoded.zero, decoded.codes.shape[1])
    return (source.get_node().get_name(), source.get_index(), *layout)


def plans(
    model: Any, original: Path, frame: Path, types: frozenset[str], mapped: tuple[Path, ...] = ()
) -> list[_Plan]:
    """What replaces each of the model's MatMul weights; RuntimeError where a 4-bit one (the
    frame's Q4_0, never to be served) has no twin in the original. The `mapped` files' pages
    are given back after each weight is matched (every code of the IR and the frame is read)."""
    from gguf import GGMLQuantizationType

    source = {t.name: t for t in tensors(original)}
    twins = {}
    for tensor in tensors(frame):
        if GGMLQuantizationType(tensor.type_id).name in FRAME_TYPES and tensor.name in source:
            key = frame_codes(tensor, rows=1)[0, :KEY_VALUES].tobytes()
            twins[(key, tensor.shape)] = tensor
    plans = []
    for weight in _frame_weights(model):
        in_ir = _ir_codes(weight)
        out, cols = in_ir.shape
        twin = twins.get((in_ir[0, :KEY_VALUES].tobytes(), (cols, out)))
        order = None if twin is None else row_order(in_ir, frame_codes(twin))
        for path in mapped:
            release(path)
        if twin is None or order is None:
            if weight.bits == 4:
                raise RuntimeError(f"a {out}x{cols} weight of the frame has no twin in {original}")
            log.warning("a %dx%d Q8_0 weight has no twin in %s; kept as GenAI read it", out, cols, original)
            continue
        tensor = source[twin.name]
        if tensor.shape != twin.shape:
            raise RuntimeError(f"{twin.name} is {tensor.shape} in {original}, {twin.shape} in its frame")
        type_name = GGMLQuantizationType(tensor.type_id).name
        if type_name in types:
            plans.append(_Plan(weight, tensor, type_name, order, out, cols))
        elif weight.bits == 4:  # the frame's Q4_0 of a tensor not put back as its own blocks
            plans.append(_Plan(weight, tensor, "Q8_0", order, out, cols))
    return plans


def save_with_own_blocks(
    base: Path,
    original: Path,
    frame: Path,
    target: Path,
    types: frozenset[str] = PUT_BACK,
    zero_points: bool = True,
) -> dict[str, int]:
    """Read `base` (GenAI's IR of `frame`, llama.cpp's Q4_0 or Q8_0 rewrite of `original`), put
    back every MatMul weight as the module docstring says (with integer zero points, or
    without any) and save the result as `target`; per type, how many weights were put back
    (`Q8_0` for those requantized). One stack of weights is decoded at a time, and the mapped
    files' pages are given back after each."""
    import openvino as ov

    model = ov.Core().read_model(str(base))
    weights_file = base.with_suffix(".bin")
    stacks: dict[tuple[object, ...], list[_Plan]] = {}
    mapped = (original, frame, weights_file)
    for plan in plans(model, original, frame, types, mapped):
        stacks.setdefault(_stackable(plan.weight, plan.decoded(rows=1)), []).append(plan)
    counts: dict[str, int] = {}
    kept: list[np.ndarray] = []
    group_sums: GroupSums = {}
    for stack in stacks.values():
        decoded = [plan.decoded() for plan in stack]
        _put_back([plan.weight for plan in stack], decoded, kept, group_sums, zero_points)
        for plan in stack:
            counts[plan.type_name] = counts.get(plan.type_name, 0) + 1
        for path in mapped:
            release(path)
    return save_put_back(model, weights_file, target, counts, "put the file's own blocks back")


def save_put_back(
    model: Any, weights_file: Path, target: Path, counts: dict[str, int], done: str
) -> dict[str, int]:
    """Save `model` (read from `weights_file`'s IR, its weights replaced) as `target`, giving
    back the pages of `weights_file` that the save reads; log `done` with the `counts` per type
    and return them."""
    import openvino as ov

    model.validate_nodes_and_infer_types()
    with releasing(weights_file):
        ov.save_model(model, str(target), compress_to_fp16=False)
    log.info("%s: %s", done, counts)
    return counts
