"""Grammar constraints on the real Qwen2.5 vocabulary (151k tokens): the mask admits exactly
the outputs the schema allows, and random walks through the mask always end in valid JSON."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from aios_serve.api.chat.tools import parse_tool_calls
from aios_serve.engine.generation.constraints import (
    ConstraintVocab,
    GrammarError,
    TokenConstraint,
    json_object_grammar,
    json_schema_grammar,
    tool_call_grammar,
)
from aios_serve.engine.generation.constraints.schemas import closed_schema
from tests.unit.vocab import GgufVocab, gguf_vocab

QWEN = "qwen2.5-coder-0.5b-instruct"

WEATHER = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location", "unit"],
    "additionalProperties": False,
}
ARGS = '{"location": "Paris", "unit": "celsius"}'
CALL = f'<tool_call>\n{{"name": "get_weather", "arguments": {ARGS}}}\n</tool_call>'
TIME = {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 10}}, "required": ["tz"]}


@pytest.fixture(scope="module")
def qwen() -> tuple[GgufVocab, ConstraintVocab]:
    return gguf_vocab(QWEN)


def run_text(constraint: TokenConstraint, vocab: GgufVocab, text: str) -> bool:
    """Feed `text`'s tokens through the mask; False at the first token the mask forbids."""
    for token in vocab.tokenize(text):
        if not constraint.allowed()[token]:
            return False
        assert constraint.accept(token)
    return True


def random_walk(constraint: TokenConstraint, vocab: GgufVocab, seed: int, limit: int = 400) -> str:
    """Sample masked random logits (short tokens favoured so strings end) until complete."""
    rng = np.random.default_rng(seed)
    lengths = np.array([len(vocab.piece(t)) for t in range(vocab.n_vocab)], dtype=np.float32)
    ids: list[int] = []
    for _ in range(limit):
        logits = (rng.standard_normal(vocab.n_vocab) * 3 - lengths * 2).astype(np.float32)
        constraint.mask(logits)
        token = int(np.argmax(logits))
        assert np.isfinite(logits[token])
        assert constraint.accept(token)
        if token in vocab.eog_ids:
            break
        ids.append(token)
        if constraint.is_complete:
            break
    assert constraint.is_accepting, "the walk did not complete"
    return vocab.detokenize(ids)


def test_tool_call_grammar_admits_a_valid_qwen_call(qwen: tuple[GgufVocab, ConstraintVocab]) -> None:
    vocab, cvocab = qwen
    grammar = cvocab.compile(tool_call_grammar([("get_weather", WEATHER), ("get_time", TIME)]))
    constraint = grammar.new_constraint()
    assert run_text(constraint, vocab, CALL)
    assert constraint.is_complete
    assert not constraint.allowed()[vocab.tokenize("Hello")[0]]


@pytest.mark.parametrize(
    "text",
    [
        "Sure, here it is",  # prose instead of a call
        '<tool_call>\n{"name": "get_news", "arguments": {}}\n</tool_call>',  # unknown function
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}',  # missing unit
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris", "unit": "kelvin"}}',  # enum
    ],
)
def test_tool_call_grammar_rejects_invalid_calls(qwen: tuple[GgufVocab, ConstraintVocab], text: str) -> None:
    vocab, cvocab = qwen
    grammar = cvocab.compile(tool_call_grammar([("get_weather", WEATHER), ("get_time", TIME)]))
    constraint = grammar.new_constraint()
    assert not run_text(constraint, vocab, text)


def test_named_function_grammar_allows_only_that_function(qwen: tuple[GgufVocab, ConstraintVocab]) -> None:
    vocab, cvocab = qwen
    grammar = cvocab.compile(tool_call_grammar([("get_time", TIME)]))
    text = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}'
    assert run_text(grammar.new_constraint(), vocab, text)
    assert not run_text(grammar.new_constraint(), vocab, '<tool_call>\n{"name": "get_weather"')


@pytest.mark.parametrize("seed", range(5))
def test_random_walks_through_the_tool_mask_are_valid_calls(
    qwen: tuple[GgufVocab, ConstraintVocab], seed: int
) -> None:
    vocab, cvocab = qwen
    grammar = cvocab.compile(tool_call_grammar([("get_weather", WEATHER), ("get_time", TIME)]))
    text = random_walk(grammar.new_constraint(), vocab, seed)
    content, calls = parse_tool_calls(text, {"get_weather", "get_time"})
    assert content is None and len(calls) == 1, text
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER if calls[0].name == "get_weather" else TIME)


@pytest.mark.parametrize("seed", range(5))
def test_random_walks_through_a_json_schema_mask_validate(
    qwen: tuple[GgufVocab, ConstraintVocab], seed: int
) -> None:
    vocab, cvocab = qwen
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "population": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        },
        "required": ["city", "population", "tags"],
        "additionalProperties": False,
    }
    text = random_walk(cvocab.compile(json_schema_grammar(schema)).new_constraint(), vocab, seed)
    jsonschema.validate(json.loads(text), schema)


def test_json_object_grammar_needs_an_object(qwen: tuple[GgufVocab, ConstraintVocab]) -> None:
    vocab, cvocab = qwen
    grammar = cvocab.compile(json_object_grammar())
    assert run_text(grammar.new_constraint(), vocab, '{"a": [1, 2, {"b": null}]}')
    assert not run_text(grammar.new_constraint(), vocab, "[1, 2]")
    assert not run_text(grammar.new_constraint(), vocab, "Here is JSON")


def test_mask_sets_forbidden_logits_to_minus_infinity(qwen: tuple[GgufVocab, ConstraintVocab]) -> None:
    vocab, cvocab = qwen
    constraint = cvocab.compile(json_object_grammar()).new_constraint()
    logits = np.zeros(vocab.n_vocab, dtype=np.float32)
    constraint.mask(logits)
    allowed = np.isfinite(logits)
    assert allowed[vocab.tokenize("{")[0]]
    assert not allowed[vocab.tokenize("[")[0]]
    assert not any(allowed[t] for t in vocab.eog_ids)  # nothing is complete yet
    assert not constraint.accept(vocab.tokenize("[")[0])


def test_a_bad_schema_is_a_grammar_error(qwen: tuple[GgufVocab, ConstraintVocab]) -> None:
    _, cvocab = qwen
    with pytest.raises(GrammarError):
        cvocab.compile(json_schema_grammar({"type": "no-such-type"}))


def test_parallel_tool_grammar_admits_several_blocks(qwen: tuple[GgufVocab, ConstraintVocab]) -> None:
    vocab, cvocab = qwen
    functions = [("get_weather", WEATHER), ("get_time", TIME)]
    second = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>'
    parallel = cvocab.compile(tool_call_grammar(functions, parallel=True)).new_constraint()
    assert run_text(parallel, vocab, f"{CALL}\n{second}")
    assert parallel.is_accepting
    single = cvocab.compile(tool_call_grammar(functions)).new_constraint()
    assert not run_text(single, vocab, f"{CALL}\n{second}")
    bare = cvocab.compile(tool_call_grammar(functions, wrapped=False, parallel=True)).new_constraint()
    assert run_text(bare, vocab, f'[{{"name": "get_weather", "arguments": {ARGS}}}, {second[12:-13]}]')
    assert bare.is_complete


@pytest.mark.parametrize("parallel", [True, False])
def test_end_of_generation_is_allowed_after_every_complete_block(
    qwen: tuple[GgufVocab, ConstraintVocab], parallel: bool
) -> None:
    """After each whole block the model may end; with parallel calls the only other choice is one
    newline, then the next block's open tag (no runs of newlines, no text between blocks)."""
    vocab, cvocab = qwen
    grammar = cvocab.compile(tool_call_grammar([("get_weather", WEATHER)], parallel=parallel))
    constraint = grammar.new_constraint()
    for block in range(3 if parallel else 1):
        if block:
            assert run_text(constraint, vocab, "\n")
            allowed = set(np.flatnonzero(constraint.allowed()).tolist())
            assert not allowed & set(vocab.eog_ids)  # a separator must be followed by a block
            assert {vocab.piece(t, special=True) for t in allowed} <= {b"<", b"<tool_call>"}
        assert run_text(constraint, vocab, CALL)
        allowed = set(np.flatnonzero(constraint.allowed()).tolist())
        newline = set(vocab.tokenize("\n")) if parallel else set()
        assert allowed == set(vocab.eog_ids) | newline
    assert constraint.is_complete != parallel


@pytest.mark.parametrize("parameters", [TIME, {"type": "object", "properties": {}}, None])
def test_tool_arguments_are_closed(qwen: tuple[GgufVocab, ConstraintVocab], parameters: dict | None) -> None:
    vocab, cvocab = qwen
    grammar = cvocab.compile(tool_call_grammar([("get_time", parameters)]))
    declared = '{"tz": "UTC"}' if parameters is TIME else "{}"
    call = '<tool_call>\n{"name": "get_time", "arguments": '
    assert run_text(grammar.new_constraint(), vocab, f"{call}{declared}}}\n</tool_call>")
    extra = '{"tz": "UTC", "format": "24h"}' if parameters is TIME else '{"type": "object"}'
    assert not run_text(grammar.new_constraint(), vocab, f"{call}{extra}}}")


def test_closed_json_schema_grammar_forbids_undeclared_keys(qwen: tuple[GgufVocab, ConstraintVocab]) -> None:
    vocab, cvocab = qwen
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "place": {"type": "object", "properties": {"x": {}}}},
    }
    nested_extra = '{"name": "a", "place": {"x": 1, "y": 2}}'
    assert run_text(cvocab.compile(json_schema_grammar(schema)).new_constraint(), vocab, nested_extra)
    closed = cvocab.compile(json_schema_grammar(schema, closed=True))
    assert not run_text(closed.new_constraint(), vocab, nested_extra)
    assert not run_text(closed.new_constraint(), vocab, '{"name": "a", "b": 1}')
    assert run_text(closed.new_constraint(), vocab, '{"name": "a", "place": {"x": 1}}')
    opened = cvocab.compile(json_schema_grammar({**schema, "additionalProperties": True}, closed=True))
    assert run_text(opened.new_constraint(), vocab, '{"b": 1}')


def test_closed_schema_leaves_set_and_combined_objects_alone() -> None:
    item = {"type": "object", "properties": {"a": {"type": "string"}}}
    schema = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": item},
            "free": {**item, "additionalProperties": {}},
        },
        "$defs": {"Item": item},
        "anyOf": [{"$ref": "#/$defs/Item"}],
        "allOf": [item],
    }
    closed = closed_schema({"type": ["object", "null"], "properties": {"x": schema}})
    assert closed["additionalProperties"] is False
    inner = closed["properties"]["x"]
    assert "additionalProperties" not in inner  # combined with allOf/anyOf
    assert inner["allOf"] == [item] and inner["anyOf"] == [{"$ref": "#/$defs/Item"}]
    assert inner["properties"]["items"]["items"]["additionalProperties"] is False
    assert inner["properties"]["free"]["additionalProperties"] == {}
    assert inner["$defs"]["Item"]["additionalProperties"] is False
    assert closed_schema({"anyOf": [item, {"type": "null"}]})["anyOf"][0]["additionalProperties"] is False
    refined = closed_schema({**item, "oneOf": [item]})  # alternatives that refine declared properties
    assert "additionalProperties" not in refined and refined["oneOf"] == [item]
    assert "additionalProperties" not in item  # the input is not changed
