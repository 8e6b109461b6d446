"""response_format against a real server on Qwen2.5-Coder-0.5B (openai client): strict
json_schema output parses and validates across seeds; json_object is an object; bad formats
are 400s."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.configs import QWEN, chat_for_seeds
from tests.e2e.server import Server

CITY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "country": {"type": "string", "maxLength": 20},
        "population_millions": {"type": "number", "minimum": 0},
        "is_capital": {"type": "boolean"},
    },
    "required": ["name", "country", "population_millions", "is_capital"],
    "additionalProperties": False,
}
ASK: list[Any] = [{"role": "user", "content": "Describe Paris as JSON."}]


def test_json_schema_output_validates_for_20_seeds(tools_client: openai.OpenAI) -> None:
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY, "strict": True},
    }
    responses = chat_for_seeds(tools_client, 20, messages=ASK, response_format=response_format, max_tokens=70)
    assert len(responses) == 20
    for response in responses:
        assert response.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(response.choices[0].message.content or ""), CITY)


def test_json_object_output_is_an_object(tools_client: openai.OpenAI) -> None:
    response = tools_client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Give me a JSON object with a key a set to 1."}],
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0,
    )
    assert isinstance(json.loads(response.choices[0].message.content or ""), dict)


def test_streamed_json_schema_output_validates(tools_client: openai.OpenAI) -> None:
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in tools_client.chat.completions.create(
            model=QWEN, messages=ASK, response_format=response_format, seed=3, max_tokens=80, stream=True
        )
        if chunk.choices
    )
    jsonschema.validate(json.loads(text), CITY)


OPEN_CITY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "location": {
            "type": "object",
            "properties": {"country": {"type": "string", "maxLength": 20}},
            "required": ["country"],
        },
    },
    "required": ["name", "location"],
}
"""No additionalProperties anywhere: `strict` closes both objects."""


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every object's undeclared properties forbidden, for jsonschema to check."""
    properties = {
        key: _closed(value) if value.get("type") == "object" else value
        for key, value in schema["properties"].items()
    }
    return {**schema, "properties": properties, "additionalProperties": False}


def test_strict_json_schema_output_has_no_undeclared_keys(tools_client: openai.OpenAI) -> None:
    """Asked for more fields than the schema declares, a model adds them if the grammar lets it."""
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": OPEN_CITY, "strict": True},
    }
    ask_more: list[Any] = [
        {
            "role": "user",
            "content": "Describe Paris as JSON: its name, population, mayor and landmarks, and a "
            "location with its country, region, latitude and longitude.",
        }
    ]
    responses = chat_for_seeds(
        tools_client, 10, messages=ask_more, response_format=response_format, max_tokens=120
    )
    for response in responses:
        assert response.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(response.choices[0].message.content or ""), _closed(OPEN_CITY))


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "yaml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}},
    ],
)
def test_bad_response_format_is_400(tools: Server, response_format: dict[str, Any]) -> None:
    response = httpx.post(
        f"{tools.url}/v1/chat/completions",
        json={"model": QWEN, "messages": ASK, "response_format": response_format},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "response_format"
