"""What the CPU offers, read from /proc/cpuinfo's flags (empty where there is none), within the
limit `ONEDNN_MAX_CPU_ISA` sets where it is set: oneDNN, and with it OpenVINO's CPU plugin and
torch, then uses no instructions above it, so the flags above it do not count."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""Flags of CPUs that compute in bf16 natively (AVX-512 BF16, AMX)."""
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni")
"""Flags of CPUs with 8-bit integer dot products (VNNI, AVX-512 or AVX), which the CPU plugin's
int8 activations need: oneDNN has no such kernel for AVX2 alone (Zen 3)."""
REPORTED_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The flags that decide kernels and precisions, in the order logs show them."""
ISA_LIMIT = "ONEDNN_MAX_CPU_ISA"
LIMITS_WITHOUT_INT8_DOT = frozenset({"SSE41", "AVX", "AVX2", "AVX512_CORE"})
"""`ONEDNN_MAX_CPU_ISA` values below every VNNI ISA (oneDNN's names, e.g. AVX2_VNNI or
AVX512_CORE_VNNI, and those above, allow it)."""
LIMITS_WITHOUT_BF16 = LIMITS_WITHOUT_INT8_DOT | {"AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE_VNNI"}
"""`ONEDNN_MAX_CPU_ISA` values below AVX512_CORE_BF16, oneDNN's first ISA that computes in bf16."""


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


def isa_limit() -> str:
    """`ONEDNN_MAX_CPU_ISA` (or its older name `DNNL_MAX_CPU_ISA`) as set, upper case, or empty."""
    return (os.environ.get(ISA_LIMIT) or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()


def has_native_bf16() -> bool:
    """True where the CPU has AVX-512 BF16 or AMX BF16, and oneDNN may use it."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS) and isa_limit() not in LIMITS_WITHOUT_BF16


def has_vnni() -> bool:
    """True where the CPU has VNNI, whatever oneDNN is limited to."""
    return any(flag in cpu_flags() for flag in INT8_DOT_FLAGS)


def has_int8_dot_product() -> bool:
    """True where the CPU has VNNI, and oneDNN may use it."""
    return has_vnni() and isa_limit() not in LIMITS_WITHOUT_INT8_DOT


def reported_flags() -> str:
    """The deciding flags this CPU has, space-separated (`none` if it has none of them), and the
    limit where one is set."""
    present = [flag for flag in REPORTED_FLAGS if flag in cpu_flags()]
    limit = [f"{ISA_LIMIT}={isa_limit()}"] if isa_limit() else []
    return " ".join(present + limit) or "none"
