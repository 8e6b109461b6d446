"""The Embedding API against a real server, through the openai client and raw httpx."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from aios_serve.models.bundled import resolve_bundled
from tests.e2e.configs import CROSS_ENCODER, EMBEDDING, EMBEDDING_ALIAS, EMBEDDING_FP32
from tests.e2e.server import Server

TEXTS = [
    "What is the capital of France?",
    "The capital of France is Paris.",
    "A completely unrelated sentence about gardening tools and soil.",
    "short",
]


@pytest.fixture(scope="module")
def reference_vectors() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_bundled("all-minilm-l6-v2")), device="cpu")
    return np.asarray(model.encode(TEXTS, normalize_embeddings=True))


def vectors_of(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    return np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)])


def test_float_response_shape(encoder_client: openai.OpenAI) -> None:
    response = encoder_client.embeddings.create(model=EMBEDDING, input=TEXTS, encoding_format="float")
    assert response.object == "list"
    assert response.model == EMBEDDING
    assert [item.index for item in response.data] == list(range(len(TEXTS)))
    assert all(item.object == "embedding" and len(item.embedding) == 384 for item in response.data)
    assert response.usage.prompt_tokens == response.usage.total_tokens > len(TEXTS) * 2


def test_vectors_are_normalized(encoder_client: openai.OpenAI) -> None:
    vectors = vectors_of(encoder_client.embeddings.create(model=EMBEDDING, input=TEXTS))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_fp32_matches_sentence_transformers(
    encoder_client: openai.OpenAI, reference_vectors: np.ndarray
) -> None:
    vectors = vectors_of(encoder_client.embeddings.create(model=EMBEDDING_FP32, input=TEXTS))
    cosines = np.sum(vectors * reference_vectors, axis=1)
    assert cosines.min() >= 0.99999, cosines


def test_default_precision_stays_close(encoder_client: openai.OpenAI, reference_vectors: np.ndarray) -> None:
    vectors = vectors_of(encoder_client.embeddings.create(model=EMBEDDING, input=TEXTS))
    cosines = np.sum(vectors * reference_vectors, axis=1)
    assert cosines.min() >= 0.9999, cosines


def test_base64_equals_float(encoder_client: openai.OpenAI) -> None:
    floats = vectors_of(encoder_client.embeddings.create(model=EMBEDDING_FP32, input=TEXTS))
    raw = httpx.post(
        f"{encoder_client.base_url}embeddings",
        json={"model": EMBEDDING_FP32, "input": TEXTS, "encoding_format": "base64"},
    ).json()
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw["data"]])
    np.testing.assert_allclose(decoded, floats, atol=1e-6)
    # With no encoding_format the client asks for base64 itself and decodes it.
    via_client = encoder_client.embeddings.create(model=EMBEDDING_FP32, input=TEXTS)
    np.testing.assert_allclose(vectors_of(via_client), floats, atol=1e-6)
    explicit = encoder_client.embeddings.create(model=EMBEDDING_FP32, input=TEXTS, encoding_format="base64")
    strings = [str(item.embedding) for item in explicit.data]
    decoded_by_hand = np.array([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in strings])
    np.testing.assert_allclose(decoded_by_hand, floats, atol=1e-6)


def test_text_alone_equals_text_in_batch(encoder_client: openai.OpenAI) -> None:
    batch = vectors_of(encoder_client.embeddings.create(model=EMBEDDING_FP32, input=TEXTS))
    for index, text in enumerate(TEXTS):
        alone = vectors_of(encoder_client.embeddings.create(model=EMBEDDING_FP32, input=text))[0]
        assert float(alone @ batch[index]) >= 0.99999


def test_alias_serves_same_weights(encoder_client: openai.OpenAI) -> None:
    direct = vectors_of(encoder_client.embeddings.create(model=EMBEDDING, input=TEXTS[0]))
    aliased = encoder_client.embeddings.create(model=EMBEDDING_ALIAS, input=TEXTS[0])
    assert aliased.model == EMBEDDING_ALIAS
    np.testing.assert_allclose(vectors_of(aliased), direct, atol=1e-6)


def test_token_id_inputs(encoder_client: openai.OpenAI, encoder: Server) -> None:
    ids = [101, 2054, 2003, 1996, 3007, 1997, 2605, 1029, 102]  # "[CLS] what is the capital of france? [SEP]"
    from_ids = encoder_client.embeddings.create(model=EMBEDDING_FP32, input=ids)
    from_text = encoder_client.embeddings.create(model=EMBEDDING_FP32, input=TEXTS[0])
    assert from_ids.usage.prompt_tokens == len(ids) == from_text.usage.prompt_tokens
    assert float(vectors_of(from_ids)[0] @ vectors_of(from_text)[0]) >= 0.99999
    nested = encoder_client.embeddings.create(model=EMBEDDING_FP32, input=[ids, ids[:4]])
    assert len(nested.data) == 2 and nested.usage.prompt_tokens == len(ids) + 4


def test_reference_curl_example(encoder: Server) -> None:
    response = httpx.post(
        f"{encoder.url}/v1/embedding",
        headers={"accept": "application/json", "Content-Type": "application/json"},
        json={
            "model": EMBEDDING_ALIAS,
            "input": "What is the capital of France?",
            "encoding_format": "float",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("embd-") and isinstance(body["created"], int)
    assert len(body["data"][0]["embedding"]) == 384
    assert body["usage"] == {
        "prompt_tokens": 9,
        "total_tokens": 9,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


def test_truncate_prompt_tokens(encoder_client: openai.OpenAI, encoder: Server) -> None:
    long_text = "word " * 400
    body = {"model": EMBEDDING, "input": long_text, "truncate_prompt_tokens": 10}
    truncated = httpx.post(f"{encoder.url}/v1/embeddings", json=body).json()
    assert truncated["usage"]["prompt_tokens"] == 10
    whole = httpx.post(f"{encoder.url}/v1/embeddings", json={**body, "truncate_prompt_tokens": -1}).json()
    assert whole["usage"]["prompt_tokens"] == 256


def test_large_request_does_not_block_the_server(encoder: Server) -> None:
    finished = threading.Event()
    big = {"model": EMBEDDING_FP32, "input": ["a sentence that is long enough to take real work " * 20] * 256}

    def send_big() -> None:
        httpx.post(f"{encoder.url}/v1/embeddings", json=big, timeout=300)
        finished.set()

    thread = threading.Thread(target=send_big)
    thread.start()
    time.sleep(0.3)
    health = httpx.get(f"{encoder.url}/health", timeout=60)
    small = httpx.post(f"{encoder.url}/v1/embeddings", json={"model": EMBEDDING, "input": "hi"}, timeout=60)
    answered_while_busy = not finished.is_set()
    thread.join()
    assert health.status_code == 200 and small.status_code == 200
    assert answered_while_busy, "health and a small request should answer while the big one computes"


def post_error(url: str, body: object, path: str = "/v1/embeddings") -> tuple[int, dict[str, object]]:
    if isinstance(body, bytes):
        response = httpx.post(f"{url}{path}", content=body, headers={"Content-Type": "application/json"})
    else:
        response = httpx.post(f"{url}{path}", json=body)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == response.status_code
    return response.status_code, error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": EMBEDDING, "input": ""}, "input"),
        ({"model": EMBEDDING, "input": []}, "input"),
        ({"model": EMBEDDING, "input": ["a", ""]}, "input"),
        ({"model": EMBEDDING, "input": [[]]}, "input"),
        ({"model": EMBEDDING, "input": ["a", 1]}, "input"),
        ({"model": EMBEDDING, "input": 42}, "input"),
        ({"model": EMBEDDING}, "input"),
        ({"input": "a"}, "model"),
        ({"model": EMBEDDING, "input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"model": EMBEDDING, "input": "a", "truncate_prompt_tokens": -5}, "truncate_prompt_tokens"),
        ({"model": EMBEDDING, "input": "a", "truncate_prompt_tokens": 100000}, "truncate_prompt_tokens"),
        ({"model": EMBEDDING, "input": "a", "dimensions": 64}, "dimensions"),
        ({"model": EMBEDDING, "input": [1, 2, 10_000_000]}, "input"),
        ({"model": EMBEDDING, "input": "word " * 300}, "input"),
    ],
)
def test_bad_input_is_400_naming_the_field(encoder: Server, body: dict[str, object], param: str) -> None:
    status, error = post_error(encoder.url, body)
    assert status == 400
    assert error["param"] == param


def test_too_long_states_both_numbers(encoder: Server) -> None:
    _, error = post_error(encoder.url, {"model": EMBEDDING, "input": "word " * 300})
    assert "256" in str(error["message"]) and "302" in str(error["message"])


def test_malformed_json_is_400(encoder: Server) -> None:
    status, error = post_error(encoder.url, b'{"model": "x", "input": ')
    assert status == 400 and "JSON" in str(error["message"])


def test_unknown_model_is_404_listing_served_names(encoder: Server) -> None:
    status, error = post_error(encoder.url, {"model": "no-such-model", "input": "a"})
    assert status == 404
    assert EMBEDDING in str(error["message"]) and EMBEDDING_ALIAS in str(error["message"])


def test_wrong_task_is_400(encoder: Server) -> None:
    status, error = post_error(encoder.url, {"model": CROSS_ENCODER, "input": "a"})
    assert status == 400 and error["param"] == "model"


def test_openai_client_raises_bad_request(encoder_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        encoder_client.embeddings.create(model=EMBEDDING, input="")
    with pytest.raises(openai.NotFoundError):
        encoder_client.embeddings.create(model="nope", input="a")
