"""One sequence's decode step on each `matmul_kernels` setting of the openvino engine, in turns
in one process (no HTTP): `ggml` (ggml's kernels alone), `both` (ggml's below 4 rows over
OpenVINO's model's KV cache) and `openvino`. All are loaded at once, each gets the same 100-token
prompt, then `--steps` decode steps run in turns (the order reversed every step); medians in ms.
f32 with int8 activations where the CPU has VNNI, plain f32 elsewhere (precision.py).

    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_kernels_step.py MODEL [--steps 60]

MODEL is a bundled model's name or a .gguf file.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from servers import machine

from aios_serve.backends.openvino_paged import OpenVinoPagedModel
from aios_serve.backends.openvino_paged.ggml_kernels import library
from aios_serve.backends.openvino_paged.precision import compute, zero_points
from aios_serve.backends.openvino_paged.weights import paged_ir
from aios_serve.backends.protocols.generation import BatchItem
from aios_serve.models.bundled import resolve_bundled

PROMPT = list(range(100, 200))


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gguf = Path(args.model) if args.model.endswith(".gguf") else Path(resolve_bundled(args.model))
    precision, quantized = compute("auto", batch_invariant=False)
    points = zero_points(precision, quantized)
    own, ggml = paged_ir(gguf, "gguf", points)[0], paged_ir(gguf, "gguf", points, ggml=True)[0]
    common = {
        "context_length": 2048,
        "max_sequences": 4,
        "max_batch_tokens": 512,
        "n_threads": args.threads,
        "precision": precision,
        "dynamic_quantization": quantized,
        "ggml_library": library(),
    }
    models = {
        "ggml": OpenVinoPagedModel(gguf, ir=ggml, **common),
        "both": OpenVinoPagedModel(gguf, ir=own, few_rows_ir=ggml, **common),
        "openvino": OpenVinoPagedModel(gguf, ir=own, **{**common, "ggml_library": None}),
    }
    for model in models.values():
        model.decode([BatchItem(PROMPT, 0, [0])])
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(args.steps):
        order = list(models.items())
        for name, model in order if step % 2 else reversed(order):
            started = time.perf_counter()
            model.decode([BatchItem([5], len(PROMPT) + step, [0])])
            times[name].append(time.perf_counter() - started)
    print(f"{machine()}; {gguf.name}; {precision}, int8 activations: {quantized}; {args.steps} steps")
    for name, seconds in times.items():
        print(f"{name}: {1000 * statistics.median(seconds):.2f} ms a step (median)")


if __name__ == "__main__":
    main()
