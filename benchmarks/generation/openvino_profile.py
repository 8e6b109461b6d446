"""Where one decode step of the openvino engine's model goes: the CPU plugin's own counters
(PERF_COUNT) per node type and kernel, and the slowest nodes, for one sequence decoding after
a 100-token prompt.

    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_profile.py FILE.gguf \\
        [--precision f32] [--int8-activations] [--steps 10]

The counters are each node's own time; the plugin runs some nodes in parallel, so their sum can
exceed the step's wall time. The shares between node types are what to read.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from pathlib import Path
from typing import Any

from openvino_footprint import chosen_zero_points
from servers import machine

from aios_serve.backends.openvino_paged import OpenVinoPagedModel, paged_ir
from aios_serve.backends.protocols.generation import BatchItem


def _counting(compile_model: Any) -> Any:
    def compile_with_counters(
        core: Any, model: Any, device: str, config: dict[str, Any] | None = None
    ) -> Any:
        return compile_model(core, model, device, {**(config or {}), "PERF_COUNT": True})

    return compile_with_counters


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    parser.add_argument("--int8-activations", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--zero-points", default="auto", choices=["auto", "on", "off"], help="own blocks' IR form"
    )
    options = parser.parse_args()
    import openvino as ov

    ov.Core.compile_model = _counting(ov.Core.compile_model)  # type: ignore[method-assign]
    chosen = chosen_zero_points(options.zero_points, options.precision, options.int8_activations)
    ir, route = paged_ir(options.gguf, "gguf", chosen)
    model = OpenVinoPagedModel(
        options.gguf,
        ir=ir,
        context_length=4096,
        max_sequences=4,
        max_batch_tokens=512,
        precision=options.precision,
        dynamic_quantization=options.int8_activations,
    )
    print(machine())
    print(f"{options.gguf.name}: {route}, {model.describe()}")
    prompt = list(range(1000, 1100))
    model.decode([BatchItem(prompt, 0, [0])])
    by_kind: collections.Counter[tuple[str, str]] = collections.Counter()
    by_node: collections.Counter[str] = collections.Counter()
    walls = []
    for position in range(len(prompt), len(prompt) + options.steps):
        started = time.perf_counter()
        model.decode([BatchItem([1234], position, [0])])
        walls.append(time.perf_counter() - started)
        for counter in model._request.profiling_info:
            microseconds = counter.real_time.total_seconds() * 1e6
            by_kind[(counter.node_type, counter.exec_type)] += microseconds
            by_node[f"{counter.node_name} ({counter.node_type})"] += microseconds
    total = sum(by_kind.values())
    print(f"step wall time, median of {options.steps}: {statistics.median(walls) * 1e3:.1f} ms")
    print(f"node time per step: {total / options.steps / 1e3:.1f} ms")
    for (kind, kernel), microseconds in by_kind.most_common(12):
        share = 100 * microseconds / total
        print(f"  {microseconds / options.steps / 1e3:8.2f} ms  {share:5.1f}%  {kind} [{kernel}]")
    print("slowest nodes:")
    for name, microseconds in by_node.most_common(5):
        print(f"  {microseconds / options.steps / 1e3:8.2f} ms  {name}")


if __name__ == "__main__":
    main()
