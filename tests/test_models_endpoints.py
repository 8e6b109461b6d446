"""`/v1/models`, `/health`, `/version` and the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.conftest import CROSS_ENCODER, EMBEDDING, EMBEDDING_ALIAS, EMBEDDING_FP32


def test_models_list_shape(encoder_url: str) -> None:
    body = httpx.get(f"{encoder_url}/v1/models").json()
    assert body["object"] == "list"
    by_id = {card["id"]: card for card in body["data"]}
    assert set(by_id) == {EMBEDDING, EMBEDDING_ALIAS, EMBEDDING_FP32, CROSS_ENCODER}
    assert by_id[EMBEDDING]["capabilities"] == ["embeddings", "rerank", "score"]
    assert by_id[CROSS_ENCODER]["capabilities"] == ["rerank", "score"]
    assert by_id[EMBEDDING]["max_model_len"] == 256
    assert by_id[EMBEDDING_ALIAS]["root"] == EMBEDDING
    assert all(card["object"] == "model" and isinstance(card["created"], int) for card in body["data"])


def test_health_and_version(encoder_url: str) -> None:
    assert httpx.get(f"{encoder_url}/health").status_code == 200
    assert httpx.get(f"{encoder_url}/version").json()["version"]


def test_openapi_describes_the_embedding_api(encoder_url: str) -> None:
    paths = httpx.get(f"{encoder_url}/openapi.json").json()["paths"]
    assert "/v1/embeddings" in paths and "/v1/embedding" in paths


def test_unknown_path_and_method_use_the_error_shape(encoder_url: str) -> None:
    missing = httpx.get(f"{encoder_url}/v1/nothing-here")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    wrong_method = httpx.get(f"{encoder_url}/v1/embeddings")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
