"""Tool-call and reasoning parsers: whole outputs and streams cut at every size, on texts the
real Qwen tokenizer splits into tokens (so tags arrive split the way a model sends them)."""

from __future__ import annotations

import json
import re

import pytest

from aios_serve.api.chat.reasoning import ReasoningStreamParser, prompt_opens_thinking, split_reasoning
from aios_serve.api.chat.structured import ChoiceStreamer, OutputPlan, output_message
from aios_serve.api.chat.tools import ToolCallStreamParser, parse_tool_calls
from aios_serve.engine.generation import OutputConstraint
from tests.unit.vocab import GgufVocab, gguf_vocab

NAMES = {"get_weather", "get_time"}
ARGS = '{"location": "Paris", "unit": "celsius"}'
CALL = f'<tool_call>\n{{"name": "get_weather", "arguments": {ARGS}}}\n</tool_call>'


@pytest.fixture(scope="module")
def qwen() -> GgufVocab:
    return gguf_vocab("qwen2.5-coder-0.5b-instruct")[0]


def token_pieces(vocab: GgufVocab, text: str) -> list[str]:
    pieces = [vocab.detokenize([t]) for t in vocab.tokenize(text)]
    assert "".join(pieces) == text
    return pieces


def stream(pieces: list[str], names: set[str] | None = NAMES) -> tuple[str, list[dict[str, object]]]:
    """Run the stream parser; (content, calls reassembled from deltas as OpenAI clients do)."""
    parser = ToolCallStreamParser(names)
    content, calls = "", {}  # type: ignore[var-annotated]
    events = [parser.feed(p) for p in pieces] + [parser.finish()]
    for event in events:
        content += event.content
        for delta in event.tool_calls:
            index = delta["index"]
            if "id" in delta:
                assert index not in calls and delta["type"] == "function"
                assert delta["function"]["arguments"] == ""
                calls[index] = {"id": delta["id"], "name": delta["function"]["name"], "arguments": ""}
            else:
                assert set(delta) == {"index", "function"}
            calls[index]["arguments"] += delta["function"].get("arguments", "")
    return content, [calls[i] for i in sorted(calls)]


def test_qwen_tool_call_block_is_parsed() -> None:
    content, calls = parse_tool_calls(CALL, NAMES)
    assert content is None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", json.loads(ARGS))]
    assert re.fullmatch(r"call_[0-9a-f]{24}", calls[0].id)
    assert calls[0].as_openai()["function"]["arguments"] == ARGS


def test_bare_json_call_is_parsed() -> None:
    content, calls = parse_tool_calls('  {"name": "get_time", "arguments": {"tz": "UTC"}}\n', NAMES)
    assert content is None and calls[0].name == "get_time" and json.loads(calls[0].arguments) == {"tz": "UTC"}
    _, listed = parse_tool_calls('[{"name": "get_time", "parameters": {"tz": "UTC"}}]', NAMES)
    assert [c.name for c in listed] == ["get_time"]
    fenced = '```json\n{\n  "name": "get_time",\n  "arguments": {\n    "tz": "UTC"\n  }\n}\n```'
    _, calls = parse_tool_calls(fenced, NAMES)
    assert calls[0].name == "get_time" and json.loads(calls[0].arguments) == {"tz": "UTC"}


@pytest.mark.parametrize(
    "text",
    [
        "The weather in Paris is sunny.",
        '{"answer": 42}',  # JSON, but not a call
        '<tool_call>\n{"name": "get_news", "arguments": {}}\n</tool_call>',  # not an offered tool
        "<tool_call>\n{not json}\n</tool_call>",
        '<tool_call>\n{"name": "get_weather", "arguments": "[1"}\n</tool_call>',
    ],
)
def test_text_that_is_not_a_valid_call_stays_content(text: str) -> None:
    assert parse_tool_calls(text, NAMES) == (text, [])


def test_text_around_calls_stays_content_and_several_calls_are_parsed() -> None:
    second = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>'
    content, calls = parse_tool_calls(f"Let me check.\n{CALL}\n{second}", NAMES)
    assert content == "Let me check.\n\n"
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2


def test_arguments_given_as_a_json_string_are_accepted() -> None:
    text = '<tool_call>{"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}</tool_call>'
    _, calls = parse_tool_calls(text, NAMES)
    assert json.loads(calls[0].arguments) == {"tz": "UTC"}


@pytest.mark.parametrize("prefix", ["", "Checking the weather.\n"])
def test_streamed_deltas_reassemble_into_the_whole_output_parse(qwen: GgufVocab, prefix: str) -> None:
    text = prefix + CALL
    whole_content, whole_calls = parse_tool_calls(text, NAMES)
    for pieces in (token_pieces(qwen, text), list(text), [text]):
        content, calls = stream(pieces)
        assert (content or None) == whole_content
        assert [(c["name"], c["arguments"]) for c in calls] == [(c.name, c.arguments) for c in whole_calls]


def test_arguments_stream_in_several_fragments(qwen: GgufVocab) -> None:
    parser = ToolCallStreamParser(NAMES)
    deltas = [d for p in token_pieces(qwen, CALL) for d in parser.feed(p).tool_calls]
    deltas += parser.finish().tool_calls
    assert "id" in deltas[0] and deltas[0]["function"]["name"] == "get_weather"
    assert len(deltas) > 5


@pytest.mark.parametrize(
    "text",
    [
        "Plain answer, no tools.",
        '<tool_call>\n{"name": "get_news", "arguments": {}}\n</tool_call>',
        '{"name": "get_time", "arguments": {"tz": "UTC"}}',
        '```json\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n```',
        "```python\nprint(1)\n```",
        "a < b and <tool but not a call",
    ],
)
def test_stream_and_whole_parse_agree(qwen: GgufVocab, text: str) -> None:
    whole_content, whole_calls = parse_tool_calls(text, NAMES)
    content, calls = stream(token_pieces(qwen, text))
    assert (content or None) == whole_content
    assert [c["name"] for c in calls] == [c.name for c in whole_calls]


# --- blocks cut by max_tokens -------------------------------------------------------------

SECOND = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>'
TWO_CALLS = f"{CALL}\n{SECOND}"


def cuts(text: str) -> list[str]:
    """`text` cut after each character of its last block from its open tag on (as max_tokens may;
    Qwen writes `<tool_call>` as one token)."""
    start = text.rindex("<tool_call>") + len("<tool_call>")
    return [text[:end] for end in range(start, len(text))]


def test_a_cut_block_is_never_content(qwen: GgufVocab) -> None:
    """Cut anywhere in the second block: the first call whole, no markup in content, and the
    stream agrees with the whole parse."""
    first = parse_tool_calls(CALL, NAMES)[1][0]
    for text in cuts(TWO_CALLS):
        content, calls = parse_tool_calls(text, NAMES)
        assert content is None, (text, content)
        assert (calls[0].name, calls[0].arguments) == (first.name, first.arguments)
        streamed_content, streamed = stream(token_pieces(qwen, text))
        assert "<tool_call" not in streamed_content and not streamed_content.strip(), text
        assert [(c["name"], c["arguments"]) for c in streamed] == [(c.name, c.arguments) for c in calls]


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ('<tool_call>\n{"name": "get_ti', None),  # no name yet: dropped
        ('<tool_call>\n{"name": "get_time", "arguments": ', None),  # no argument written: dropped
        ('<tool_call>\n{"name": "get_time", "arguments": {"tz": "CE', '{"tz": "CE'),
        ('<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}', '{"tz": "CET"'),
        ('<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_', '{"tz": "CET"}'),
    ],
)
def test_a_cut_call_keeps_what_was_written_of_its_arguments(text: str, arguments: str | None) -> None:
    """As OpenAI returns a call cut by max_tokens: its name and its arguments up to the cut (the
    stream has sent them already); a block cut before that is dropped. JSON that is whole is a
    whole call even if its close tag was cut."""
    output = f"Checking.\n{text}"
    expected = [] if arguments is None else [("get_time", arguments)]
    content, calls = parse_tool_calls(output, NAMES)
    assert (content, [(c.name, c.arguments) for c in calls]) == ("Checking.\n", expected)
    for pieces in (list(output), [output]):
        streamed_content, streamed = stream(pieces)
        assert streamed_content == "Checking.\n"
        assert [(c["name"], c["arguments"]) for c in streamed] == expected


def test_a_whole_block_that_is_not_a_call_stays_content_even_at_the_end() -> None:
    text = "<tool_call>\n{not json}\n</tool_call>"
    assert parse_tool_calls(text, NAMES) == (text, [])
    assert stream(list(text)) == (text, [])


REQUIRED = OutputPlan(
    tool_names=frozenset(NAMES),
    constraint=OutputConstraint("tool_calls", functions=(("get_weather", None), ("get_time", None))),
)


@pytest.mark.parametrize("text", [TWO_CALLS[:-20], TWO_CALLS[: len(CALL) + 5], CALL[:30], CALL[:5]])
def test_a_constrained_answer_has_no_content_and_a_cut_one_ends_with_length(text: str) -> None:
    """Under `required` (or a named function) nothing is content, whole or streamed, and the
    finish reason stays `length` when max_tokens cut the output after complete calls."""
    message, finish_reason = output_message(REQUIRED, text, "length")
    assert message["content"] is None and finish_reason == "length"
    streamer = ChoiceStreamer(REQUIRED)
    deltas = [streamer.feed(piece) for piece in text] + [streamer.feed("", final=True)]
    assert not any("content" in delta for delta in deltas)
    assert streamer.finish_reason("length") == "length"
    whole, _ = output_message(REQUIRED, TWO_CALLS, "stop")
    assert whole["content"] is None and len(whole["tool_calls"]) == 2


# --- reasoning ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "opened", "expected"),
    [
        ("<think>\nStep one.\n</think>\n\nParis.", False, ("\nStep one.\n", "\n\nParis.")),
        ("Step one.</think>Paris.", True, ("Step one.", "Paris.")),
        ("<think>still thinking", False, ("still thinking", None)),
        ("still thinking", True, ("still thinking", None)),
        ("No thinking here.", False, (None, "No thinking here.")),
    ],
)
def test_reasoning_is_split_from_content(
    qwen: GgufVocab, text: str, opened: bool, expected: tuple[str | None, str | None]
) -> None:
    assert split_reasoning(text, opened) == expected
    for pieces in (token_pieces(qwen, text), list(text)):
        parser = ReasoningStreamParser(opened)
        deltas = [parser.feed(p) for p in pieces] + [parser.finish()]
        reasoning = "".join(d.reasoning for d in deltas)
        content = "".join(d.content for d in deltas)
        assert (reasoning or None, content or None) == expected


def test_prompt_that_opens_a_think_block_is_detected() -> None:
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n")
