"""API keys against a real server: 401 in the OpenAI shape, named callers, open paths, no key in logs."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.e2e.configs import EMBEDDING, KEYS, auth
from tests.e2e.server import Server

WRONG_KEY = "sk-not-a-key-93e1"


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == 401 and error["type"] == "AuthenticationError"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/rerank"),
        ("POST", "/score"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/version"),
        ("GET", "/v1/usage"),
        ("GET", "/no/such/path"),
    ],
)
def test_api_paths_need_a_key(guarded: Server, method: str, path: str) -> None:
    body = {"model": EMBEDDING, "input": "hello"} if method == "POST" else None
    assert_401(httpx.request(method, guarded.url + path, json=body))
    assert_401(httpx.request(method, guarded.url + path, json=body, headers={"Authorization": WRONG_KEY}))
    assert_401(
        httpx.request(method, guarded.url + path, json=body, headers={"Authorization": f"Bearer {WRONG_KEY}"})
    )


def test_health_and_metrics_stay_open(guarded: Server) -> None:
    assert httpx.get(f"{guarded.url}/health").status_code == 200
    assert httpx.get(f"{guarded.url}/metrics").status_code == 200


def test_openai_client_with_and_without_key(guarded: Server) -> None:
    for name, key in KEYS.items():  # alice from the config file, bob from --api-key
        client = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=key, max_retries=0)
        response = client.embeddings.create(model=EMBEDDING, input=f"hello from {name}")
        assert len(response.data[0].embedding) == 384
    client = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=WRONG_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.embeddings.create(model=EMBEDDING, input="hello")
    assert WRONG_KEY not in str(raised.value)


def test_bearer_scheme_is_case_insensitive(guarded: Server) -> None:
    response = httpx.get(f"{guarded.url}/v1/models", headers={"authorization": f"bearer {KEYS['bob']}"})
    assert response.status_code == 200


def test_openapi_document_declares_bearer_auth_for_the_api(guarded: Server) -> None:
    """What Swagger UI's Authorize button reads: one bearer scheme, required outside the open paths."""
    document = httpx.get(f"{guarded.url}/openapi.json").json()  # an open path: no key needed
    schemes = document["components"]["securitySchemes"]
    assert len(schemes) == 1
    name, scheme = next(iter(schemes.items()))
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    operations = {
        (path, method): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "delete", "patch"}
    }
    protected = {key for key, operation in operations.items() if operation.get("security")}
    for key in protected:
        assert operations[key]["security"] == [{name: []}], key
        assert "401" in operations[key]["responses"], key  # the answer without a key is documented
    assert {
        ("/v1/embeddings", "post"),
        ("/v1/chat/completions", "post"),
        ("/tokenize", "post"),
        ("/v1/models", "get"),
        ("/version", "get"),
        ("/v1/usage", "get"),
    } <= protected
    assert {path for path, _ in set(operations) - protected} <= {"/health", "/metrics"}
    assert ("/health", "get") in set(operations) - protected
    # Swagger UI sends `Authorization: Bearer <key>` for this scheme; the server takes it.
    models = httpx.get(f"{guarded.url}/v1/models", headers={"Authorization": f"Bearer {KEYS['bob']}"})
    assert models.status_code == 200


def test_key_name_is_the_caller_in_usage(guarded: Server) -> None:
    marker = f"usage-marker-{time.time_ns()}"
    response = httpx.post(
        f"{guarded.url}/v1/embeddings", json={"model": EMBEDDING, "input": marker}, headers=auth("bob")
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 15
    while True:
        usage = httpx.get(f"{guarded.url}/v1/usage", params={"group_by": "caller"}, headers=auth("alice"))
        assert usage.status_code == 200, usage.text
        callers = {row["caller"] for row in usage.json()["data"]}
        if "bob" in callers or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "bob" in callers
    assert not callers & {KEYS["bob"], KEYS["alice"]}
    own = httpx.get(f"{guarded.url}/v1/usage", params={"group_by": "caller"}, headers=auth("bob")).json()
    assert {row["caller"] for row in own["data"]} == {"bob"}  # a non-admin key sees its own usage


def test_keys_never_reach_the_log(guarded: Server) -> None:
    httpx.get(f"{guarded.url}/v1/models", headers={"Authorization": f"Bearer {WRONG_KEY}"})
    httpx.get(f"{guarded.url}/v1/models", headers=auth("alice"))
    log = guarded.log_text()
    assert "sk-" not in log
    for secret in [*KEYS.values(), WRONG_KEY]:
        assert secret not in log


def test_bad_keys_on_the_command_line_stop_the_server_cleanly() -> None:
    command = [sys.executable, "-m", "aios_serve.cli", "serve"]
    duplicate = subprocess.run(
        [*command, "--api-key", "ci:sk-dup-1", "--api-key", "ci:sk-dup-2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert duplicate.returncode == 1
    assert "API key names must be unique" in duplicate.stderr
    assert "sk-dup" not in duplicate.stderr + duplicate.stdout
