"""Packed (padding-free) BERT forward passes give what transformers' padded forward gives."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from aios_serve.backends.encoder_base import EncodedInput
from aios_serve.backends.torch_encoder import TorchEncoderBackend
from aios_serve.models.bundled import resolve_bundled
from tests.conftest import CROSS_ENCODER, EMBEDDING_FP32
from tests.servers import running_server, write_config
from tests.tiny_models import build_roberta_encoder


def _mixed_texts(count: int, seed: int, longest: int = 250) -> list[str]:
    """Texts of 1 to `longest` words, so a batch spans many attention groups."""
    rng = random.Random(seed)
    words = ["river", "stone", "light", "market", "garden", "music", "paper", "window", "winter"]
    sizes = [size for size in (1, 3, 20, 50, 90, 250) if size <= longest]
    return [" ".join(rng.choice(words) for _ in range(rng.choice(sizes))) for _ in range(count)]


@pytest.fixture(scope="module")
def minilm() -> Path:
    return resolve_bundled("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def fp32_backends(minilm: Path) -> tuple[TorchEncoderBackend, TorchEncoderBackend]:
    packed = TorchEncoderBackend(minilm, cross_encoder=False, dtype="float32")
    padded = TorchEncoderBackend(minilm, cross_encoder=False, dtype="float32", packed=False)
    assert packed.packs_sequences and not padded.packs_sequences
    return packed, padded


def test_server_embeddings_match_sentence_transformers_across_lengths(encoder_url: str, minilm: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = _mixed_texts(24, seed=1)
    client = openai.OpenAI(base_url=f"{encoder_url}/v1", api_key="unused")
    response = client.embeddings.create(model=EMBEDDING_FP32, input=texts)
    served = np.array([item.embedding for item in response.data])
    reference = SentenceTransformer(str(minilm), device="cpu").encode(texts, normalize_embeddings=True)
    cosines = np.sum(served * reference, axis=1)
    assert cosines.min() >= 0.99999, cosines


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_every_pooling_matches_the_padded_forward(
    fp32_backends: tuple[TorchEncoderBackend, TorchEncoderBackend], pooling: str
) -> None:
    packed, padded = fp32_backends
    batch = [
        EncodedInput(ids) for ids in packed.tokenizer(_mixed_texts(30, seed=2), truncation=True)["input_ids"]
    ]
    assert len({len(item) for item in batch}) >= 5
    packed.pooling = padded.pooling = pooling  # type: ignore[assignment]
    try:
        np.testing.assert_allclose(packed.embed(batch), padded.embed(batch), atol=1e-5)
    finally:
        packed.pooling = padded.pooling = "mean"


def test_cross_encoder_pairs_match_the_padded_forward(cross_encoder_dir: Path) -> None:
    packed = TorchEncoderBackend(cross_encoder_dir, cross_encoder=True, dtype="float32")
    padded = TorchEncoderBackend(cross_encoder_dir, cross_encoder=True, dtype="float32", packed=False)
    assert packed.packs_sequences
    queries, documents = _mixed_texts(12, seed=3), _mixed_texts(12, seed=4)
    encoded = packed.tokenizer(
        queries, documents, truncation=True, max_length=128, return_token_type_ids=True
    )
    pairs = [
        EncodedInput(ids, types)
        for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"], strict=True)
    ]
    assert any(1 in item.token_type_ids for item in pairs if item.token_type_ids)
    np.testing.assert_allclose(packed.score(pairs), padded.score(pairs), atol=1e-6)


def test_rerank_served_packed_equals_rerank_served_padded(
    tmp_path: Path, cross_encoder_dir: Path, encoder_url: str
) -> None:
    """The shared server runs the cross-encoder packed; a second one runs it padded."""
    config = write_config(
        tmp_path,
        [
            {
                "name": CROSS_ENCODER,
                "kind": "cross-encoder",
                "path": str(cross_encoder_dir),
                "options": {"dtype": "float32", "packed": False},
            }
        ],
    )
    body = {"model": CROSS_ENCODER, "query": "which river", "documents": _mixed_texts(10, seed=5, longest=90)}
    packed = httpx.post(f"{encoder_url}/v1/rerank", json=body, timeout=60).json()["results"]
    with running_server(config, tmp_path / "server.log") as url:
        padded = httpx.post(f"{url}/v1/rerank", json=body, timeout=60).json()["results"]
    assert [r["index"] for r in packed] == [r["index"] for r in padded]
    np.testing.assert_allclose(
        [r["relevance_score"] for r in packed], [r["relevance_score"] for r in padded], atol=1e-6
    )


def test_other_architectures_run_padded(tmp_path: Path) -> None:
    """A model this module does not know (RoBERTa here) loads and runs transformers' own forward."""
    folder = build_roberta_encoder(tmp_path / "tiny-roberta")
    backend = TorchEncoderBackend(folder, cross_encoder=False, dtype="float32", max_model_len=60)
    assert not backend.packs_sequences
    vectors = backend.embed(
        [EncodedInput(ids) for ids in backend.tokenizer(["a short one", "and another text"])["input_ids"]]
    )
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
