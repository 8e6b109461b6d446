"""The own-blocks IR puts back every MatMul weight of its Q4_0 frame, and a frame that is not
the file's stops the build rather than serve the frame's 4-bit weights. Without zero points it
computes the same logits."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino_genai")

from aios_serve.backends.openvino_paged import OpenVinoPagedModel
from aios_serve.backends.openvino_paged.exact_ir import PUT_BACK, _frame_weights, save_with_own_blocks
from aios_serve.backends.openvino_paged.ir import IR_NAME, save_ir
from aios_serve.backends.protocols.generation import BatchItem
from aios_serve.models.bundled import resolve_bundled
from aios_serve.models.ggml_quants import GGML_TYPE_Q8_0
from aios_serve.models.gguf_rewrite import Q4_0, quantize


@pytest.fixture(scope="module")
def qwen_frame(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The bundled Qwen file's frame and GenAI's IR of it, removed after the module."""
    folder = tmp_path_factory.mktemp("frame")
    frame = folder / "frame.gguf"
    quantize(
        resolve_bundled("qwen2.5-coder-0.5b-instruct"),
        frame,
        ftype=Q4_0,
        pure=True,
        embedding_type=GGML_TYPE_Q8_0,
    )
    (folder / "ir").mkdir()
    save_ir(frame, folder / "ir")
    yield frame, folder / "ir" / IR_NAME
    shutil.rmtree(folder, ignore_errors=True)


def test_every_4_bit_weight_of_the_frame_is_put_back(qwen_frame: tuple[Path, Path], tmp_path: Path) -> None:
    import openvino as ov

    frame, frame_ir = qwen_frame
    in_frame = _frame_weights(ov.Core().read_model(str(frame_ir)))
    four_bit = [weight for weight in in_frame if weight.bits == 4]
    assert len(four_bit) == 24 * 7 + 1  # each layer's 7 projections and the output layer

    counts = save_with_own_blocks(
        frame_ir, resolve_bundled("qwen2.5-coder-0.5b-instruct"), frame, tmp_path / IR_NAME
    )

    assert sum(counts.values()) == len(four_bit)
    assert set(counts) <= PUT_BACK | {"Q8_0"} and counts["Q8_0"] > 0  # Q6_K and Q8_0 tensors requantized
    put_back = _frame_weights(ov.Core().read_model(str(tmp_path / IR_NAME)))
    assert len([weight for weight in put_back if weight.bits == 4]) < len(four_bit)  # only Q4_K stays 4-bit


def test_a_frame_of_another_file_stops_the_build(qwen_frame: tuple[Path, Path], tmp_path: Path) -> None:
    frame, frame_ir = qwen_frame
    with pytest.raises(RuntimeError, match="frame"):
        save_with_own_blocks(frame_ir, resolve_bundled("smollm2-135m-instruct"), frame, tmp_path / IR_NAME)
    assert not (tmp_path / IR_NAME).exists()


COMPRESSED = ("<Type: 'int4_t'>", "<Type: 'int8_t'>", "<Type: 'uint4_t'>")


def _feeds_a_matmul(node: Any) -> bool:
    """Whether `node`'s output reaches a MatMul through the decompression's own nodes."""
    for target in node.output(0).get_target_inputs():
        user = target.get_node()
        if user.get_type_name() == "MatMul":
            return True
        if user.get_type_name() in ("Multiply", "Reshape", "Convert") and _feeds_a_matmul(user):
            return True
    return False


def _weight_constants(xml: Path) -> dict[str, int]:
    """How many compressed weight Constants of each element type the IR holds, and how many
    zero points (a Subtract of a converted u4 or u8 Constant) the MatMuls' weights subtract
    (the token embedding's Gather keeps the frame's Q8_0, zero point 128)."""
    import openvino as ov

    found: dict[str, int] = {}
    for node in ov.Core().read_model(str(xml)).get_ordered_ops():
        kind = str(node.get_output_element_type(0))
        if node.get_type_name() == "Constant" and kind in COMPRESSED:
            found[kind] = found.get(kind, 0) + 1
        if node.get_type_name() == "Subtract" and _feeds_a_matmul(node):
            subtrahend = node.input_value(1).get_node()
            if subtrahend.get_type_name() == "Convert":
                points = subtrahend.input_value(0).get_node()
                if points.get_type_name() == "Constant" and points.get_output_element_type(0).bitwidth <= 8:
                    found["zero points"] = found.get("zero points", 0) + 1
    return found


def _prompt_logits(gguf: Path, xml: Path) -> np.ndarray:
    """Every position's logits for one prompt, at plain f32 with an f32 KV cache."""
    model = OpenVinoPagedModel(
        gguf,
        ir=xml,
        context_length=1024,
        max_sequences=2,
        max_batch_tokens=128,
        precision="f32",
        kv_cache_precision="f32",
        num_blocks=8,
    )
    item = BatchItem(model.tokenize("def add(a, b):\n    return a + b\n\nprint(add(2, 3))", True), 0, [0])
    item.want_all_logits = True
    model.decode([item])
    assert item.row_logits is not None
    rows = np.array([row.copy() for row in item.row_logits])
    model.close()
    return rows


def test_without_zero_points_the_weights_compute_the_same(
    qwen_frame: tuple[Path, Path], tmp_path: Path
) -> None:
    """Q5_0 and Q8_0 as signed codes (code - the format's zero), Q4_K as its unsigned codes with
    the whole offset taken off the output: no zero point left, the same logits as the IR with
    integer zero points to within f16's rounding of the offsets."""
    frame, frame_ir = qwen_frame
    original = resolve_bundled("qwen2.5-coder-0.5b-instruct")
    with_points, without = tmp_path / "with" / IR_NAME, tmp_path / "without" / IR_NAME
    for xml in (with_points, without):
        xml.parent.mkdir()
    save_with_own_blocks(frame_ir, original, frame, with_points)
    save_with_own_blocks(frame_ir, original, frame, without, zero_points=False)

    assert _weight_constants(with_points).get("zero points", 0) >= 24 * 7
    constants = _weight_constants(without)
    assert "zero points" not in constants
    assert constants["<Type: 'int8_t'>"] > 0 and constants["<Type: 'uint4_t'>"] > 0  # Q5_0/Q8_0; Q4_K
    expected, got = _prompt_logits(original, with_points), _prompt_logits(original, without)
    assert np.abs(expected - got).max() < 0.05
    assert (expected.argmax(axis=-1) == got.argmax(axis=-1)).all()
