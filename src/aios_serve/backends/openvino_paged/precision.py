"""The CPU plugin's inference precision for the paged model: what the `inference_precision`
option asks for and what this CPU gets. The compiled model reports what it became (graph.py).

Left alone, the plugin infers in bf16 wherever the CPU has AVX-512 BF16 or AMX, and in f32
elsewhere. bf16 keeps 8 bits of mantissa, so near-tied logits flip with the batch's shape and
batched greedy output no longer equals sequential. We therefore always pass the precision
explicitly and read it back.
"""

from __future__ import annotations

import logging

from aios_serve.cpu_features import cpu_flags, has_native_bf16, reported_flags

log = logging.getLogger("aios_serve.backends.openvino_paged")


def auto_precision(flags: frozenset[str]) -> str:
    """`auto`'s choice on a CPU with `flags`: bf16 where it has AMX, f32 elsewhere.

    Measured in process on a 2-core Sapphire Rapids (README, "Inference precision"): bf16 gave
    1.25-1.30x exact f32's aggregate at 16 streams on the bundled models and a 1.5B one, the
    same one-stream speed on the bundled models and 0.91x on the 1.5B. Without AMX (Zen 4's
    AVX-512 BF16, AVX2) nothing is measured on this backend, so the exact setting stays.
    """
    return "bf16" if "amx_bf16" in flags else "f32"


def resolve(option: str) -> str:
    """The precision to compile at, `f32` or `bf16`, for the option `auto`, `f32` or `bf16`.
    bf16 on a CPU without native bf16 falls back to f32 (the plugin would ignore it)."""
    if option == "auto":
        return auto_precision(cpu_flags())
    if option == "bf16" and not has_native_bf16():
        log.warning("inference_precision bf16 asked on a CPU without native bf16; using f32")
        return "f32"
    return option


def described(asked: str, compiled: str) -> str:
    """The precision as logs and the start-up banner show it, with the CPU's deciding flags."""
    return f"precision {compiled} (asked {asked}; CPU {reported_flags()})"
