"""Tool calling against a real server on Qwen2.5-Coder-0.5B with the openai client: required,
named, none and auto choices, a whole tool loop, streamed calls, 400s, and LangChain."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.configs import QWEN, chat_for_seeds
from tests.e2e.server import Server

WEATHER_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city name", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": WEATHER_PARAMS,
    },
}
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 40}},
            "required": ["timezone"],
        },
    },
}
PARIS: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]


def test_required_calls_the_tool_with_valid_arguments_for_20_seeds(tools_client: openai.OpenAI) -> None:
    """20 requests at temperature 1, seeds 0..19, sent together so the engine batches them; one
    call each (left free, some seeds ask for the weather in both units)."""
    responses = chat_for_seeds(
        tools_client,
        20,
        messages=PARIS,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
    )
    choices = [response.choices[0] for response in responses]
    assert len(choices) == 20
    for choice in choices:
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        assert call.type == "function" and call.function.name == "get_weather"
        assert call.id.startswith("call_") and len(call.id) == 29
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMS)


def test_named_choice_calls_that_function(tools_client: openai.OpenAI) -> None:
    response = tools_client.chat.completions.create(
        model=QWEN,
        messages=PARIS,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=60,
    )
    choice = response.choices[0]
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_time"
    assert isinstance(json.loads(call.function.arguments)["timezone"], str)
    assert choice.finish_reason == "stop"  # as OpenAI answers a named tool_choice


def test_none_never_calls_a_tool(tools_client: openai.OpenAI) -> None:
    response = tools_client.chat.completions.create(
        model=QWEN, messages=PARIS, tools=[WEATHER], tool_choice="none", seed=1, n=4, max_tokens=24
    )
    for choice in response.choices:
        assert choice.message.tool_calls == [] and choice.message.content
        assert choice.finish_reason != "tool_calls"


def test_auto_calls_the_weather_tool_for_paris(tools_client: openai.OpenAI) -> None:
    response = tools_client.chat.completions.create(
        model=QWEN, messages=PARIS, tools=[WEATHER], temperature=0, max_tokens=80
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()


def test_two_turn_tool_loop(tools: Server, tools_client: openai.OpenAI) -> None:
    first = tools_client.chat.completions.create(
        model=QWEN, messages=PARIS, tools=[WEATHER], temperature=0, max_tokens=80
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    result = {"city": "Paris", "temperature": 31, "unit": "celsius", "sky": "sunny"}
    messages: list[Any] = [
        *PARIS,
        message.model_dump(exclude_none=True, exclude={"reasoning", "reasoning_content"}),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]
    rendered = httpx.post(
        f"{tools.url}/tokenize",
        json={"model": QWEN, "messages": messages, "tools": [WEATHER], "return_token_strs": True},
        timeout=60,
    ).json()
    prompt = "".join(rendered["token_strs"])
    last_turns = prompt[prompt.rindex("<tool_call>") :]  # the assistant's call, then the result
    assert "get_weather" in last_turns and "Paris" in last_turns
    assert "<tool_response>" in last_turns and "31" in last_turns
    # Left free, a 0.5B model often calls the tool again: a working turn, but not an answer.
    free = tools_client.chat.completions.create(
        model=QWEN, messages=messages, tools=[WEATHER], temperature=0, max_tokens=40
    )
    assert free.choices[0].message.content or free.choices[0].message.tool_calls
    # Asked to answer (tool_choice none, as clients do once they hold the result), it answers
    # from the tool's result.
    second = tools_client.chat.completions.create(
        model=QWEN, messages=messages, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=40
    )
    answer = second.choices[0]
    assert answer.finish_reason == "stop" and not answer.message.tool_calls
    content = (answer.message.content or "").lower()
    assert "31" in content or "sunny" in content, content


def test_streamed_deltas_reassemble_into_the_same_call(tools_client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": QWEN,
        "messages": PARIS,
        "tools": [WEATHER],
        "tool_choice": "required",
        "seed": 7,
        "max_tokens": 60,
    }
    whole = tools_client.chat.completions.create(**kwargs).choices[0]
    calls: dict[int, dict[str, str]] = {}
    finish = None
    first_deltas: list[Any] = []
    for chunk in tools_client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                if delta.index not in calls:
                    first_deltas.append(delta)
                    calls[delta.index] = {
                        "id": delta.id or "",
                        "name": delta.function.name or "",
                        "arguments": "",
                    }
                calls[delta.index]["arguments"] += (delta.function and delta.function.arguments) or ""
    (expected,) = whole.message.tool_calls or []
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (expected.function.name, expected.function.arguments)
    ]
    assert first_deltas[0].id.startswith("call_") and first_deltas[0].type == "function"
    assert finish == "tool_calls"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER] * 129}, "tools"),
    ],
)
def test_bad_tool_requests_are_400(tools: Server, body: dict[str, Any], param: str) -> None:
    response = httpx.post(
        f"{tools.url}/v1/chat/completions", json={"model": QWEN, "messages": PARIS, **body}, timeout=60
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def langchain_chat(tools: Server, max_completion_tokens: int) -> Any:
    """LangChain's OpenAI chat model on the shared Qwen server, greedy."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    return ChatOpenAI(
        model=QWEN,
        base_url=tools.v1,
        api_key=SecretStr("unused"),
        temperature=0,
        max_completion_tokens=max_completion_tokens,
    )


def test_langchain_bind_tools(tools: Server) -> None:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"Sunny in {city}"

    llm = langchain_chat(tools, max_completion_tokens=60)
    reply = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What's the weather in Paris?")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert "paris" in reply.tool_calls[0]["args"]["city"].lower()  # type: ignore[attr-defined]


@pytest.mark.parametrize("parameters", [{"type": "object", "properties": {}}, None])
def test_a_tool_without_parameters_is_called_with_empty_arguments(
    tools_client: openai.OpenAI, parameters: dict[str, Any] | None
) -> None:
    """Left open, the model writes the schema itself into the arguments; closed, only `{}` fits.
    (At temperature 1 some seeds call the tool twice: `required` allows parallel calls.)"""
    function = {"name": "get_current_time", "description": "Get the current time"}
    tool: Any = {"type": "function", "function": {**function, "parameters": parameters}}
    if parameters is None:
        del tool["function"]["parameters"]
    responses = chat_for_seeds(
        tools_client,
        8,
        messages=[{"role": "user", "content": "What time is it?"}],
        tools=[tool],
        tool_choice="required",
        max_tokens=40,
    )
    for response in responses:
        calls = response.choices[0].message.tool_calls or []
        assert calls and {(c.function.name, c.function.arguments) for c in calls} == {
            ("get_current_time", "{}")
        }


def test_tool_arguments_have_no_undeclared_property(tools_client: openai.OpenAI) -> None:
    """TIME leaves additionalProperties unset; asked for more than it declares, the model would add
    keys if the grammar let it."""
    ask_more: list[Any] = [
        {
            "role": "user",
            "content": "What time is it in Tokyo? Call get_time with timezone, plus format set to "
            "24h, locale set to ja-JP and include_seconds set to true.",
        }
    ]
    closed = {**TIME["function"]["parameters"], "additionalProperties": False}
    responses = chat_for_seeds(
        tools_client, 10, messages=ask_more, tools=[TIME], tool_choice="required", max_tokens=80
    )
    for response in responses:
        calls = response.choices[0].message.tool_calls or []
        if response.choices[0].finish_reason == "length":  # a cut last call has partial arguments
            calls = calls[:-1]
        for call in calls:
            jsonschema.validate(json.loads(call.function.arguments), closed)


TWO_THINGS: list[Any] = [
    {"role": "user", "content": "What's the weather in Paris, and what time is it in Tokyo?"}
]


REQUIRED_TWO_THINGS: dict[str, Any] = {
    "model": QWEN,
    "messages": TWO_THINGS,
    "tools": [WEATHER, TIME],
    "tool_choice": "required",
    "temperature": 0,
}
"""Greedy, the model calls both tools."""


def test_required_allows_parallel_calls(tools_client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {**REQUIRED_TWO_THINGS, "max_tokens": 120}
    choice = tools_client.chat.completions.create(**kwargs).choices[0]
    calls = choice.message.tool_calls or []
    assert sorted(call.function.name for call in calls) == ["get_time", "get_weather"], calls
    assert choice.finish_reason == "tool_calls"
    assert len({call.id for call in calls}) == 2
    schemas = {"get_weather": WEATHER_PARAMS, "get_time": TIME["function"]["parameters"]}
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    streamed: dict[int, list[str]] = {}
    for chunk in tools_client.chat.completions.create(**kwargs, stream=True):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = streamed.setdefault(delta.index, ["", ""])
            entry[0] += (delta.function and delta.function.name) or ""
            entry[1] += (delta.function and delta.function.arguments) or ""
    assert [tuple(streamed[i]) for i in sorted(streamed)] == [
        (call.function.name, call.function.arguments) for call in calls
    ]


def valid_call(name: str, arguments: str) -> bool:
    """A whole call to WEATHER or TIME: its arguments are JSON that fits the function's schema."""
    schemas = {"get_weather": WEATHER_PARAMS, "get_time": TIME["function"]["parameters"]}
    try:
        jsonschema.validate(json.loads(arguments), schemas[name])
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


THREE_CITIES: list[Any] = [{"role": "user", "content": "What's the weather in Paris, London and Tokyo?"}]


@pytest.mark.parametrize(
    ("messages", "max_tokens"),
    [(PARIS, 48), (THREE_CITIES, 64)],
    ids=["paris", "three-cities"],
)
def test_required_with_parallel_calls_ends_with_whole_calls_for_20_seeds(
    tools_client: openai.OpenAI, messages: list[Any], max_tokens: int
) -> None:
    """20 seeds at temperature 1, parallel calls allowed. One call is 30-40 tokens, so max_tokens
    cuts any answer inside the block it goes on to: asked about Paris, a seed may repeat the call
    until max_tokens (seen on llama.cpp: 1 in 20 wrote 5 calls); asked about three cities, about 8
    in 20 write two calls and are cut at the third's open tag. The cut block is no content; the
    whole calls before it stay."""
    responses = chat_for_seeds(
        tools_client, 20, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=max_tokens
    )
    cut = 0
    for response in responses:
        choice = response.choices[0]
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        assert choice.message.content is None, choice
        assert calls and valid_call(*calls[0]), choice
        if choice.finish_reason == "length":  # the last call may be cut: its arguments are partial
            assert response.usage.completion_tokens == max_tokens
            assert all(valid_call(*call) for call in calls[:-1]), choice
            cut += 1
        else:
            assert choice.finish_reason == "tool_calls"
            assert all(valid_call(*call) for call in calls), choice
    if messages is THREE_CITIES:
        assert cut, "no seed ran into max_tokens: the test no longer cuts a block"


def test_a_block_cut_by_max_tokens_is_never_content(tools_client: openai.OpenAI) -> None:
    """Greedy, the model calls both tools; max_tokens cuts it inside the first block, early in the
    second (before its name is whole) and inside the second's arguments. Whole calls before the
    cut are returned; a cut call keeps the arguments written so far, streamed or not; no content."""
    kwargs = REQUIRED_TWO_THINGS
    full = tools_client.chat.completions.create(**kwargs, max_tokens=120, logprobs=True).choices[0]
    expected = [(c.function.name, c.function.arguments) for c in full.message.tool_calls or []]
    assert len(expected) == 2 and full.finish_reason == "tool_calls", full
    # the first block's length in tokens (a grammar may spell the tags in several tokens)
    tokens = [entry.token for entry in (full.logprobs and full.logprobs.content) or []]
    first_end = next(n for n in range(len(tokens) + 1) if "</tool_call>" in "".join(tokens[:n]))
    cut_calls = 0
    for max_tokens, whole in ((8, 0), (first_end + 4, 1), (first_end + 16, 1)):
        cut = tools_client.chat.completions.create(**kwargs, max_tokens=max_tokens).choices[0]
        assert cut.finish_reason == "length" and cut.message.content is None, cut
        calls = [(c.function.name, c.function.arguments) for c in cut.message.tool_calls or []]
        assert calls[:whole] == expected[:whole] and len(calls) <= whole + 1, (max_tokens, calls)
        if len(calls) > whole:  # the cut call: its name, and its arguments up to the cut
            name, arguments = calls[whole]
            assert name == expected[whole][0] and expected[whole][1].startswith(arguments), calls
            assert not valid_call(name, arguments)
            cut_calls += 1
        streamed: dict[int, list[str]] = {}
        content, finish = "", None
        for chunk in tools_client.chat.completions.create(**kwargs, max_tokens=max_tokens, stream=True):
            for choice in chunk.choices:
                content += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    entry = streamed.setdefault(delta.index, ["", ""])
                    entry[0] += (delta.function and delta.function.name) or ""
                    entry[1] += (delta.function and delta.function.arguments) or ""
        assert "<tool_call" not in content and not content.strip(), content
        assert finish == "length"
        assert [tuple(streamed[i]) for i in sorted(streamed)] == calls
    assert cut_calls == 1  # the last cut is in the second call's arguments


def test_required_without_parallel_calls_makes_exactly_one(tools_client: openai.OpenAI) -> None:
    response = tools_client.chat.completions.create(
        model=QWEN,
        messages=TWO_THINGS,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=120,
    )
    choice = response.choices[0]
    assert len(choice.message.tool_calls or []) == 1 and choice.finish_reason == "tool_calls"


def test_langchain_tool_without_arguments(tools: Server) -> None:
    from langchain_core.tools import tool

    @tool
    def get_current_time() -> str:
        """Get the current time."""
        return "12:00"

    llm = langchain_chat(tools, max_completion_tokens=40)
    reply = llm.bind_tools([get_current_time], tool_choice="required").invoke("What time is it?")
    assert [(call["name"], call["args"]) for call in reply.tool_calls] == [("get_current_time", {})]  # type: ignore[attr-defined]
