"""Whether two IRs of one GGUF compute the same function: each compiled at f32 without int8
activations, KV cache f32, a prompt's logits at every position and then 8 greedy steps'.

    PYTHONPATH=src .venv/bin/python benchmarks/generation/openvino_same_logits.py FILE.gguf A.xml B.xml
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from aios_serve.backends.openvino_paged import OpenVinoPagedModel
from aios_serve.backends.protocols.generation import BatchItem

PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


def logits(gguf: Path, xml: Path, steps: int = 8) -> tuple[np.ndarray, list[int]]:
    model = OpenVinoPagedModel(
        gguf,
        ir=xml,
        context_length=2048,
        max_sequences=4,
        max_batch_tokens=256,
        precision="f32",
        dynamic_quantization=False,
        kv_cache_precision="f32",
        num_blocks=64,
    )
    prompt = model.tokenize(PROMPT, True)
    item = BatchItem(prompt, 0, [0], want_all_logits=True)
    model.decode([item])
    assert item.row_logits is not None
    rows = [row.copy() for row in item.row_logits]
    tokens = [int(np.argmax(rows[-1]))]
    for position in range(len(prompt), len(prompt) + steps):
        step = BatchItem(tokens[-1:], position, [0])
        model.decode([step])
        assert step.logits is not None
        rows.append(step.logits.copy())
        tokens.append(int(np.argmax(step.logits)))
    model.close()
    return np.array(rows), tokens


def main() -> None:
    gguf, first, second = (Path(argument) for argument in sys.argv[1:4])
    (a, tokens_a), (b, tokens_b) = logits(gguf, first), logits(gguf, second)
    largest, same = float(np.abs(a - b).max()), tokens_a == tokens_b
    print(f"{gguf.name}: {len(a)} rows of logits, max |Δ| {largest}; greedy tokens equal: {same}")


if __name__ == "__main__":
    main()
