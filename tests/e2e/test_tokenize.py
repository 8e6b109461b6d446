"""POST /tokenize and /detokenize in vLLM's shapes, for prompts and chat messages (on SmolLM2 on
OpenVINO, the engine `auto` picks for it)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.configs import SMOL
from tests.e2e.server import Server

MESSAGES = [{"role": "user", "content": "Name three fruits."}]


def test_tokenize_prompt_and_back(smol_openvino: Server) -> None:
    body = {"model": SMOL, "prompt": "Hello world", "return_token_strs": True}
    out = httpx.post(f"{smol_openvino.url}/tokenize", json=body).json()
    assert out["count"] == len(out["tokens"]) > 0
    assert out["max_model_len"] == 8192
    assert "".join(out["token_strs"]) == "Hello world"
    back = httpx.post(f"{smol_openvino.url}/detokenize", json={"model": SMOL, "tokens": out["tokens"]}).json()
    assert back == {"prompt": "Hello world"}


def test_tokenize_messages_counts_like_chat(smol_openvino: Server) -> None:
    out = httpx.post(f"{smol_openvino.url}/tokenize", json={"model": SMOL, "messages": MESSAGES}).json()
    chat = httpx.post(
        f"{smol_openvino.url}/v1/chat/completions",
        json={"model": SMOL, "messages": MESSAGES, "max_tokens": 1},
        timeout=60,
    ).json()
    assert out["count"] == chat["usage"]["prompt_tokens"]
    text = httpx.post(
        f"{smol_openvino.url}/detokenize", json={"model": SMOL, "tokens": out["tokens"]}
    ).json()["prompt"]
    assert text.endswith("<|im_start|>assistant\n") and "Name three fruits." in text
    no_prompt = httpx.post(
        f"{smol_openvino.url}/tokenize",
        json={"model": SMOL, "messages": MESSAGES, "add_generation_prompt": False},
    ).json()
    assert no_prompt["count"] < out["count"]


def test_model_may_be_left_out(smol_openvino: Server) -> None:
    out = httpx.post(f"{smol_openvino.url}/tokenize", json={"prompt": "Hi"})
    assert out.status_code == 200 and out.json()["count"] >= 1


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/detokenize", {"model": SMOL, "tokens": [10**9]}, 400),
        ("/detokenize", {"model": SMOL, "tokens": "x"}, 400),
        ("/tokenize", {"model": SMOL}, 400),
        ("/tokenize", {"model": "nope", "prompt": "x"}, 404),
        ("/tokenize", {"model": "minilm", "prompt": "x"}, 400),
    ],
)
def test_bad_tokenize_requests(
    smol_openvino: Server, path: str, body: dict[str, object], status: int
) -> None:
    response = httpx.post(f"{smol_openvino.url}{path}", json=body)
    assert response.status_code == status, response.text
    assert "error" in response.json()
