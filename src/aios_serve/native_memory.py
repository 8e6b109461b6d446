"""Native memory settings the server applies to its own process before any model loads.

Unbounded batch shapes made two things grow with the number of shapes seen rather than with the
load (issue 27; benchmarks/load/README.md has the measurements). Packed encoder batches now come
in bucketed sizes (backends/packed_bert.py), which bounds both; what is set here lowers the level:

- glibc's heap keeps what the forward passes free (activations come from the heap once glibc's
  mmap threshold has slid up to their size), a few hundred MiB of free pages under load. A thread
  returns them with malloc_trim every few seconds, so an idle server shrinks back. A fixed mmap
  threshold keeps the heap small under load too, but maps and faults in every large activation
  anew: 28% (float32) to 38% (bfloat16) fewer encoder batches.
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
import threading
import time

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
    malloc_mmap_threshold_bytes: int = Field(default=0, ge=0)
    """Blocks at least this large are mapped on their own and returned when freed; 0 keeps glibc's
    sliding threshold (faster: large activations are reused from the heap rather than mapped)."""
    malloc_trim_interval_seconds: float = Field(default=5.0, ge=0)
    """How often a thread hands the heap's free pages back to the system (malloc_trim); 0 never."""
    kernel_cache_capacity: int = Field(default=64, ge=0)
    """Compiled kernels oneDNN (and ideep) keep, each; 0 compiles one for every call."""


def linux_libc() -> ctypes.CDLL | None:
    """The process's C library on Linux (glibc's soname); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc
        return None


def _glibc() -> ctypes.CDLL | None:
    libc = linux_libc()
    return libc if libc is not None and hasattr(libc, "mallopt") else None


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
    if config.malloc_trim_interval_seconds > 0:
        _start_trimming(libc, config.malloc_trim_interval_seconds)
        applied["malloc_trim"] = f"every {config.malloc_trim_interval_seconds:g} s"
    return applied


def _start_trimming(libc: ctypes.CDLL, interval: float) -> threading.Thread:
    """A daemon thread that calls malloc_trim(0) every `interval` seconds for the process's life."""

    def trim_forever() -> None:
        while True:
            time.sleep(interval)
            started = time.perf_counter()
            libc.malloc_trim(0)
            log.debug("malloc_trim took %.1f ms", (time.perf_counter() - started) * 1e3)

    thread = threading.Thread(target=trim_forever, name="malloc-trim", daemon=True)
    thread.start()
    return thread


def configure_process(config: MemoryConfig) -> None:
    """apply_native_memory, logged."""
    applied = apply_native_memory(config)
    log.info("native memory: %s", ", ".join(f"{k}={v}" for k, v in applied.items()) or "unchanged")
