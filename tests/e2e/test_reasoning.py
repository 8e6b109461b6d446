"""Reasoning output on a real server: `qwen-think` (Qwen2.5-Coder-0.5B with `reasoning_parser:
think` and a fixture template that opens a `<think>` block, see tests/e2e/configs.py) returns
its thinking in reasoning_content (and `reasoning`), never in content; streaming agrees."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.configs import QWEN, QWEN_THINK

ASK: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def answer(tools_client: openai.OpenAI) -> Any:
    return tools_client.chat.completions.create(model=QWEN_THINK, messages=ASK, temperature=0, max_tokens=48)


def test_thinking_goes_to_reasoning_content_not_content(answer: Any) -> None:
    message = answer.choices[0].message
    extra = message.model_extra or {}
    reasoning = extra["reasoning_content"]
    assert reasoning and reasoning.strip()
    assert extra["reasoning"] == reasoning
    for part in (reasoning, message.content or ""):
        assert "<think>" not in part and "</think>" not in part
    assert message.content and "paris" in message.content.lower()  # the answer after </think>


def test_streamed_reasoning_matches(tools_client: openai.OpenAI, answer: Any) -> None:
    reasoning, content = "", ""
    for chunk in tools_client.chat.completions.create(
        model=QWEN_THINK, messages=ASK, temperature=0, max_tokens=48, stream=True
    ):
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            reasoning += extra.get("reasoning_content") or ""
            content += choice.delta.content or ""
    expected = answer.choices[0].message
    assert reasoning == (expected.model_extra or {})["reasoning_content"]
    assert content == expected.content


def test_a_model_without_a_reasoning_parser_has_no_reasoning(tools_client: openai.OpenAI) -> None:
    message = (
        tools_client.chat.completions.create(model=QWEN, messages=ASK, temperature=0, max_tokens=8)
        .choices[0]
        .message
    )
    assert (message.model_extra or {})["reasoning_content"] is None and message.content
