"""The own-blocks IR puts back every MatMul weight of its Q4_0 frame, and a frame that is not
the file's stops the build rather than serve the frame's 4-bit weights."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("openvino_genai")

from aios_serve.backends.openvino_paged.exact_ir import PUT_BACK, _frame_weights, save_with_own_blocks
from aios_serve.backends.openvino_paged.ir import IR_NAME, save_ir
from aios_serve.models.bundled import resolve_bundled
from aios_serve.models.ggml_quants import GGML_TYPE_Q8_0
from aios_serve.models.gguf_rewrite import Q4_0, quantize


@pytest.fixture(scope="module")
def qwen_frame(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The bundled Qwen file's frame and GenAI's IR of it."""
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
    return frame, folder / "ir" / IR_NAME


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
