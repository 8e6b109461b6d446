"""Choose explicit x86-64 ISA flags for the llama.cpp build from this CPU's feature flags.

`-march=native` is never used: on GCC 12 it turns on llama.cpp's AMX code, which faults on
Sapphire Rapids. This prints either the wheel-cache key or the CMAKE_ARGS for that key.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

# Always off: AMX (miscompiled tile configs under GCC 12) and AVX-VNNI (Zen 4 lacks it).
ALWAYS_OFF = ("AVX_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16")
COMMON = ("-DGGML_NATIVE=OFF", "-DGGML_OPENMP=OFF", "-DGGML_BACKEND_DL=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF")

# Each tier: the /proc/cpuinfo flags it needs, and the ggml options it turns on.
AVX2_NEEDS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2")
AVX2_ON = ("SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2")
AVX512_NEEDS = (
    *AVX2_NEEDS,
    "avx512f",
    "avx512cd",
    "avx512vl",
    "avx512dq",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512vbmi",
)
AVX512_ON = (*AVX2_ON, "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16")
ALL_OPTIONS = (*AVX512_ON, *ALWAYS_OFF)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags of the first processor listed in cpuinfo."""
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


TIERS: dict[str, tuple[str, ...]] = {
    "avx512-vnni-bf16-vbmi": AVX512_ON,
    "avx2": AVX2_ON,
    "sse42": ("SSE42",),
}
OVERRIDE_ENV = "AIOS_LLAMA_ISA"


def choose_tier(flags: set[str]) -> tuple[str, tuple[str, ...]]:
    """The widest tier whose every flag this CPU has (or $AIOS_LLAMA_ISA): (name, options on)."""
    forced = os.environ.get(OVERRIDE_ENV)
    if forced:
        if forced not in TIERS:
            raise SystemExit(f"{OVERRIDE_ENV}={forced!r}: choose one of {', '.join(TIERS)}")
        return forced, TIERS[forced]
    if all(f in flags for f in AVX512_NEEDS):
        return "avx512-vnni-bf16-vbmi", AVX512_ON
    if all(f in flags for f in AVX2_NEEDS):
        return "avx2", AVX2_ON
    return "sse42", TIERS["sse42"]


def cmake_args(enabled: tuple[str, ...]) -> list[str]:
    """Every ISA option set explicitly, so nothing is left to the compiler's defaults."""
    isa = [f"-DGGML_{name}={'ON' if name in enabled else 'OFF'}" for name in ALL_OPTIONS]
    return [*COMMON, *isa]


def cache_key(tier: str, args: list[str]) -> str:
    """Wheel-cache key: the tier's name and a hash of the exact flag set."""
    digest = hashlib.sha256(" ".join(args).encode()).hexdigest()[:8]
    return f"{tier}-{digest}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["key", "cmake-args", "describe"])
    parser.add_argument("--cpuinfo", type=Path, default=Path("/proc/cpuinfo"))
    options = parser.parse_args()
    tier, enabled = choose_tier(cpu_flags(options.cpuinfo))
    args = cmake_args(enabled)
    if options.what == "key":
        print(cache_key(tier, args))
    elif options.what == "cmake-args":
        print(" ".join(args))
    else:
        print(f"llama.cpp ISA tier {tier}: {' '.join(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
