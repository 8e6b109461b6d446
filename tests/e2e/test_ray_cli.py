"""`aios-serve serve --ray` with three models on a 2-core machine: every model answers through the
ingress. Needs ray[serve], which only .ray-venv has: run with `make test-ray`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.configs import minilm, smol
from tests.e2e.server import Server

pytest.importorskip("ray", reason="ray[serve] is only in .ray-venv: make test-ray")

MODELS = [minilm("minilm-a"), minilm("minilm-b"), smol("smollm2", n_ctx=1024, max_num_seqs=2)]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with Server(tmp_path_factory.mktemp("ray-cli"), MODELS, args=("--ray",)) as server:
        yield server.url


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
