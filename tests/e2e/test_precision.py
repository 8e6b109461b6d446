"""Precision on a real server: the default (bf16 where the CPU has native bf16) is within 0.9999
cosine of fp32 and keeps nearest neighbours (the dtype choice itself: tests/unit/test_precision.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.cpu import NATIVE_BF16
from tests.e2e.configs import EMBEDDING, EMBEDDING_FP32
from tests.e2e.server import Server


def _corpus() -> list[str]:
    rng = random.Random(7)
    words = ["the", "a", "river", "stone", "light", "market", "garden", "music", "paper", "window", "of"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 150))) for _ in range(24)]


def test_default_precision_is_within_cosine_of_fp32(encoder: Server) -> None:
    client = encoder.client()
    texts = _corpus()

    def vectors(model: str) -> np.ndarray:
        response = client.embeddings.create(model=model, input=texts)
        return np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)])

    default, fp32 = vectors(EMBEDDING), vectors(EMBEDDING_FP32)
    cosines = np.sum(default * fp32, axis=1) / (
        np.linalg.norm(default, axis=1) * np.linalg.norm(fp32, axis=1)
    )
    assert cosines.min() >= 0.9999, cosines
    if NATIVE_BF16:  # the default really ran in bf16: the vectors are close, not identical
        assert np.abs(default - fp32).max() > 1e-4
    else:
        np.testing.assert_allclose(default, fp32, atol=1e-5)


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_bf16_keeps_nearest_neighbours(encoder: Server) -> None:
    client = encoder.client()
    texts = _corpus()
    queries = texts[:6]

    def top5(model: str) -> list[set[int]]:
        rows = client.embeddings.create(model=model, input=texts + queries).data
        matrix = np.array([row.embedding for row in sorted(rows, key=lambda d: d.index)])
        docs, asked = matrix[: len(texts)], matrix[len(texts) :]
        return [set(np.argsort(-docs @ q)[:5].tolist()) for q in asked]

    overlap = np.mean([len(a & b) / 5 for a, b in zip(top5(EMBEDDING), top5(EMBEDDING_FP32), strict=True)])
    assert overlap >= 0.9, overlap
