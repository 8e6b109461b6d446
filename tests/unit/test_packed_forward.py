"""Packed (padding-free) BERT forward passes give what transformers' padded forward gives: the
torch backend driven directly (the served embeddings and rerank: tests/e2e/test_packed_encoder.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aios_serve.backends.packed_bert import PackedBatch, bucketed_token_count
from aios_serve.backends.protocols.encoder import EncodedInput
from aios_serve.backends.torch_encoder import TorchEncoderBackend
from aios_serve.models.bundled import resolve_bundled
from tests.texts import mixed_texts
from tests.tiny_models import build_roberta_encoder


@pytest.fixture(scope="module")
def minilm() -> Path:
    return resolve_bundled("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def fp32_backends(minilm: Path) -> tuple[TorchEncoderBackend, TorchEncoderBackend]:
    packed = TorchEncoderBackend(minilm, cross_encoder=False, dtype="float32")
    padded = TorchEncoderBackend(minilm, cross_encoder=False, dtype="float32", packed=False)
    assert packed.packs_sequences and not padded.packs_sequences
    return packed, padded


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_every_pooling_matches_the_padded_forward(
    fp32_backends: tuple[TorchEncoderBackend, TorchEncoderBackend], pooling: str
) -> None:
    packed, padded = fp32_backends
    batch = [
        EncodedInput(ids) for ids in packed.tokenizer(mixed_texts(30, seed=2), truncation=True)["input_ids"]
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
    queries, documents = mixed_texts(12, seed=3), mixed_texts(12, seed=4)
    encoded = packed.tokenizer(
        queries, documents, truncation=True, max_length=128, return_token_type_ids=True
    )
    pairs = [
        EncodedInput(ids, types)
        for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"], strict=True)
    ]
    assert any(1 in item.token_type_ids for item in pairs if item.token_type_ids)
    np.testing.assert_allclose(packed.score(pairs), padded.score(pairs), atol=1e-6)


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


def test_packed_token_counts_come_in_few_sizes() -> None:
    """Every packed batch is padded to one of a few dozen sizes (issue 27: one per batch grew the
    heap and the kernel caches), wasting at most an eighth of its tokens above 256."""
    sizes = {count: bucketed_token_count(count) for count in range(1, 8193)}
    assert len(set(sizes.values())) <= 48
    assert all(count <= size for count, size in sizes.items())
    assert all(size - count <= max(31, count // 8) for count, size in sizes.items())
    batch = PackedBatch.of([EncodedInput([101, 7, 102]), EncodedInput([101, 8, 9, 102])])
    assert batch.real_tokens == 7 and batch.input_ids.shape == (32,)
    assert batch.starts.tolist() == [0, 3, 7] and not batch.input_ids[7:].any()
