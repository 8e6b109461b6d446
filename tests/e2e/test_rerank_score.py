"""Rerank and Score APIs on the bundled embedding model and a tiny cross-encoder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cohere
import httpx
import numpy as np
import orjson
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.e2e.configs import CROSS_ENCODER, EMBEDDING, EMBEDDING_ALIAS, EMBEDDING_FP32, cross_encoder
from tests.e2e.server import Server
from tests.tiny_models import build_cross_encoder

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "The capital of France is Paris.",
    "France capital city is known for the Eiffel Tower.",
    "Paris is located in the north-central part of France.",
]
UNRELATED = [
    "Bananas are a good source of potassium.",
    "The stock market closed higher on Tuesday.",
    "The capital of France is Paris.",
    "Photosynthesis turns light into chemical energy.",
]


def rerank(url: str, body: dict[str, object], path: str = "/rerank") -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60)


def scores_by_index(body: dict[str, object]) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in body["results"]}  # type: ignore[attr-defined]


def test_reference_rerank_example_word_for_word(encoder: Server) -> None:
    raw = f"""{{
"model": "{EMBEDDING_ALIAS}",
"query": "What is the capital of France?",
"documents": [
"The capital of France is Paris.",
"France capital city is known for the Eiffel Tower.",
"Paris is located in the north-central part of France."
],
"top_n": 2,
"truncate_prompt_tokens": 512
}}"""
    # The reference truncates at 512, above this model's 256: that is a 400 naming the field.
    response = httpx.post(
        f"{encoder.url}/rerank",
        content=raw,
        headers={"accept": "application/json", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "truncate_prompt_tokens"
    fitted = httpx.post(
        f"{encoder.url}/rerank",
        content=raw.replace('"truncate_prompt_tokens": 512', '"truncate_prompt_tokens": 256'),
        headers={"accept": "application/json", "Content-Type": "application/json"},
    )
    assert fitted.status_code == 200
    body = fitted.json()
    assert body["id"].startswith("rerank-") and body["model"] == EMBEDDING_ALIAS
    assert len(body["results"]) == 2
    assert body["results"][0]["document"]["text"] == DOCUMENTS[body["results"][0]["index"]]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > 0


def test_reference_score_example_word_for_word(encoder: Server) -> None:
    raw = f"""{{
"model": "{EMBEDDING_ALIAS}",
"encoding_format": "float",
"text_1": [
"What is the largest planet in the solar system?",
"What is the chemical symbol for water?"
],
"text_2": [
"Jupiter is the largest planet in the solar system.",
"The chemical symbol for water is H₂O."
]
}}"""
    response = httpx.post(
        f"{encoder.url}/score",
        content=raw.encode(),
        headers={"accept": "application/json", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("score-") and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "score" and 0.5 < d["score"] <= 1.0 for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    assert body["usage"]["completion_tokens"] == 0


def test_capital_of_france_ranks_first(encoder: Server) -> None:
    body = rerank(encoder.url, {"model": EMBEDDING, "query": QUERY, "documents": UNRELATED}).json()
    assert body["results"][0]["index"] == 2
    relevance = [r["relevance_score"] for r in body["results"]]
    assert relevance == sorted(relevance, reverse=True)
    assert sorted(r["index"] for r in body["results"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_all_paths_serve_the_same_body(encoder: Server, path: str) -> None:
    body = rerank(encoder.url, {"model": EMBEDDING, "query": QUERY, "documents": DOCUMENTS}, path).json()
    reference = rerank(encoder.url, {"model": EMBEDDING, "query": QUERY, "documents": DOCUMENTS}).json()
    assert scores_by_index(body) == pytest.approx(scores_by_index(reference), abs=1e-6)


def test_top_n_and_return_documents(encoder: Server) -> None:
    base = {"model": EMBEDDING, "query": QUERY, "documents": UNRELATED}
    assert len(rerank(encoder.url, {**base, "top_n": 2}).json()["results"]) == 2
    assert len(rerank(encoder.url, {**base, "top_n": 0}).json()["results"]) == 4
    assert len(rerank(encoder.url, {**base, "top_n": 99}).json()["results"]) == 4
    bare = rerank(encoder.url, {**base, "return_documents": False}).content
    assert b'"document"' not in bare
    assert all("document" not in r for r in orjson.loads(bare)["results"])


def test_documents_as_text_objects(encoder: Server) -> None:
    objects = [{"text": text} for text in DOCUMENTS]
    as_objects = rerank(encoder.url, {"model": EMBEDDING, "query": QUERY, "documents": objects}).json()
    as_strings = rerank(encoder.url, {"model": EMBEDDING, "query": QUERY, "documents": DOCUMENTS}).json()
    assert scores_by_index(as_objects) == pytest.approx(scores_by_index(as_strings), abs=1e-6)


def test_cohere_v2_client(encoder: Server) -> None:
    client = cohere.ClientV2(base_url=encoder.url, api_key="unused")
    response = client.rerank(model=EMBEDDING, query=QUERY, documents=UNRELATED, top_n=3)
    assert response.results[0].index == 2
    assert len(response.results) == 3
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True)


def test_cohere_max_tokens_per_doc_truncates(encoder: Server) -> None:
    long_doc = "Paris " + "filler words that say nothing at all " * 80
    body = {"model": EMBEDDING, "query": QUERY, "documents": [long_doc]}
    assert rerank(encoder.url, body, "/v2/rerank").status_code == 400
    clipped = rerank(encoder.url, {**body, "max_tokens_per_doc": 32}, "/v2/rerank")
    assert clipped.status_code == 200
    assert clipped.json()["results"][0]["document"]["text"] == long_doc


def test_score_one_to_one_equals_one_to_many_and_rerank(encoder: Server) -> None:
    many = httpx.post(
        f"{encoder.url}/v1/score", json={"model": EMBEDDING_FP32, "text_1": QUERY, "text_2": UNRELATED}
    ).json()
    ranked = scores_by_index(
        rerank(encoder.url, {"model": EMBEDDING_FP32, "query": QUERY, "documents": UNRELATED}).json()
    )
    for index, document in enumerate(UNRELATED):
        single = httpx.post(
            f"{encoder.url}/score", json={"model": EMBEDDING_FP32, "text_1": QUERY, "text_2": document}
        ).json()
        assert single["data"][0]["score"] == pytest.approx(many["data"][index]["score"], abs=1e-5)
        assert ranked[index] == pytest.approx(many["data"][index]["score"], abs=1e-5)


def test_score_n_to_n_is_zipped(encoder: Server) -> None:
    body = httpx.post(
        f"{encoder.url}/score",
        json={
            "model": EMBEDDING,
            "text_1": [QUERY, "bananas"],
            "text_2": [DOCUMENTS[0], "potassium in bananas"],
        },
    ).json()
    assert len(body["data"]) == 2
    assert all(d["score"] > 0.4 for d in body["data"])


def test_cross_encoder_scores_are_sigmoid_of_logits(encoder: Server, cross_encoder_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(cross_encoder_dir)).eval()
    with torch.inference_mode():
        features = tokenizer([QUERY] * len(UNRELATED), UNRELATED, padding=True, return_tensors="pt")
        expected = torch.sigmoid(model(**features).logits[:, 0]).numpy()
    scored = httpx.post(
        f"{encoder.url}/score", json={"model": CROSS_ENCODER, "text_1": QUERY, "text_2": UNRELATED}
    ).json()
    np.testing.assert_allclose([d["score"] for d in scored["data"]], expected, atol=1e-5)
    ranked = rerank(encoder.url, {"model": CROSS_ENCODER, "query": QUERY, "documents": UNRELATED}).json()
    assert [r["index"] for r in ranked["results"]] == list(np.argsort(-expected))
    np.testing.assert_allclose([scores_by_index(ranked)[i] for i in range(4)], expected, atol=1e-5)
    single = tokenizer(QUERY, UNRELATED[0])["input_ids"]
    assert scored["usage"]["prompt_tokens"] >= len(single) * 4 - 4


def test_cross_encoder_truncation_and_too_long(encoder: Server) -> None:
    long_doc = "word " * 200  # the tiny cross-encoder reads at most 128 positions
    body = {"model": CROSS_ENCODER, "query": QUERY, "documents": ["short", long_doc]}
    response = rerank(encoder.url, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "documents[1]" in error["message"] and "128" in error["message"]
    truncated = rerank(encoder.url, {**body, "truncate_prompt_tokens": 64})
    assert truncated.status_code == 200
    assert truncated.json()["usage"]["prompt_tokens"] <= 64 + len("short") + 16


def test_multi_label_classifier_is_rejected_at_load(tmp_path: Path) -> None:
    folder = build_cross_encoder(tmp_path / "three-labels", num_labels=3)
    with pytest.raises(RuntimeError) as failure, Server(tmp_path, [cross_encoder("bad", folder)]):
        pass
    assert "3 labels" in str(failure.value) or "3 labels" in (tmp_path / "server.log").read_text()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/rerank", {"model": EMBEDDING, "query": QUERY, "documents": []}, "documents"),
        ("/rerank", {"model": EMBEDDING, "query": QUERY, "documents": [1, 2]}, "documents"),
        ("/rerank", {"model": EMBEDDING, "query": "", "documents": ["a"]}, "query"),
        ("/rerank", {"model": EMBEDDING, "documents": ["a"]}, "query"),
        ("/rerank", {"model": EMBEDDING, "query": QUERY, "documents": ["a"], "top_n": -1}, "top_n"),
        ("/rerank", {"model": EMBEDDING, "query": QUERY, "documents": ["word " * 300]}, "documents"),
        (
            "/v2/rerank",
            {"model": EMBEDDING, "query": QUERY, "documents": ["a"], "max_tokens_per_doc": 0},
            "max_tokens_per_doc",
        ),
        ("/score", {"model": EMBEDDING, "text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, "text_2"),
        ("/score", {"model": EMBEDDING, "text_1": [], "text_2": "a"}, "text_1"),
        ("/score", {"model": EMBEDDING, "text_1": "a"}, "text_2"),
        (
            "/score",
            {"model": EMBEDDING, "text_1": "a", "text_2": "b", "encoding_format": "base64"},
            "encoding_format",
        ),
        (
            "/score",
            {"model": CROSS_ENCODER, "text_1": "a", "text_2": "b", "truncate_prompt_tokens": 2},
            "truncate_prompt_tokens",
        ),
    ],
)
def test_bad_input_is_400(encoder: Server, path: str, body: dict[str, object], param: str) -> None:
    response = httpx.post(f"{encoder.url}{path}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_count_limits_apply_before_any_work(encoder: Server) -> None:
    """The default limits: 1000 documents per rerank, 1000 pairs per score."""
    too_many = ["doc"] * 1001
    rerank_response = rerank(encoder.url, {"model": EMBEDDING, "query": QUERY, "documents": too_many})
    assert rerank_response.status_code == 400
    assert rerank_response.json()["error"]["param"] == "documents"
    assert "1000" in rerank_response.json()["error"]["message"]
    score_response = httpx.post(
        f"{encoder.url}/score", json={"model": EMBEDDING, "text_1": QUERY, "text_2": too_many}
    )
    assert score_response.status_code == 400
    assert score_response.json()["error"]["param"] == "text_2"
    assert (
        rerank(encoder.url, {"model": EMBEDDING, "query": QUERY, "documents": too_many[:1000]}).status_code
        == 200
    )


def test_unknown_model_is_404(encoder: Server) -> None:
    response = rerank(encoder.url, {"model": "missing", "query": QUERY, "documents": ["a"]})
    assert response.status_code == 404


def test_curl_example_runs_through_a_shell(encoder: Server) -> None:
    command = [
        "curl", "-s", "-X", "POST", f"{encoder.url}/v1/rerank",
        "-H", "accept: application/json", "-H", "Content-Type: application/json",
        "-d", orjson.dumps({"model": EMBEDDING, "query": QUERY, "documents": DOCUMENTS, "top_n": 2}).decode(),
    ]  # fmt: skip
    body = orjson.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    assert len(body["results"]) == 2
