"""Packed (padding-free) BERT forward passes, served: what sentence-transformers gives, and what a
server running the model padded gives (the backends themselves: tests/unit/test_packed_forward.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from aios_serve.models.bundled import resolve_bundled
from tests.e2e.configs import CROSS_ENCODER, EMBEDDING_FP32, cross_encoder
from tests.e2e.server import Server
from tests.texts import mixed_texts


@pytest.fixture(scope="module")
def minilm() -> Path:
    return resolve_bundled("all-minilm-l6-v2")


def test_server_embeddings_match_sentence_transformers_across_lengths(encoder: Server, minilm: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = mixed_texts(24, seed=1)
    client = encoder.client()
    response = client.embeddings.create(model=EMBEDDING_FP32, input=texts)
    served = np.array([item.embedding for item in response.data])
    reference = SentenceTransformer(str(minilm), device="cpu").encode(texts, normalize_embeddings=True)
    cosines = np.sum(served * reference, axis=1)
    assert cosines.min() >= 0.99999, cosines


def test_rerank_served_packed_equals_rerank_served_padded(
    tmp_path: Path, cross_encoder_dir: Path, encoder: Server
) -> None:
    """The shared server runs the cross-encoder packed; a second one runs it padded."""
    padded_model = cross_encoder(CROSS_ENCODER, cross_encoder_dir, dtype="float32", packed=False)
    body = {"model": CROSS_ENCODER, "query": "which river", "documents": mixed_texts(10, seed=5, longest=90)}
    packed = httpx.post(f"{encoder.url}/v1/rerank", json=body, timeout=60).json()["results"]
    with Server(tmp_path, [padded_model]) as server:
        padded = httpx.post(f"{server.url}/v1/rerank", json=body, timeout=60).json()["results"]
    assert [r["index"] for r in packed] == [r["index"] for r in padded]
    np.testing.assert_allclose(
        [r["relevance_score"] for r in packed], [r["relevance_score"] for r in padded], atol=1e-6
    )
