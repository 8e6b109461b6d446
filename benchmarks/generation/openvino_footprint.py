"""The openvino engine's backend alone on any GGUF: load time, memory, and one sequence's decode
step, per precision (no engine loop, no server).

Per `--precision`, in a fresh process each (so one's memory does not count in the other's): the
backend loads (building the Q8_0 rewrite and IR first if they are not cached), prefills a
~110-token prompt, then decodes `--steps` greedy tokens one at a time. Printed: the route, load
seconds, RSS after load and after decoding split into anonymous memory and mapped files (the IR's
weights are mapped; clean file pages are reclaimable), peak RSS, and milliseconds per step.

    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_footprint.py FILE.gguf \\
        --precision f32 bf16 [--weights-type f16|gguf] [--zero-points on off --rounds 2]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

from servers import machine, status_mib

from aios_serve.backends.openvino_paged import OpenVinoPagedModel, paged_ir
from aios_serve.backends.openvino_paged import precision as precisions
from aios_serve.backends.protocols.generation import BatchItem


def memory_mib() -> str:
    fields = status_mib()
    return f"RSS {fields['VmRSS']:.0f} MiB (anonymous {fields['RssAnon']:.0f}, files {fields['RssFile']:.0f})"


def chosen_zero_points(choice: str, precision: str, int8_activations: bool) -> bool:
    """The `--zero-points` option (on, off, or auto: as the engine chooses for `precision` and
    `int8_activations`) as `paged_ir`'s `zero_points`."""
    if choice == "auto":
        return precisions.zero_points(precision, int8_activations)
    return choice == "on"


def measure(
    gguf: Path, precision: str, weights_type: str, steps: int, kv_cache_gb: int, zero_points: str
) -> None:
    """Load, then time `steps` decode steps of one sequence; `zero_points` on, off or auto."""
    ir, route = paged_ir(gguf, weights_type, chosen_zero_points(zero_points, precision, False))
    started = time.perf_counter()
    model = OpenVinoPagedModel(
        gguf,
        ir=ir,
        context_length=2048,
        max_sequences=16,
        max_batch_tokens=512,
        n_threads=2,
        precision=precision,
        kv_cache_gb=kv_cache_gb,
    )
    loaded = time.perf_counter() - started
    ir_mib = ir.with_suffix(".bin").stat().st_size / 2**20
    print(f"{gguf.name} {precision}: {route} (IR weights {ir_mib:.0f} MiB), {model.describe()}")
    print(f"  loaded in {loaded:.1f} s: {memory_mib()}")
    item = BatchItem(model.tokenize("Tell me a story about the sea and a lighthouse. " * 10, True), 0, [0])
    model.decode([item])
    started = time.perf_counter()
    for _ in range(steps):
        assert item.logits is not None
        item = BatchItem([int(item.logits.argmax())], item.start_pos + len(item.tokens), [0])
        model.decode([item])
    step_ms = (time.perf_counter() - started) / steps * 1e3
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  {steps} decode steps: {step_ms:.1f} ms each; {memory_mib()}; peak RSS {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--precision", nargs="+", default=["f32", "bf16"], choices=["f32", "bf16"])
    parser.add_argument("--weights-type", choices=["gguf", "q8_0", "f16"], default="gguf")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--kv-cache-gb", type=int, default=1)
    parser.add_argument(
        "--zero-points",
        nargs="+",
        default=["auto"],
        choices=["auto", "on", "off"],
        help="own blocks' IR form",
    )
    parser.add_argument("--rounds", type=int, default=1, help="each setting this many times, in turns")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child's run
    args = parser.parse_args()
    if args.one:
        measure(
            args.gguf, args.precision[0], args.weights_type, args.steps, args.kv_cache_gb, args.zero_points[0]
        )
        return
    print(f"machine: {machine()}")
    for _ in range(args.rounds):
        for precision in args.precision:
            for zero_points in args.zero_points:
                child = [sys.executable, __file__, str(args.gguf), "--one", "--precision", precision]
                child += ["--weights-type", args.weights_type, "--steps", str(args.steps)]
                child += ["--kv-cache-gb", str(args.kv_cache_gb), "--zero-points", zero_points]
                subprocess.run(child, check=True)


if __name__ == "__main__":
    main()
