"""Native memory settings the server applies to its own process before any model loads.

Packed encoder batches give almost every forward pass a new shape. Two things then grow with the
number of shapes seen rather than with the load (benchmarks/load/README.md has the measurements):

- glibc's heap: its mmap threshold rises to the size of each large block freed (up to 32 MiB), so
  activations of every new size are carved from the heap, and the heap keeps the freed space
  (mallinfo2: in use stays ~260 MiB while the heap passes 1.3 GiB). A fixed threshold stops the
  rise: blocks above it are mapped and unmapped on their own, and the heap stays small.
- oneDNN's primitive cache and ideep's computation cache keep a compiled kernel per shape, up to
  1024 each; bfloat16 linear layers add a matmul primitive per token count to both.

Environment variables set before start (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_,
ONEDNN_PRIMITIVE_CACHE_CAPACITY, LRU_CACHE_CAPACITY) win over the config.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("aios_serve.native_memory")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
M_ARENA_MAX = -8
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


class MemoryConfig(BaseModel):
    """The config's `memory` section: allocator and kernel-cache bounds for the whole process."""

    model_config = ConfigDict(extra="forbid")

    malloc_arenas: int = Field(default=2, ge=1)
    """glibc heaps: threads that allocate at once otherwise get their own (up to 8 per core), each
    keeping the memory its thread freed."""
    malloc_mmap_threshold_bytes: int = Field(default=128 * 1024, ge=0)
    """Blocks at least this large are mapped on their own and returned when freed; 0 keeps glibc's
    sliding threshold (which lets the heap grow with every new batch shape)."""
    kernel_cache_capacity: int = Field(default=64, ge=0)
    """Compiled kernels oneDNN (and ideep) keep, each; 0 compiles one for every call."""


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None
    return libc if hasattr(libc, "mallopt") else None


def apply_native_memory(config: MemoryConfig) -> dict[str, str]:
    """Apply the settings to this process; returns what is in effect, and from where.

    The kernel caches read their capacity when the first kernel is made, so this must run before
    any model loads (it does not import torch)."""
    applied: dict[str, str] = {}
    for name in KERNEL_CACHE_VARIABLES:
        if name in os.environ:
            applied[name] = f"{os.environ[name]} (environment)"
        else:
            os.environ[name] = str(config.kernel_cache_capacity)
            applied[name] = str(config.kernel_cache_capacity)
    libc = _glibc()
    if libc is None:
        return applied
    settings = (
        ("MALLOC_ARENA_MAX", M_ARENA_MAX, config.malloc_arenas),
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, config.malloc_mmap_threshold_bytes),
    )
    for variable, parameter, value in settings:
        if variable in os.environ:  # glibc read it at start-up
            applied[variable] = f"{os.environ[variable]} (environment)"
        elif value and libc.mallopt(parameter, value) == 1:
            applied[variable] = str(value)
    return applied


def configure_process(config: MemoryConfig) -> None:
    """apply_native_memory, logged."""
    applied = apply_native_memory(config)
    log.info("native memory: %s", ", ".join(f"{k}={v}" for k, v in applied.items()) or "unchanged")
