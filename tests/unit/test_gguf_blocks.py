"""GGUF blocks decoded to codes, scales and offsets stand for exactly the values gguf-py's own
dequantizer gives, on the bundled files' real tensors and on freshly quantized Q4_0."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from aios_serve.backends.openvino_paged.exact_ir import PUT_BACK, _put_back, _Weight, row_order
from aios_serve.backends.openvino_paged.gguf_blocks import DECODED_TYPES, decode, dequantized
from aios_serve.models.bundled import resolve_bundled
from aios_serve.models.gguf_header import GgufTensor, tensors

WIDTH = {"Q4_0": 4, "Q4_1": 4, "Q4_K": 4, "Q5_0": 8, "Q6_K": 8, "Q8_0": 8}
"""The width each type's codes are stored at, and below it the most they may hold."""
MOST = {"Q4_0": 15, "Q4_1": 15, "Q4_K": 15, "Q5_0": 31, "Q6_K": 63, "Q8_0": 255}


def _first_of_each_type(model: str) -> list[tuple[str, GgufTensor]]:
    seen: dict[str, GgufTensor] = {}
    for tensor in tensors(resolve_bundled(model)):
        name = GGMLQuantizationType(tensor.type_id).name
        if name in DECODED_TYPES and name not in seen and int(np.prod(tensor.shape[1:])) <= 20_000:
            seen[name] = tensor
    return list(seen.items())


def _gguf_values(tensor: GgufTensor, rows: int, cols: int) -> np.ndarray:
    """gguf-py's dequantization of the tensor's blocks, as a rows x cols matrix."""
    return dequantize(tensor.data, GGMLQuantizationType(tensor.type_id)).reshape(rows, cols)


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_bundled_tensors_decode_to_gguf_values(model: str) -> None:
    found = _first_of_each_type(model)
    assert found, "no tensor of a decoded type"
    for type_name, tensor in found:
        cols, rows = tensor.shape[0], int(np.prod(tensor.shape[1:]))
        decoded = decode(tensor.data, type_name, rows, cols)
        expected = _gguf_values(tensor, rows, cols)
        np.testing.assert_array_equal(dequantized(decoded), expected, err_msg=type_name)
        assert decoded.bits == WIDTH[type_name]
        assert int(decoded.codes.max()) <= MOST[type_name] and decoded.codes.shape == (rows, cols)
        assert decoded.scale.shape == (rows, cols // decoded.group)


def test_types_of_the_bundled_files_are_covered() -> None:
    covered = {
        name
        for model in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
        for name, _ in _first_of_each_type(model)
    }
    assert covered >= {"Q4_1", "Q5_0", "Q4_K", "Q6_K", "Q8_0"}


def test_quantized_q4_0_decodes_to_gguf_values() -> None:
    values = np.random.default_rng(7).standard_normal((8, 64)).astype(np.float32)
    raw = quantize(values, GGMLQuantizationType.Q4_0)
    decoded = decode(raw.reshape(-1).view(np.uint8), "Q4_0", 8, 64)
    expected = dequantize(raw, GGMLQuantizationType.Q4_0).reshape(8, 64)
    np.testing.assert_array_equal(dequantized(decoded), expected)
    assert decoded.zero == 8 and decoded.offset is None


def test_row_order_finds_rows_genai_moved() -> None:
    """GenAI reorders a llama model's query and key rows; each IR row's twin is found, and a row
    with none leaves the weight at Q8_0."""
    rewrite = np.random.default_rng(3).integers(0, 256, (6, 64)).astype(np.uint8)
    moved = np.array([0, 3, 1, 4, 2, 5])
    assert row_order(rewrite, rewrite) is not None
    np.testing.assert_array_equal(row_order(rewrite[moved], rewrite), moved)
    changed = rewrite[moved].copy()
    changed[2, 5] ^= 1
    assert row_order(changed, rewrite) is None


@pytest.mark.parametrize("zero_points", [True, False], ids=["zero-points", "none"])
@pytest.mark.parametrize("stacked", [1, 3], ids=["alone", "three-stacked"])
@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_a_weight_put_back_multiplies_as_the_gguf_values(model: str, stacked: int, zero_points: bool) -> None:
    """The subgraph that replaces MatMuls' weights (integer zero points, and for Q4_1/Q4_K the
    offsets' remainder taken off the output; or signed codes, and the whole offsets taken off)
    gives x @ W.T for gguf-py's W, at f32 without int8 activations, up to the f16 rounding of the
    scales and offsets; `stacked` MatMuls reading one input (a tensor's rows in unequal parts)
    become one, and each user still reads its part."""
    import openvino as ov
    import openvino.opset13 as ops

    put_back = [(name, tensor) for name, tensor in _first_of_each_type(model) if name in PUT_BACK]
    assert put_back
    rng = np.random.default_rng(3)
    for type_name, tensor in put_back:
        cols, rows = tensor.shape[0], int(np.prod(tensor.shape[1:]))
        expected = _gguf_values(tensor, rows, cols)
        decoded = decode(tensor.data, type_name, rows, cols)
        cuts = [0, *sorted(rng.choice(np.arange(1, rows), stacked - 1, replace=False)), rows]
        parts = list(itertools.pairwise(cuts))
        x = ops.parameter([-1, cols], ov.Type.f32, name="x")
        weights, results = [], []
        for begin, end in parts:
            matmul = ops.matmul(x, ops.constant(np.zeros((end - begin, cols), np.float32)), False, True)
            weights.append(_Weight(None, matmul))
            results.append(ops.result(ops.relu(matmul)))  # users that must be moved to the new output
        pieces = [
            replace(
                decoded,
                codes=decoded.codes[begin:end],
                scale=decoded.scale[begin:end],
                offset=None if decoded.offset is None else decoded.offset[begin:end],
            )
            for begin, end in parts
        ]
        kept: list[np.ndarray] = []  # the constants' memory, alive until compiled
        _put_back(weights, pieces, kept, {}, zero_points)
        compiled = ov.Core().compile_model(
            ov.Model(results, [x]),
            "CPU",
            {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0},
        )
        inputs = rng.standard_normal((3, cols)).astype(np.float32)
        outputs = compiled({"x": inputs})
        want = np.maximum(inputs.astype(np.float64) @ expected.T.astype(np.float64), 0)
        for index, (begin, end) in enumerate(parts):
            got, wanted = outputs[index], want[:, begin:end]
            assert got.shape == wanted.shape, type_name
            assert np.abs(got - wanted).max() <= 2e-3 * np.abs(want).max(), type_name
