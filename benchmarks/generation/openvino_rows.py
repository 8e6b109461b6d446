"""One decode step of M sequences together (after a 100-token prompt they share), for each IR of
one GGUF given, in turns: where ggml's kernels (`matmul_kernels: ggml`) and OpenVINO's part.

    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_rows.py FILE.gguf A.xml [B.xml ...] \\
        [--rows 1,2,4,6,8,12,16] [--rounds 3]

An IR with GgmlMatMul nodes loads the native library (ggml_kernels.library()); the IRs live in
$AIOS_CACHE_DIR/openvino-ir (`*.ggml-blocks-v2-*`, `*.own-blocks-v6-no-zero-points-*`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from servers import machine

from aios_serve.backends.openvino_paged import OpenVinoPagedModel
from aios_serve.backends.protocols.generation import BatchItem

PROMPT = list(range(1000, 1100))


def step_ms(model: OpenVinoPagedModel, rows: int) -> float:
    """One step of `rows` sequences, each a copy of sequence 0 (the prompt) taking one token."""
    seq_ids = range(100, 100 + rows)
    for seq_id in seq_ids:
        model.copy_sequence(0, seq_id)
    started = time.perf_counter()
    model.decode([BatchItem([1234 + seq_id], len(PROMPT), [seq_id]) for seq_id in seq_ids])
    elapsed = time.perf_counter() - started
    for seq_id in seq_ids:
        model.remove_sequence(seq_id)
    return elapsed * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gguf", type=Path)
    parser.add_argument("irs", type=Path, nargs="+")
    parser.add_argument(
        "--rows", type=lambda v: [int(r) for r in v.split(",")], default=[1, 2, 4, 6, 8, 12, 16]
    )
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    print(machine())
    models = {}
    for xml in options.irs:
        models[xml] = OpenVinoPagedModel(
            options.gguf, ir=xml, context_length=4096, max_sequences=128, max_batch_tokens=512
        )
        models[xml].decode([BatchItem(PROMPT, 0, [0])])
    times: dict[tuple[Path, int], list[float]] = {}
    for _ in range(options.rounds):
        for rows in options.rows:
            for xml, model in models.items():
                times.setdefault((xml, rows), []).append(step_ms(model, rows))
    for xml, model in models.items():
        medians = ", ".join(f"M={rows} {statistics.median(times[xml, rows]):.0f}" for rows in options.rows)
        print(f"{xml.parent.name}: {model.describe()}\n  step ms, median of {options.rounds}: {medians}")


if __name__ == "__main__":
    main()
