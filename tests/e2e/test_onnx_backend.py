"""The ONNX Runtime encoder backend on a real server: same answers as torch fp32, exported once and
reused (its load errors: tests/unit/test_onnx_encoder.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from aios_serve.backends import onnx_export
from aios_serve.backends.onnx_encoder import OnnxEncoderBackend
from aios_serve.backends.protocols.encoder import EncodedInput
from tests.e2e.configs import cross_encoder, minilm
from tests.e2e.server import Server

TORCH_FP32, ONNX = "minilm-torch-fp32", "minilm-onnx"
CROSS_TORCH, CROSS_ONNX = "cross-torch", "cross-onnx"
TEXTS = [
    "hi",
    "The quick brown fox jumps over the lazy dog.",
    "Padding matters: " + "a long sentence about rivers, stones and markets " * 12,
    "ONNX Runtime",
    "Short but not tiny, with some punctuation; and numbers 1, 2, 3.",
]
QUERY = "Where do rivers meet the sea?"
DOCUMENTS = ["Rivers end in estuaries by the sea.", "A recipe for bread.", "Deltas form at river mouths " * 8]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_url(
    tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path, onnx_cache: Path
) -> Iterator[str]:
    """MiniLM and the tiny cross-encoder, each on torch fp32 and on ONNX Runtime (fresh cache)."""
    models = [
        minilm(TORCH_FP32, dtype="float32"),
        minilm(ONNX, backend="onnx"),
        cross_encoder(CROSS_TORCH, cross_encoder_dir, dtype="float32"),
        cross_encoder(CROSS_ONNX, cross_encoder_dir, backend="onnx", threads=1),
    ]
    env = {"AIOS_CACHE_DIR": str(onnx_cache)}
    with Server(tmp_path_factory.mktemp("onnx-server"), models, env=env) as server:
        yield server.url


def _vectors(client: openai.OpenAI, model: str) -> np.ndarray:
    response = client.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    return np.array([item.embedding for item in response.data], dtype=np.float32)


def test_onnx_embeddings_match_torch_fp32(onnx_url: str) -> None:
    client = openai.OpenAI(base_url=f"{onnx_url}/v1", api_key="unused")
    reference, got = _vectors(client, TORCH_FP32), _vectors(client, ONNX)
    cosines = np.sum(reference * got, axis=1)
    assert cosines.min() >= 0.99999, cosines
    # One input alone (no padding) gives the same vector as inside the mixed-length batch.
    alone = client.embeddings.create(model=ONNX, input=TEXTS[2], encoding_format="float").data[0].embedding
    assert float(np.dot(alone, got[2])) >= 0.99999


def test_onnx_rerank_and_score_match_torch(onnx_url: str) -> None:
    for torch_model, onnx_model in ((CROSS_TORCH, CROSS_ONNX), (TORCH_FP32, ONNX)):
        results = {}
        for model in (torch_model, onnx_model):
            body = {"model": model, "query": QUERY, "documents": DOCUMENTS}
            response = httpx.post(f"{onnx_url}/v1/rerank", json=body, timeout=60)
            assert response.status_code == 200, response.text
            results[model] = response.json()["results"]
        expected, got = results[torch_model], results[onnx_model]
        assert [r["index"] for r in got] == [r["index"] for r in expected]
        np.testing.assert_allclose(
            [r["relevance_score"] for r in got], [r["relevance_score"] for r in expected], atol=1e-5
        )
    scores = {}
    for model in (CROSS_TORCH, CROSS_ONNX):
        body = {"model": model, "text_1": QUERY, "text_2": DOCUMENTS}
        response = httpx.post(f"{onnx_url}/score", json=body, timeout=60)
        assert response.status_code == 200, response.text
        scores[model] = [item["score"] for item in response.json()["data"]]
    np.testing.assert_allclose(scores[CROSS_ONNX], scores[CROSS_TORCH], atol=1e-5)


def test_export_is_cached_and_reused(
    onnx_url: str, onnx_cache: Path, cross_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = sorted((onnx_cache / "onnx").glob("*/model.onnx"))
    assert len(exports) == 2, exports  # MiniLM and the cross-encoder, no leftover staging folders
    assert len(list((onnx_cache / "onnx").iterdir())) == 2

    def no_second_export(*args: object) -> None:
        raise AssertionError("exported again although the cache holds the export")

    monkeypatch.setenv("AIOS_CACHE_DIR", str(onnx_cache))
    monkeypatch.setattr(onnx_export, "_export", no_second_export)
    backend = OnnxEncoderBackend(cross_encoder_dir, cross_encoder=True, threads=1)
    assert backend.onnx_path in exports
    pair = backend.tokenizer(QUERY, DOCUMENTS[0])
    scores = backend.score([EncodedInput(pair["input_ids"], pair["token_type_ids"])])
    assert scores.shape == (1,) and 0.0 < float(scores[0]) < 1.0


def test_shipped_model_onnx_is_used(
    onnx_url: str, onnx_cache: Path, cross_encoder_dir: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(cross_encoder_dir, tmp_path / "with-onnx")
    (folder / "onnx").mkdir()
    exports = (onnx_cache / "onnx").glob("*/model.onnx")
    cached = next(p for p in exports if str(cross_encoder_dir) in (p.parent / "source.txt").read_text())
    shutil.copy(cached, folder / "onnx" / "model.onnx")
    backend = OnnxEncoderBackend(folder, cross_encoder=True, threads=1)
    assert backend.onnx_path == folder / "onnx" / "model.onnx"
