"""Tensors read by ggml's GGUF reader are the ones gguf-py's reader finds, tensor by tensor (name,
type, shape, bytes), and a file ggml cannot read is reported, not taken for an empty one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import quantize

from aios_serve.models.bundled import resolve_bundled
from aios_serve.models.gguf_header import tensor_type_ids, tensor_type_names, tensors
from aios_serve.models.gguf_rewrite import holds_any, holds_only

WRITTEN = [
    ("a.weight", GGMLQuantizationType.F32),
    ("b.weight", GGMLQuantizationType.Q8_0),
    ("c.weight", GGMLQuantizationType.F16),
    ("d.weight", GGMLQuantizationType.Q4_0),
]


def _write(path: Path) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_array("tokenizer.ggml.tokens", [f"token{i}" for i in range(5000)])
    values = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    for name, kind in WRITTEN:
        if kind == GGMLQuantizationType.F32:
            writer.add_tensor(name, values)
        elif kind == GGMLQuantizationType.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, quantize(values, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_written_file_gives_each_tensor_its_type(tmp_path: Path) -> None:
    path = _write(tmp_path / "written.gguf")
    assert tensor_type_ids(path) == [int(kind) for _, kind in WRITTEN]
    assert [(t.name, t.type_id, t.shape) for t in tensors(path)] == [
        (name, kind, (64, 4)) for name, kind in WRITTEN
    ]
    assert tensor_type_names(path) == {"F32", "Q8_0", "F16", "Q4_0"}
    assert holds_only(path, frozenset({"F32", "F16", "Q8_0", "Q4_0"}))
    assert not holds_only(path, frozenset({"F32", "F16", "Q8_0"}))
    assert holds_any(path, frozenset({"Q4_0"})) and not holds_any(path, frozenset({"Q4_K"}))


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_bundled_files_read_as_gguf_py_reads_them(model: str) -> None:
    path = resolve_bundled(model)
    expected = GGUFReader(str(path)).tensors
    assert tensor_type_ids(path) == [int(tensor.tensor_type) for tensor in expected]
    found = tensors(path)
    assert [(t.name, t.type_id, t.shape) for t in found] == [
        (t.name, int(t.tensor_type), tuple(int(n) for n in t.shape)) for t in expected
    ]
    for ours, theirs in zip(found, expected, strict=True):
        assert np.array_equal(ours.data, np.asarray(theirs.data).reshape(-1).view(np.uint8)), ours.name


def test_an_unreadable_file_is_an_error_and_holds_nothing(tmp_path: Path) -> None:
    whole = _write(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:200])  # inside the vocabulary array
    text = tmp_path / "text.gguf"
    text.write_text("not a model\n")
    short = tmp_path / "short.gguf"
    short.write_bytes(whole[:-40])  # into the last tensor's bytes (past its padding to 32)
    for path in (cut, text, tmp_path / "missing.gguf", short):
        with pytest.raises(OSError):
            tensors(path)
    for path in (cut, text, tmp_path / "missing.gguf"):
        with pytest.raises(OSError):
            tensor_type_ids(path)
    for path in (cut, text):
        assert not holds_any(path, frozenset({"F32"}))
        assert not holds_only(path, frozenset({"F32", "F16", "Q8_0", "Q4_0"}))
