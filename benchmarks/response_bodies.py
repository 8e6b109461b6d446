"""What building and serialising an embeddings response body costs per request (no model, no network).

Run: .venv/bin/python benchmarks/response_bodies.py
Prints, per shape, the median time of `EmbeddingServing.build_response` (the response models,
serialized by orjson) next to the same body built as plain dicts (how it was built before the
response models were used), measured alternately in one process so that both see the same load.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from aios_serve.api.common.context import RequestContext
from aios_serve.api.common.protocol import new_id, unix_now
from aios_serve.api.common.responses import json_response
from aios_serve.api.embeddings.protocol import EmbeddingRequest
from aios_serve.api.embeddings.serving import EmbeddingServing, encode_vector
from aios_serve.backends.protocols.encoder import EncodedInput
from aios_serve.engine.encoder import TokenizedTexts

SHAPES = [(1, 384, "float"), (32, 384, "float"), (32, 384, "base64")]
REPEATS = 21


def unit_vectors(count: int, dims: int) -> np.ndarray:
    """Random L2-normalised float32 rows, like the encoder's output."""
    vectors = np.random.default_rng(0).standard_normal((count, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def dict_body(request: EmbeddingRequest, work: TokenizedTexts, vectors: np.ndarray) -> bytes:
    """The reference: the body as hand-built dicts, numpy rows passed to orjson."""
    body = {
        "id": new_id("embd"),
        "object": "list",
        "created": unix_now(),
        "model": request.model,
        "data": [
            {"index": i, "object": "embedding", "embedding": encode_vector(row, request.encoding_format)}
            for i, row in enumerate(vectors)
        ],
        "usage": {
            "prompt_tokens": work.token_count,
            "total_tokens": work.token_count,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
        },
    }
    return bytes(json_response(body).body)


def medians_us(count: int, dims: int, encoding_format: str) -> tuple[float, float, int]:
    """Median microseconds per body (response models, hand-built dicts) and the body's size."""
    serving = EmbeddingServing(cast(Any, None))  # build_response reads no registry
    request = EmbeddingRequest(model="m", input=["text"] * count, encoding_format=encoding_format)  # type: ignore[arg-type]
    work = TokenizedTexts([EncodedInput([101, 2000, 102])] * count)
    vectors = unit_vectors(count, dims)

    def with_models() -> bytes:
        response = serving.build_response(RequestContext("bench"), request, cast(Any, None), work, vectors)
        return bytes(response.body)

    def with_dicts() -> bytes:
        return dict_body(request, work, vectors)

    size = len(with_models())
    assert size == len(with_dicts()), "the two bodies differ"
    number = max(1, 2000 // count)
    times: dict[Callable[[], bytes], list[float]] = {with_models: [], with_dicts: []}
    for _ in range(REPEATS):
        for build, runs in times.items():
            runs.append(timeit.timeit(build, number=number) / number * 1e6)
    return statistics.median(times[with_models]), statistics.median(times[with_dicts]), size


def main() -> None:
    print("shape              models (us)  dicts (us)  body bytes")
    for count, dims, encoding_format in SHAPES:
        models, dicts, size = medians_us(count, dims, encoding_format)
        print(f"{count:>3} x {dims} {encoding_format:<7} {models:11.1f} {dicts:11.1f}  {size:10d}")


if __name__ == "__main__":
    main()
