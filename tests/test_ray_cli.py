"""`aios-serve serve --ray` with three models on a 2-core machine: every model answers through the
ingress. Needs ray[serve], which only .ray-venv has: run with `make test-ray`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import running_server, write_config

pytest.importorskip("ray", reason="ray[serve] is only in .ray-venv: make test-ray")

MODELS = [
    {"name": "minilm-a", "kind": "embedding", "bundled": "all-minilm-l6-v2"},
    {"name": "minilm-b", "kind": "embedding", "bundled": "all-minilm-l6-v2"},
    {
        "name": "smollm2",
        "kind": "generate",
        "bundled": "smollm2-135m-instruct",
        "options": {"n_ctx": 1024, "max_num_seqs": 2},
    },
]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("ray-cli")
    with running_server(write_config(folder, MODELS), folder / "server.log", ("--ray",)) as base_url:
        yield base_url


def test_three_models_answer_through_the_ingress(url: str) -> None:
    for name in ("minilm-a", "minilm-b"):
        response = httpx.post(f"{url}/v1/embeddings", json={"model": name, "input": "hello"}, timeout=60)
        assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384
    chat = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=120,
    )
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
