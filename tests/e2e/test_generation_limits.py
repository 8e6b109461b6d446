"""The configured limits on completions and chat: n, stop strings, tools and tokens per request."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.configs import smol
from tests.e2e.server import Server

MODEL = "smollm2"
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with Server(
        tmp_path_factory.mktemp("generation-limits"),
        [smol(MODEL, n_ctx=2048)],
        limits={"max_n": 2, "max_stop": 1, "max_tools": 1, "max_request_tokens": 200},
    ) as server:
        yield server.url


def chat(url: str, **fields: object) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **fields}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def complete(url: str, **fields: object) -> httpx.Response:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, **fields}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=60)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 3}, "n"),
        ({"stop": ["a", "b"]}, "stop"),
        ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools"),
        ({"max_tokens": 190}, "max_tokens"),
        ({"n": 2, "max_tokens": 95}, "max_tokens"),
    ],
)
def test_chat_over_a_limit_is_400(url: str, fields: dict[str, object], param: str) -> None:
    response = chat(url, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"n": 3}, "n"), ({"stop": ["a", "b"]}, "stop"), ({"max_tokens": 200}, "max_tokens")],
)
def test_completions_over_a_limit_is_400(url: str, fields: dict[str, object], param: str) -> None:
    response = complete(url, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_within_the_limits_is_served(url: str) -> None:
    assert chat(url, n=2, stop=["."], tools=[WEATHER_TOOL], tool_choice="none").status_code == 200
    assert complete(url, n=2, stop=["."]).status_code == 200


def test_a_full_generation_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    model = smol(MODEL, n_ctx=1024, max_num_seqs=1, max_queued_requests=1)
    with Server(tmp_path, [model]) as server:

        def ask(_: int) -> httpx.Response:
            return chat(server.url, max_tokens=48, temperature=0)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(ask, range(8)))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) == {200, 503}, statuses
    refused = [response for response in responses if response.status_code == 503]
    assert all(response.headers["Retry-After"] for response in refused)
    assert all(response.json()["error"]["code"] == 503 for response in refused)
