"""X-Request-Id on every response (a client's own id kept), and one log line per request with it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.configs import minilm
from tests.e2e.server import Server

EMBEDDING = "minilm"

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # This server also shows `record_usage: false` (a server behind another records nothing).
    with Server(
        tmp_path_factory.mktemp("request-id-server"), [minilm(EMBEDDING)], record_usage=False
    ) as server:
        yield server


def access_lines(server: Server, request_id: str) -> list[str]:
    return [
        line
        for line in server.log_path.read_text().splitlines()
        if "aios_serve.access" in line and f"[{request_id}]" in line and f"request_id={request_id} " in line
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/embeddings", {"model": EMBEDDING, "input": "hello"}, 200),
        ("POST", "/v1/embeddings", {"model": "no-such-model", "input": "hello"}, 404),
        ("POST", "/v1/embeddings", {"model": EMBEDDING, "input": ""}, 400),
        ("GET", "/no/such/path", None, 404),
        ("GET", "/health", None, 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/v1/usage", None, 200),
    ],
)
def test_every_response_carries_a_fresh_id(
    server: Server, method: str, path: str, body: dict[str, str] | None, status: int
) -> None:
    first = httpx.request(method, f"{server.url}{path}", json=body, timeout=60)
    second = httpx.request(method, f"{server.url}{path}", json=body, timeout=60)
    assert first.status_code == second.status_code == status
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED_ID.match(request_id) for request_id in ids)
    assert ids[0] != ids[1]


def test_a_clients_own_id_is_kept_and_logged_once(server: Server) -> None:
    own = "client-trace-0042/abc"
    response = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": EMBEDDING, "input": ["one", "two"]},
        headers={"X-Request-Id": own},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == own
    lines = access_lines(server, own)
    assert len(lines) == 1, lines
    tokens = response.json()["usage"]["prompt_tokens"]
    assert '"POST /v1/embeddings" 200' in lines[0]
    assert f"model={EMBEDDING}" in lines[0] and f"tokens={tokens}/0" in lines[0]


def test_an_error_is_logged_with_its_id(server: Server) -> None:
    response = httpx.post(f"{server.url}/v1/embeddings", json={"model": "nope", "input": "x"}, timeout=60)
    request_id = response.headers["x-request-id"]
    (line,) = access_lines(server, request_id)
    assert '"POST /v1/embeddings" 404' in line


@pytest.mark.parametrize("bad_id", ["has space", "x" * 500, "tab\there"])
def test_an_unusable_client_id_is_replaced(server: Server, bad_id: str) -> None:
    response = httpx.get(f"{server.url}/health", headers={"X-Request-Id": bad_id})
    assert GENERATED_ID.match(response.headers["x-request-id"])


def test_record_usage_false_records_nothing(server: Server) -> None:
    response = httpx.post(f"{server.url}/v1/embeddings", json={"model": EMBEDDING, "input": "x"}, timeout=60)
    assert response.status_code == 200
    assert httpx.get(f"{server.url}/v1/usage").json()["data"] == []
    assert len(access_lines(server, response.headers["x-request-id"])) == 1
