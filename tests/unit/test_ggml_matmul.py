"""ggml's kernels inside OpenVINO (backends/openvino_paged/native/ggml_matmul.cpp): a GgmlMatMul
node multiplies by a GGUF tensor's own blocks as gguf-py decodes them, each row on its own, and
by the same blocks in this CPU's interleaved layout as by the plain ones; the paged model built
with them decodes as the one built with OpenVINO's kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino_genai")

from aios_serve.backends.openvino_paged import OpenVinoPagedModel
from aios_serve.backends.openvino_paged.ggml_ir import _op_class, holds_ggml_matmuls
from aios_serve.backends.openvino_paged.ggml_kernels import library
from aios_serve.backends.openvino_paged.ggml_layouts import repacked, signature
from aios_serve.backends.openvino_paged.weights import paged_ir
from aios_serve.backends.protocols.generation import BatchItem
from aios_serve.engine.generation.options import GenerationOptions
from aios_serve.models.bundled import resolve_bundled

PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


@pytest.fixture(scope="module")
def native() -> Path:
    built = library()
    assert built is not None, "the native operation did not build (see the log)"
    return built


def _tensor(model: str, type_name: str) -> Any:
    from gguf import GGUFReader

    reader = GGUFReader(resolve_bundled(model))
    return next(t for t in reader.tensors if t.tensor_type.name == type_name and t.name.startswith("blk."))


def _blocks(tensor: Any) -> np.ndarray:
    rows = int(tensor.shape[1])
    return np.ascontiguousarray(np.asarray(tensor.data).view(np.uint8).reshape(rows, -1))


def _compiled(native: Path, tensor: Any, folder: Path, blocks: np.ndarray | None = None) -> Any:
    """One GgmlMatMul of the tensor's blocks, or of `blocks` in this CPU's layout for them."""
    import openvino as ov
    import openvino.opset13 as ops

    columns, rows = (int(d) for d in tensor.shape)
    packed = blocks is not None
    blocks = _blocks(tensor) if blocks is None else blocks
    x = ops.parameter([-1, -1, columns], ov.Type.f32, name="x")
    node = _op_class()(
        [x.output(0), ops.constant(blocks).output(0)], int(tensor.tensor_type), rows, columns, int(packed)
    )
    ov.save_model(ov.Model([node.output(0)], [x]), str(folder / "one.xml"), compress_to_fp16=False)
    core = ov.Core()
    core.add_extension(str(native))
    model = core.read_model(str(folder / "one.xml"))
    return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "ENABLE_CPU_PINNING": False})


@pytest.mark.parametrize(
    ("model", "type_name"),
    [
        ("smollm2-135m-instruct", "Q4_1"),
        ("qwen2.5-coder-0.5b-instruct", "Q4_K"),
        ("qwen2.5-coder-0.5b-instruct", "Q6_K"),
        ("qwen2.5-coder-0.5b-instruct", "Q5_0"),
        ("qwen2.5-coder-0.5b-instruct", "Q8_0"),
    ],
)
def test_a_ggml_matmul_multiplies_by_the_files_blocks(
    native: Path, model: str, type_name: str, tmp_path: Path
) -> None:
    from gguf.quants import dequantize

    tensor = _tensor(model, type_name)
    columns, rows = (int(d) for d in tensor.shape)
    weight = dequantize(tensor.data, tensor.tensor_type).reshape(rows, columns)
    x = np.random.default_rng(0).standard_normal((1, 9, columns)).astype(np.float32)  # a run of 7, then 2
    request = _compiled(native, tensor, tmp_path).create_infer_request()

    batched = request.infer({0: x})[0].copy()
    alone = [request.infer({0: x[:, row : row + 1]})[0].copy() for row in (2, 8)]

    expected = x @ weight.T
    assert batched.shape == (1, 9, rows)
    # ggml rounds each activation row to 8 bits per block, as llama.cpp does: within 2% of the
    # largest output, where a wrong row, block or type is off by the whole output's scale
    assert np.abs(batched - expected).max() < 0.02 * np.abs(expected).max()
    for row, result in zip((2, 8), alone, strict=True):  # a row's result does not depend on the others
        assert np.array_equal(result[0, 0], batched[0, row])


def test_repacked_blocks_multiply_as_the_plain_ones(native: Path, tmp_path: Path) -> None:
    tensor = _tensor("qwen2.5-coder-0.5b-instruct", "Q4_K")
    packed = repacked("Q4_K", _blocks(tensor))
    # every x86-64 CPU the project runs on has AVX2, where ggml interleaves Q4_K in 8-row groups
    assert packed is not None and signature(["Q4_K"]) != "plain"
    assert packed.shape == _blocks(tensor).shape and not np.array_equal(packed, _blocks(tensor))
    assert repacked("Q4_1", _blocks(_tensor("smollm2-135m-instruct", "Q4_1"))) is None  # none for Q4_1
    columns = int(tensor.shape[0])
    x = np.random.default_rng(1).standard_normal((1, 16, columns)).astype(np.float32)
    plain = _compiled(native, tensor, tmp_path).create_infer_request()
    (tmp_path / "packed").mkdir()
    interleaved = _compiled(native, tensor, tmp_path / "packed", packed).create_infer_request()

    for rows in (1, 3, 16):  # the one-row kernel, a run with a remainder, whole 4-row groups
        expected = plain.infer({0: x[:, :rows]})[0].copy()
        found = interleaved.infer({0: x[:, :rows]})[0].copy()
        # the same 8-bit activation blocks, summed in another order
        assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()


def test_ggml_kernels_with_a_rewrite_are_a_configuration_error() -> None:
    import pydantic

    assert GenerationOptions(matmul_kernels="ggml").weights_type == "gguf"
    assert GenerationOptions(matmul_kernels="auto", weights_type="q8_0").matmul_kernels == "auto"
    for kernels in ("ggml", "both"):
        for rewrite in ("q8_0", "f16"):
            with pytest.raises(pydantic.ValidationError, match=f"{kernels} .*drop weights_type: {rewrite}"):
                GenerationOptions(matmul_kernels=kernels, weights_type=rewrite)


# SmolLM2's Q4_1 has no interleaved layout; Qwen's Q4_K is repacked
@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_the_model_on_ggml_kernels_decodes_as_on_openvinos(native: Path, model: str) -> None:
    gguf = resolve_bundled(model)
    ggml_ir, route = paged_ir(gguf, "gguf", zero_points=False, ggml=True)
    assert holds_ggml_matmuls(ggml_ir) and route == "own blocks in ggml's kernels"
    own_ir, _ = paged_ir(gguf, "gguf", zero_points=False)
    assert not holds_ggml_matmuls(own_ir)

    runs = []
    for xml in (ggml_ir, own_ir):
        paged = OpenVinoPagedModel(
            gguf, ir=xml, context_length=1024, max_sequences=2, max_batch_tokens=128, num_blocks=16
        )
        prompt = paged.tokenize(PROMPT, True)
        item = BatchItem(prompt, 0, [0])
        paged.decode([item])
        assert item.logits is not None
        rows, tokens = [item.logits.copy()], [int(np.argmax(item.logits))]
        for position in range(len(prompt), len(prompt) + 8):
            step = BatchItem(tokens[-1:], position, [0])
            paged.decode([step])
            assert step.logits is not None
            rows.append(step.logits.copy())
            tokens.append(int(np.argmax(step.logits)))
        runs.append((paged.describe(), np.array(rows), tokens))
        paged.close()

    (ggml_described, ggml_logits, ggml_tokens), (own_described, own_logits, own_tokens) = runs
    assert "matmuls ggml's" in ggml_described and "ggml" not in own_described
    assert ggml_tokens == own_tokens
    # 8-bit activation blocks against f32 activations: 1.13 (SmolLM2) and 0.60 (Qwen, before its
    # Q4_K was repacked) at most on this prompt (2-core Zen 3)
    assert np.abs(ggml_logits - own_logits).max() < 2.0
