"""A tensor requantized to Q8_0 (models/ggml_quants.py) holds the bytes llama.cpp's own quantizer
writes for it, on the bundled Qwen file's tensors of each type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType

from aios_serve.models import ggml_quants
from aios_serve.models.bundled import resolve_bundled
from aios_serve.models.ggml_quants import GGML_TYPE_Q8_0, q8_0_bytes, requantized_q8_0
from aios_serve.models.gguf_header import tensors
from aios_serve.models.gguf_rewrite import Q8_0, quantize


@pytest.mark.parametrize("values_at_a_time", [ggml_quants.VALUES_AT_A_TIME, 7 * 896])
def test_requantized_tensors_are_llama_cpps_q8_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values_at_a_time: int
) -> None:
    """At the default budget or 7 rows at a time (the last chunk shorter), the bytes are llama.cpp's."""
    monkeypatch.setattr(ggml_quants, "VALUES_AT_A_TIME", values_at_a_time)
    original = resolve_bundled("qwen2.5-coder-0.5b-instruct")
    rewrite = tmp_path / "q8_0.gguf"
    quantize(original, rewrite, ftype=Q8_0, pure=True)
    rewritten = {tensor.name: tensor for tensor in tensors(rewrite)}
    first_of_type = {}
    for tensor in tensors(original):
        if len(tensor.shape) == 2:
            first_of_type.setdefault(GGMLQuantizationType(tensor.type_id).name, tensor)
    assert set(first_of_type) >= {"Q4_K", "Q5_0", "Q6_K", "Q8_0"}
    for type_name, tensor in first_of_type.items():
        cols, rows = tensor.shape
        assert rewritten[tensor.name].type_id == GGML_TYPE_Q8_0
        expected = np.asarray(rewritten[tensor.name].data).reshape(rows, -1)
        got = requantized_q8_0(tensor.data, tensor.type_id, rows, cols)
        np.testing.assert_array_equal(got, expected, err_msg=type_name)


def test_q8_0_refuses_rows_that_are_not_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        q8_0_bytes(np.zeros((2, 48), np.float32))
