"""Where the encoder's memory goes: the torch backend's packed forward alone, no HTTP, no server.

Two threads share one backend, as the server's two forward workers do, and run batches shaped like
the load test's (many requests of 6-80 tokens merged: a new token count almost every batch). Every
5 s it prints RSS and glibc's view (mallinfo2): the heap, what of it is in use, what is free but
kept, and the separately mapped blocks. Run it with and without the server's settings:

    PYTHONPATH=src python benchmarks/load/forward_memory.py --seconds 40
    PYTHONPATH=src python benchmarks/load/forward_memory.py --seconds 40 --server-memory 5
    PYTHONPATH=src MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/load/forward_memory.py \\
        --seconds 40 --dtype bfloat16 --server-memory 0
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import threading
import time
from pathlib import Path

MIB = 1024 * 1024
MALLINFO2_FIELDS = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
)


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (*MALLINFO2_FIELDS, "keepcost")]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def heap_line(libc: ctypes.CDLL) -> str:
    """glibc's heap (all arenas), its bytes in use and free, and the mapped blocks."""
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return (
        f"heap={info.arena / MIB:6.0f} in_use={info.uordblks / MIB:6.0f} free={info.fordblks / MIB:6.0f} "
        f"mapped={info.hblkhd / MIB:5.0f} MiB in {info.hblks} blocks"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--padded", action="store_true", help="the padded forward instead of the packed one")
    parser.add_argument("--fixed", action="store_true", help="the same batch every time (the control)")
    parser.add_argument(
        "--server-memory",
        type=float,
        metavar="TRIM_S",
        default=None,
        help="apply the server's memory settings first (aios_serve.native_memory), trimming every TRIM_S",
    )
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    if args.server_memory is not None:
        from aios_serve.native_memory import MemoryConfig, apply_native_memory

        applied = apply_native_memory(MemoryConfig(malloc_trim_interval_seconds=args.server_memory))
        print("server memory settings:", applied, flush=True)

    import torch

    from aios_serve.backends.protocols.encoder import EncodedInput
    from aios_serve.backends.torch_encoder import TorchEncoderBackend
    from aios_serve.models.bundled import resolve_bundled

    backend = TorchEncoderBackend(
        resolve_bundled("all-minilm-l6-v2"), False, dtype=args.dtype, threads=1, packed=not args.padded
    )
    libc = ctypes.CDLL("libc.so.6")
    print(f"{backend.describe()}; rss={rss_mib():.0f} MiB", flush=True)
    deadline = time.monotonic() + args.seconds
    batches = [0]

    def worker(seed: int) -> None:
        torch.set_num_threads(1)
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            lengths = [30] * 20 if args.fixed else [rng.randint(6, 80) for _ in range(rng.randint(1, 120))]
            backend.embed(
                [EncodedInput([101] + [2000 + i % 50 for i in range(n - 2)] + [102]) for n in lengths]
            )
            batches[0] += 1

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(args.workers)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    while any(thread.is_alive() for thread in threads):
        time.sleep(5)
        elapsed = time.monotonic() - started
        print(
            f"t={elapsed:4.0f}s batches={batches[0]:5d} rss={rss_mib():6.0f} MiB {heap_line(libc)}",
            flush=True,
        )
    os._exit(0)  # skip interpreter teardown


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
