"""What ggml's interleaved layouts gain (backends/openvino_paged/ggml_layouts.py): one decode step
of M sequences on the ggml IR as built (weights in this CPU's layout where ggml has one) and on
the same IR with every weight's blocks left plain, each IR in a process of its own (never two
builds of the native operation in one process), in turns.

    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_layouts.py FILE.gguf \\
        [--rows 1,8,16] [--rounds 3]

The plain IR is built once under $AIOS_CACHE_DIR/bench/ (about the file's size; delete it after).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

from openvino_rows import PROMPT, step_ms
from servers import machine

from aios_serve.models.bundled import cache_dir


def _plain_ir(gguf: Path) -> Path:
    """The ggml IR of `gguf` with no weight repacked (made once)."""
    from aios_serve.backends.openvino_paged import weights
    from aios_serve.backends.openvino_paged.ggml_ir import save_with_ggml_matmuls
    from aios_serve.backends.openvino_paged.ir import IR_NAME

    folder = cache_dir() / "bench" / f"{gguf.stem}.{weights.GGML_BLOCKS_LABEL}-plain"  # per IR version
    if not (folder / IR_NAME).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        weights._from_frame(gguf, partial(save_with_ggml_matmuls, layouts=False))(folder)
    return folder / IR_NAME


def _steps(gguf: Path, xml: Path, rows: list[int]) -> dict[int, float]:
    """In this process: median ms of 5 steps of each M."""
    from aios_serve.backends.openvino_paged import OpenVinoPagedModel
    from aios_serve.backends.protocols.generation import BatchItem

    model = OpenVinoPagedModel(
        gguf, ir=xml, context_length=4096, max_sequences=max(rows) + 1, max_batch_tokens=512, precision="f32"
    )
    model.decode([BatchItem(PROMPT, 0, [0])])
    return {m: statistics.median(step_ms(model, m) for _ in range(5)) for m in rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--rows", default="1,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step", type=Path, help=argparse.SUPPRESS)  # a child: time this IR
    options = parser.parse_args()
    rows = [int(m) for m in options.rows.split(",")]
    if options.step is not None:
        print(json.dumps(_steps(options.gguf, options.step, rows)))
        return
    from aios_serve.backends.openvino_paged.weights import paged_ir

    irs = {
        "layout": paged_ir(options.gguf, "gguf", zero_points=False, ggml=True)[0],
        "plain": _plain_ir(options.gguf),
    }
    print(machine())
    print(f"{options.gguf.name}: {irs['layout'].parent.name} against the plain blocks")
    ratios: dict[int, list[float]] = {m: [] for m in rows}
    for round_number in range(1, options.rounds + 1):
        timed = {}
        for name, xml in irs.items():
            command = [
                sys.executable,
                __file__,
                str(options.gguf),
                "--rows",
                options.rows,
                "--step",
                str(xml),
            ]
            printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            timed[name] = {int(m): ms for m, ms in json.loads(printed.splitlines()[-1]).items()}
        for m in rows:
            ratios[m].append(timed["layout"][m] / timed["plain"][m])
        shown = ", ".join(f"M={m} {timed['layout'][m]:.0f} / {timed['plain'][m]:.0f}" for m in rows)
        print(f"round {round_number}, ms, layout / plain: {shown}", flush=True)
    print(
        "layout / plain, median of the rounds: "
        + ", ".join(f"M={m} {statistics.median(r):.2f}x" for m, r in ratios.items())
    )


if __name__ == "__main__":
    main()
