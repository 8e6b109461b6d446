"""In-process encoder backends, no HTTP: torch fp32, torch bf16 and onnxruntime fp32 on MiniLM.

`.venv/bin/python benchmarks/encoders/bench_backends.py` times `embed()` on one batch of
`--batch` sentences of exactly `--tokens` tokens ([CLS] and [SEP] included) and prints the median
sentences/s of `--repeats` passes per backend, plus each backend's worst cosine to torch fp32.
`--json PATH` also writes the rows (bench_encoders.py reads them for its table).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aios_serve.backends.onnx_encoder import OnnxEncoderBackend
from aios_serve.backends.protocols.encoder import EncodedInput, EncoderBackend
from aios_serve.backends.torch_encoder import TorchEncoderBackend
from aios_serve.models.bundled import resolve_bundled


def fixed_length_batch(backend: EncoderBackend, count: int, tokens: int, seed: int) -> list[EncodedInput]:
    """`count` sentences of single-token words, each exactly `tokens` tokens long."""
    vocab = backend.tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w.islower() and len(w) >= 3)
    rng = random.Random(seed)
    inner = tokens - backend.tokenizer.num_special_tokens_to_add(pair=False)
    texts = [" ".join(rng.choice(words) for _ in range(inner)) for _ in range(count)]
    batch = [EncodedInput(ids) for ids in backend.tokenizer(texts)["input_ids"]]
    assert all(len(item) == tokens for item in batch), "a word split into several tokens"
    return batch


def sentences_per_s(backend: EncoderBackend, batch: list[EncodedInput], repeats: int) -> list[float]:
    backend.embed(batch)  # warm this shape
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend.embed(batch)
        rates.append(len(batch) / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=52)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = resolve_bundled("all-minilm-l6-v2")
    threads = os.cpu_count() or 1
    loaders: dict[str, Callable[[], EncoderBackend]] = {
        "torch fp32": lambda: TorchEncoderBackend(folder, False, dtype="float32", threads=threads),
        "torch bf16": lambda: TorchEncoderBackend(folder, False, dtype="bfloat16", threads=threads),
        "onnxruntime fp32": lambda: OnnxEncoderBackend(folder, False, threads=threads),
    }
    rows: list[dict[str, object]] = []
    reference: np.ndarray | None = None
    print(f"{folder}: batch {args.batch} x {args.tokens} tokens, {threads} threads, {args.repeats} passes")
    for name, load in loaders.items():
        backend = load()
        batch = fixed_length_batch(backend, args.batch, args.tokens, args.seed)
        vectors = backend.embed(batch)
        reference = vectors if reference is None else reference
        cosine = float(np.sum(vectors * reference, axis=1).min())
        rates = sentences_per_s(backend, batch, args.repeats)
        median = statistics.median(rates)
        rows.append(
            {
                "backend": name,
                "batch": args.batch,
                "tokens": args.tokens,
                "sentences_per_s": median,
                "runs": rates,
                "min_cosine_to_fp32": cosine,
            }
        )
        print(
            f"  {name:<17} {median:7.1f} sent/s (runs {', '.join(f'{r:.1f}' for r in rates)}); "
            f"min cosine to torch fp32 {cosine:.6f}",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"batch": args.batch, "tokens": args.tokens, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
