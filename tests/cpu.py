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

AUTO_OPENVINO_PRECISION = "bf16" if "amx_bf16" in cpu_flags() else "f32"
"""What the OpenVINO engine's `inference_precision: auto` must compile to on this CPU."""
