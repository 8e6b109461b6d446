"""What the CPU offers, read from /proc/cpuinfo's flags (empty where there is none)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""Flags of CPUs that compute in bf16 natively (AVX-512 BF16, AMX)."""
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The flags that decide kernels and precisions, in the order logs show them."""


@cache
def cpu_flags() -> frozenset[str]:
    """The first processor's flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_native_bf16() -> bool:
    """True where the CPU has AVX-512 BF16 or AMX BF16."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def reported_flags() -> str:
    """The deciding flags this CPU has, space-separated (`none` if it has none of them)."""
    present = [flag for flag in REPORTED_FLAGS if flag in cpu_flags()]
    return " ".join(present) or "none"
