"""What the test machine's CPU offers (read from /proc/cpuinfo)."""

from __future__ import annotations

from pathlib import Path


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


NATIVE_BF16 = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
"""Whether the CPU computes in bf16 natively (where the encoders' `auto` dtype takes bf16)."""

AUTO_OPENVINO_PRECISION = "f32"
"""What the OpenVINO engine's `inference_precision: auto` must compile to on this CPU (every CPU
class alike: f32, activations quantized to int8 per group of 32)."""
AUTO_OPENVINO_COMPUTE = "f32, int8 activations per 32"
"""How the engine's details describe `auto`'s computation."""
