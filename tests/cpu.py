"""What the test machine's CPU offers (read from /proc/cpuinfo)."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


HAS_BF16 = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
HAS_VNNI = bool({"avx512_vnni", "avx_vnni"} & cpu_flags())
ISA_LIMIT = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
"""oneDNN's limit, where set: the flags above it do not count."""

LIMITS_WITHOUT_VNNI = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}
LIMITS_WITHOUT_BF16 = LIMITS_WITHOUT_VNNI | {"AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE_VNNI"}

NATIVE_BF16 = HAS_BF16 and ISA_LIMIT not in LIMITS_WITHOUT_BF16
"""Whether the CPU computes in bf16 natively (where the encoders' `auto` dtype takes bf16)."""

INT8_ACTIVATIONS = HAS_VNNI and ISA_LIMIT not in LIMITS_WITHOUT_VNNI
"""Whether the OpenVINO engine quantizes f32 activations to int8 here: where the CPU has VNNI and
ONEDNN_MAX_CPU_ISA, if set, leaves it to oneDNN."""
AUTO_OPENVINO_PRECISION = "f32"
"""What the OpenVINO engine's `inference_precision: auto` must compile to on this CPU (every CPU
class alike: f32, activations quantized to int8 per group of 32 where `INT8_ACTIVATIONS`)."""
AUTO_OPENVINO_COMPUTE = "f32, int8 activations per 32" if INT8_ACTIVATIONS else "f32"
"""How the engine's details describe `auto`'s computation."""
AUTO_OPENVINO_WEIGHTS = "own-blocks" if INT8_ACTIVATIONS else "own-blocks, no zero points"
"""How they name `auto`'s weights of a file whose every MatMul weight is put back as its own
blocks (SmolLM2's Q4_1): integer zero points kept for int8 activations, none for f32 ones."""
