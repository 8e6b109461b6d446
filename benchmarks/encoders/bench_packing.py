"""Our torch bf16 backend in process on the encoder bench's corpus: padded against packed
forward passes, and one pass of all threads against passes side by side of one thread each.

`.venv/bin/python benchmarks/encoders/bench_packing.py` embeds the 384 synthetic sentences of
`bench_encoders.py` (10 to 200 tokens, seed 0) in batches of `--batch` (26: about what the server
gathers at concurrency 32) and prints the median sentences/s of `--repeats` passes over the corpus.
Each layout runs on a quiet process and again beside a Python thread that is busy 1.3 ms out of
every 12.5 ms (about what the event loop spends on 80 single-text requests a second).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable

import torch
from bench_encoders import synthetic_corpus

from aios_serve.backends.length_groups import plan_length_groups
from aios_serve.backends.protocols.encoder import EncodedInput
from aios_serve.backends.torch_encoder import TorchEncoderBackend
from aios_serve.engine.encoder import EncoderOptions
from aios_serve.models.bundled import resolve_bundled

Batches = list[list[EncodedInput]]


def padded_passes(backend: TorchEncoderBackend, batches: Batches) -> None:
    """What the scheduler does for a padding backend: length-sorted micro-batches."""
    for batch in batches:
        for group in plan_length_groups([len(item) for item in batch], EncoderOptions().micro_batch_tokens):
            backend.embed([batch[index] for index in group])


def packed_passes(backend: TorchEncoderBackend, batches: Batches) -> None:
    for batch in batches:
        backend.embed(batch)


def side_by_side(backend: TorchEncoderBackend, batches: Batches, workers: int) -> None:
    """`workers` threads of one math thread each, taking batches in turn."""

    def work(share: Batches) -> None:
        torch.set_num_threads(1)
        packed_passes(backend, share)

    threads = [threading.Thread(target=work, args=(batches[index::workers],)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class BusyLoop:
    """A Python thread busy `busy_s` out of every `period_s`, like an event loop answering requests."""

    def __init__(self, busy_s: float = 0.0013, period_s: float = 0.0125) -> None:
        self.busy_s, self.period_s = busy_s, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            while time.perf_counter() - started < self.busy_s:
                sum(range(200))
            time.sleep(max(0.0, self.period_s - (time.perf_counter() - started)))

    def __enter__(self) -> BusyLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def rate(run: Callable[[], None], sentences: int, repeats: int) -> float:
    run()  # warm the shapes
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(sentences / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=26)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = resolve_bundled("all-minilm-l6-v2")
    cores = os.cpu_count() or 1
    texts = synthetic_corpus(folder, 384, 0)
    padded = TorchEncoderBackend(folder, False, dtype="bfloat16", threads=cores, packed=False)
    packed = TorchEncoderBackend(folder, False, dtype="bfloat16", threads=cores)
    items = [EncodedInput(ids) for ids in packed.tokenizer(texts)["input_ids"]]
    batches = [items[start : start + args.batch] for start in range(0, len(items), args.batch)]
    layouts: dict[str, Callable[[], None]] = {
        f"padded, 1 pass x {cores} threads": lambda: padded_passes(padded, batches),
        f"packed, 1 pass x {cores} threads": lambda: packed_passes(packed, batches),
        f"packed, {cores} passes x 1 thread": lambda: side_by_side(packed, batches, cores),
    }
    print(f"{len(items)} sentences of 10-200 tokens in batches of {args.batch}; torch bf16, {cores} cores")
    print("| layout | quiet, sent/s | beside a busy loop thread, sent/s |\n|---|---|---|")
    for name, run in layouts.items():
        torch.set_num_threads(cores)
        quiet = rate(run, len(items), args.repeats)
        with BusyLoop():
            busy = rate(run, len(items), args.repeats)
        print(f"| {name} | {quiet:.1f} | {busy:.1f} |", flush=True)


if __name__ == "__main__":
    main()
