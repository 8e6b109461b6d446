"""vLLM's `repetition_penalty` on /v1/completions and /v1/chat/completions against a real server on
SmolLM2-135M, on every engine: greedy output moves off the prompt's words, and an invalid value is
a 400 naming the field."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from tests.e2e.configs import SMOL
from tests.e2e.server import Server

PROMPT = "banana banana banana banana banana banana banana banana"
MESSAGES = [{"role": "user", "content": "Write the word banana ten times."}]


def bananas(text: str) -> int:
    return len(re.findall(r"\bbanana\b", text, flags=re.IGNORECASE))


def test_completions_repeat_the_prompt_less(smol_client: openai.OpenAI) -> None:
    def complete(**extra: float) -> str:
        out = smol_client.completions.create(
            model=SMOL, prompt=PROMPT, max_tokens=24, temperature=0, extra_body=extra
        )
        return out.choices[0].text

    plain, penalised = complete(), complete(repetition_penalty=1.5)
    assert complete(repetition_penalty=1.0) == plain
    assert penalised != plain
    assert bananas(penalised) < bananas(plain), (plain, penalised)


def test_chat_repeats_the_prompt_less(smol_client: openai.OpenAI) -> None:
    def chat(**extra: float) -> str:
        out = smol_client.chat.completions.create(
            model=SMOL,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=30,
            temperature=0,
            extra_body=extra,
        )
        return out.choices[0].message.content or ""

    plain, penalised = chat(), chat(repetition_penalty=1.5)
    assert penalised != plain
    assert bananas(penalised) < bananas(plain), (plain, penalised)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("value", ["0", "-1.5", "1e999", '"many"'])
def test_invalid_values_are_400_with_param(smol_server: Server, path: str, value: str) -> None:
    """`value` is JSON text: 1e999 overflows to inf, which vLLM refuses as not finite."""
    body = {"prompt": PROMPT} if path == "/v1/completions" else {"messages": MESSAGES}
    content = json.dumps({"model": SMOL, "max_tokens": 2, **body, "repetition_penalty": None})
    content = content.replace('"repetition_penalty": null', f'"repetition_penalty": {value}')
    response = httpx.post(
        f"{smol_server.url}{path}", content=content, headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "repetition_penalty" and error["type"] == "BadRequestError"


def test_large_values_are_allowed(smol_server: Server) -> None:
    """vLLM sets no upper bound (only > 0 and finite)."""
    payload = {"model": SMOL, "prompt": PROMPT, "max_tokens": 2, "repetition_penalty": 3.0}
    response = httpx.post(f"{smol_server.url}/v1/completions", json=payload, timeout=60)
    assert response.status_code == 200, response.text
