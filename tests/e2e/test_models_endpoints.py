"""`/v1/models` (capabilities of every bundled model), `/health`, `/version` and the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.e2e.configs import (
    CROSS_ENCODER,
    EMBEDDING,
    EMBEDDING_ALIAS,
    EMBEDDING_FP32,
    QWEN,
    QWEN_THINK,
    SMOL,
    SMOL_ALIAS,
)
from tests.e2e.server import Server

SMOL_CAPABILITIES = ["completions", "chat"]


def test_models_list_shape(encoder: Server) -> None:
    body = httpx.get(f"{encoder.url}/v1/models").json()
    assert body["object"] == "list"
    by_id = {card["id"]: card for card in body["data"]}
    assert set(by_id) == {EMBEDDING, EMBEDDING_ALIAS, EMBEDDING_FP32, CROSS_ENCODER}
    assert by_id[EMBEDDING]["capabilities"] == ["embeddings", "rerank", "score"]
    assert by_id[CROSS_ENCODER]["capabilities"] == ["rerank", "score"]
    assert by_id[EMBEDDING]["max_model_len"] == 256
    assert by_id[EMBEDDING_ALIAS]["root"] == EMBEDDING
    assert all(card["object"] == "model" and isinstance(card["created"], int) for card in body["data"])


def test_health_and_version(encoder: Server) -> None:
    assert httpx.get(f"{encoder.url}/health").status_code == 200
    assert httpx.get(f"{encoder.url}/version").json()["version"]


def test_openapi_describes_the_embedding_api(encoder: Server) -> None:
    paths = httpx.get(f"{encoder.url}/openapi.json").json()["paths"]
    assert "/v1/embeddings" in paths and "/v1/embedding" in paths


def test_unknown_path_and_method_use_the_error_shape(encoder: Server) -> None:
    missing = httpx.get(f"{encoder.url}/v1/nothing-here")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    wrong_method = httpx.get(f"{encoder.url}/v1/embeddings")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def _capabilities(base_url: str) -> dict[str, list[str]]:
    return {card["id"]: card["capabilities"] for card in httpx.get(f"{base_url}/v1/models").json()["data"]}


def test_generation_models_list_tools_when_their_chat_template_renders_them(
    tools: Server, smol_openvino: Server
) -> None:
    """Qwen2.5-Coder's template writes tools into the prompt; SmolLM2's does not; the same Qwen
    weights under a ChatML template without tools (qwen-think) do not either."""
    qwen = _capabilities(tools.url)
    assert qwen[QWEN] == ["completions", "chat", "tools"]
    assert qwen[QWEN_THINK] == ["completions", "chat"]
    smol = _capabilities(smol_openvino.url)
    assert smol[SMOL] == smol[SMOL_ALIAS] == SMOL_CAPABILITIES


def test_the_ray_ingress_lists_what_each_model_server_lists(tools: Server) -> None:
    """The Ray ingress asks each model's own server (here a plain one) for its capabilities."""
    from aios_serve.config import ModelSpec, ServerConfig
    from aios_serve.deploy.ray_serve import with_served_capabilities

    upstream = {"url": tools.url, "model": QWEN}
    front = ServerConfig(
        models=[
            ModelSpec(name="qwen", kind="remote", capabilities=["completions", "chat"], upstreams=[upstream]),
            ModelSpec(name="configured", kind="remote", capabilities=["chat"], upstreams=[upstream]),
        ]
    )
    learned = with_served_capabilities(front, {"qwen"})
    assert [spec.capabilities for spec in learned.models] == [["completions", "chat", "tools"], ["chat"]]
