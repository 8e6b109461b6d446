"""`ONEDNN_MAX_CPU_ISA` keeps oneDNN (and OpenVINO's CPU plugin, and torch) below an ISA; what
we ask of the plugin must stay within it, or compiling fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from aios_serve import cpu_features
from aios_serve.backends.openvino_paged import precision
from tests.cpu import HAS_BF16, HAS_VNNI, cpu_flags


@pytest.mark.parametrize(
    ("limit", "int8_dot", "bf16"),
    [
        ("AVX2", False, False),
        ("avx512_core", False, False),
        ("AVX512_CORE_VNNI", HAS_VNNI, False),
        ("AVX512_CORE_BF16", HAS_VNNI, HAS_BF16),
        ("", HAS_VNNI, HAS_BF16),
    ],
)
def test_flags_above_the_limit_do_not_count(
    monkeypatch: pytest.MonkeyPatch, limit: str, int8_dot: bool, bf16: bool
) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    assert cpu_features.has_int8_dot_product() == int8_dot
    assert cpu_features.has_native_bf16() == bf16
    assert precision.compute("auto", batch_invariant=False) == ("f32", int8_dot)
    assert precision.resolve("bf16") == ("bf16" if bf16 else "f32")
    assert cpu_features.reported_flags().endswith(f"ONEDNN_MAX_CPU_ISA={limit.upper()}" if limit else "")


SCRIPT = textwrap.dedent(
    """
    from aios_serve.backends.openvino_paged import OpenVinoPagedModel, paged_ir, precision
    from aios_serve.backends.protocols.generation import BatchItem
    from aios_serve.models.bundled import resolve_bundled

    path = resolve_bundled("smollm2-135m-instruct")
    compiled_at, quantized = precision.compute("auto", batch_invariant=False)
    model = OpenVinoPagedModel(path, ir=paged_ir(path)[0], context_length=512, max_sequences=2,
                               max_batch_tokens=256, n_threads=2, precision=compiled_at,
                               num_blocks=16, dynamic_quantization=quantized)
    tokens = model.tokenize("The capital of France is", True)
    item = BatchItem(tokens, 0, [0])
    for _ in range(8):
        model.decode([item])
        tokens.append(int(item.logits.argmax()))
        item = BatchItem(tokens[-1:], len(tokens) - 1, [0])
    print(model.describe("auto"))
    print(tokens[-8:])
    """
)


@pytest.mark.skipif(not cpu_flags(), reason="no /proc/cpuinfo flags")
def test_the_default_engine_runs_below_vnni() -> None:
    """As on a CPU without VNNI (Zen 3): on one with it, oneDNN kept to AVX2 refused the
    plugin's int8-activation MatMuls until we stopped asking for them there."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    details, generated = run.stdout.strip().splitlines()[-2:]
    assert details.startswith("precision f32 (asked auto; CPU ")
    assert "ONEDNN_MAX_CPU_ISA=AVX2), KV " in details
    assert len(generated.strip("[]").split(",")) == 8
