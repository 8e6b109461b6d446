"""Request limits against a real server: 413 for large bodies, clear 400s for too many inputs or tokens."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from tests.e2e.configs import EMBEDDING, MAX_BODY_BYTES, MAX_EMBEDDING_INPUTS, MAX_REQUEST_TOKENS, auth
from tests.e2e.server import Server


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert error["param"] == param
    return str(error["message"])


def embed(server: Server, **body: object) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/embeddings", json={"model": EMBEDDING, **body}, headers=auth(), timeout=60
    )


def test_declared_body_over_limit_is_413(guarded: Server) -> None:
    text = "a" * (MAX_BODY_BYTES + 1)
    message = assert_error(embed(guarded, input=text), 413)
    assert str(MAX_BODY_BYTES) in message


def test_chunked_body_over_limit_is_413(guarded: Server) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"model": "%s", "input": "' % EMBEDDING.encode()
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b"a" * 4096
        yield b'"}'

    response = httpx.post(
        f"{guarded.url}/v1/embeddings",
        content=chunks(),
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert_error(response, 413)


def test_body_just_under_limit_is_served(guarded: Server) -> None:
    response = embed(guarded, input=["word " * 100] * 8)
    assert response.status_code == 200, response.text


def test_inputs_per_embedding_request(guarded: Server) -> None:
    assert embed(guarded, input=["x"] * MAX_EMBEDDING_INPUTS).status_code == 200
    message = assert_error(embed(guarded, input=["x"] * (MAX_EMBEDDING_INPUTS + 1)), 400, "input")
    assert str(MAX_EMBEDDING_INPUTS) in message
    rows = [[101, 2000, 102]] * (MAX_EMBEDDING_INPUTS + 1)  # token-id inputs count the same way
    assert_error(embed(guarded, input=rows), 400, "input")


def test_total_tokens_per_request(guarded: Server) -> None:
    text = "hello " * 200  # ~202 tokens each
    count = MAX_REQUEST_TOKENS // 200 + 2
    assert count <= MAX_EMBEDDING_INPUTS
    message = assert_error(embed(guarded, input=[text] * count), 400, "input")
    assert str(MAX_REQUEST_TOKENS) in message
    assert embed(guarded, input=[text] * 4).status_code == 200
