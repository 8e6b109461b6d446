# mypy: disable-error-code="arg-type,call-overload,union-attr,list-item"
"""POST /v1/chat/completions against a real server on SmolLM2-135M (openai client, sync, async,
streaming, and httpx for raw shapes). Each test that takes `smol_server` runs on every engine."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import openai
import pytest

from tests.e2e.configs import SMOL
from tests.e2e.server import Server

MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Name three fruits."}]


@pytest.fixture(scope="module")
def greedy(smol_client: openai.OpenAI) -> openai.types.chat.ChatCompletion:
    return smol_client.chat.completions.create(model=SMOL, messages=MESSAGES, max_tokens=30, temperature=0)  # type: ignore[arg-type]


def test_greedy_chat_shape_and_determinism(
    smol_client: openai.OpenAI, greedy: openai.types.chat.ChatCompletion
) -> None:
    again = smol_client.chat.completions.create(model=SMOL, messages=MESSAGES, max_tokens=30, temperature=0)  # type: ignore[arg-type]
    choice = greedy.choices[0]
    assert choice.message.content == again.choices[0].message.content
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.message.tool_calls == []
    extra = choice.message.model_extra or {}
    assert extra["reasoning_content"] is None
    assert greedy.id.startswith("chatcmpl-") and greedy.object == "chat.completion"
    assert greedy.usage is not None and greedy.usage.completion_tokens <= 30


def test_async_client_matches_sync(smol_server: Server, greedy: openai.types.chat.ChatCompletion) -> None:
    async def run() -> str | None:
        async with smol_server.async_client() as client:
            out = await client.chat.completions.create(
                model=SMOL, messages=MESSAGES, max_tokens=30, temperature=0
            )  # type: ignore[arg-type]
            return out.choices[0].message.content

    assert asyncio.run(run()) == greedy.choices[0].message.content


def test_stream_equals_non_streamed(
    smol_client: openai.OpenAI, greedy: openai.types.chat.ChatCompletion
) -> None:
    chunks = list(
        smol_client.chat.completions.create(
            model=SMOL,
            messages=MESSAGES,
            max_tokens=30,
            temperature=0,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [greedy.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert greedy.usage is not None and chunks[-1].usage.total_tokens == greedy.usage.total_tokens


def test_raw_stream_ends_with_done(smol_server: Server) -> None:
    body = {"model": SMOL, "messages": MESSAGES, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{smol_server.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


def test_no_maximum_generates_until_the_end(smol_client: openai.OpenAI) -> None:
    out = smol_client.chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Say hello."}],
        temperature=0,  # type: ignore[list-item]
    )
    assert out.choices[0].finish_reason == "stop"
    assert (out.choices[0].model_extra or {})["stop_reason"] is None


def test_max_completion_tokens_wins(smol_client: openai.OpenAI) -> None:
    out = smol_client.chat.completions.create(
        model=SMOL,
        messages=MESSAGES,
        max_tokens=20,
        max_completion_tokens=2,
        temperature=0,  # type: ignore[arg-type]
    )
    assert (
        out.choices[0].finish_reason == "length"
        and out.usage is not None
        and out.usage.completion_tokens == 2
    )


def test_stop_string_and_seed_and_n(
    smol_client: openai.OpenAI, greedy: openai.types.chat.ChatCompletion
) -> None:
    text = greedy.choices[0].message.content or ""
    stop = text[8:12]
    cut = smol_client.chat.completions.create(
        model=SMOL, messages=MESSAGES, max_tokens=30, temperature=0, stop=stop
    )  # type: ignore[arg-type]
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert (
        cut.choices[0].finish_reason == "stop" and (cut.choices[0].model_extra or {})["stop_reason"] == stop
    )
    sampled = [
        smol_client.chat.completions.create(
            model=SMOL, messages=MESSAGES, max_tokens=15, temperature=1, seed=7, n=3
        )  # type: ignore[arg-type]
        for _ in range(2)
    ]
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]
    assert len(sampled[0].choices) == 3


def test_logprobs_content_shape(smol_server: Server) -> None:
    client = smol_server.client(timeout=120)
    out = client.chat.completions.create(
        model=SMOL,
        messages=MESSAGES,
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=20,  # type: ignore[arg-type]
    )
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 5
    for entry in content:
        values = [top.logprob for top in entry.top_logprobs]
        assert len(values) == 20 and values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-6
        assert entry.logprob == pytest.approx(values[0])  # greedy takes the best
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert entry.logprob <= 0
    assert "".join(e.token for e in content) == out.choices[0].message.content


def test_tools_render_through_the_template(smol_client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    out = smol_client.chat.completions.create(model=SMOL, messages=MESSAGES, tools=tools, max_tokens=3)  # type: ignore[arg-type,list-item]
    assert out.choices[0].message.tool_calls == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"messages": []}, "messages"),
        ({"tool_choice": "auto"}, "tool_choice"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "a"}}],
                "tool_choice": {"type": "function", "function": {"name": "b"}},
            },
            "tool_choice",
        ),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"temperature": -1}, "temperature"),
        ({"max_completion_tokens": 100000}, "max_completion_tokens"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages",
        ),
    ],
)
def test_bad_chat_requests_are_400(smol_server: Server, body: dict[str, object], param: str) -> None:
    payload = {"model": SMOL, "messages": MESSAGES, "max_tokens": 2, **body}
    response = httpx.post(f"{smol_server.url}/v1/chat/completions", json=payload, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_malformed_json_is_400(smol_server: Server) -> None:
    response = httpx.post(
        f"{smol_server.url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400


def test_chat_on_an_embedding_model_is_400(smol_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        smol_client.chat.completions.create(model="minilm", messages=MESSAGES)  # type: ignore[arg-type]
