"""The encoders' dtype: `auto` is bf16 where the CPU has native bf16, else fp32 (the served
precision against fp32: tests/e2e/test_precision.py)."""

from __future__ import annotations

import torch

from aios_serve.backends.torch_encoder import resolve_dtype
from tests.cpu import NATIVE_BF16


def test_auto_dtype_follows_the_cpu_flags() -> None:
    assert resolve_dtype("auto") == (torch.bfloat16 if NATIVE_BF16 else torch.float32)
    assert resolve_dtype("float32") == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
