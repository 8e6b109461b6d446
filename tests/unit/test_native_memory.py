"""The server's native memory settings: what it sets in its own process, and what the environment keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aios_serve.config import ServerConfig
from aios_serve.native_memory import KERNEL_CACHE_VARIABLES, MemoryConfig

APPLY = """
import json
from aios_serve.native_memory import MemoryConfig, apply_native_memory
print(json.dumps(apply_native_memory(MemoryConfig(**json.loads({config!r})))))
"""


def applied_in_child(config: dict[str, int], env: dict[str, str]) -> dict[str, str]:
    """apply_native_memory's answer in a fresh interpreter (it changes the process it runs in)."""
    clean = {k: v for k, v in os.environ.items() if k not in (*KERNEL_CACHE_VARIABLES, "MALLOC_ARENA_MAX")}
    clean.pop("MALLOC_MMAP_THRESHOLD_", None)
    script = APPLY.format(config=json.dumps(config))
    output = subprocess.run(
        [sys.executable, "-c", script], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(output))


def test_defaults_bound_the_kernel_caches_and_fix_the_mmap_threshold() -> None:
    assert ServerConfig.model_fields["memory"].default_factory is MemoryConfig
    applied = applied_in_child({}, {})
    assert applied["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    assert applied["LRU_CACHE_CAPACITY"] == "64"
    if sys.platform.startswith("linux") and os.path.exists("/lib/x86_64-linux-gnu/libc.so.6"):
        assert applied["MALLOC_MMAP_THRESHOLD_"] == str(128 * 1024)  # mallopt answered 1
        assert applied["MALLOC_ARENA_MAX"] == "2"


def test_config_values_are_applied() -> None:
    applied = applied_in_child({"kernel_cache_capacity": 8, "malloc_mmap_threshold_bytes": 0}, {})
    assert applied["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    assert "MALLOC_MMAP_THRESHOLD_" not in applied  # 0 leaves glibc's sliding threshold


def test_the_environment_wins() -> None:
    applied = applied_in_child({}, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "512", "MALLOC_ARENA_MAX": "4"})
    assert applied["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512 (environment)"
    assert applied["LRU_CACHE_CAPACITY"] == "64"
    if "MALLOC_ARENA_MAX" in applied:
        assert applied["MALLOC_ARENA_MAX"] == "4 (environment)"


def test_negative_bounds_are_rejected() -> None:
    with pytest.raises(ValueError):
        MemoryConfig(kernel_cache_capacity=-1)
