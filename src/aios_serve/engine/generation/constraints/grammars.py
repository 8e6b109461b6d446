"""Lark grammars (llguidance dialect) for tool calls and structured outputs.

JSON parts are embedded with llguidance's `%json {schema}` rule, so strings, numbers, enums,
required properties and nesting follow the schema while the surrounding text stays fixed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aios_serve.engine.errors import GrammarError
from aios_serve.engine.generation.constraints.schemas import EMPTY_OBJECT, closed_schema

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _lark_string(text: str) -> str:
    """A Lark string literal (JSON escaping is a valid Lark literal)."""
    return json.dumps(text)


JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""One JSON layout (`{"a": 1, "b": [2, 3]}`, as json.dumps writes it and as models were trained
on): no runs of whitespace for a small model to loop in."""


def _json_rule(schema: Mapping[str, Any]) -> str:
    with_layout = {**schema, "x-guidance": {**JSON_LAYOUT, **schema.get("x-guidance", {})}}
    try:
        return "%json " + json.dumps(with_layout, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise GrammarError(f"the schema is not JSON: {exc}") from exc


def function_call_schema(name: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The object a call to one function is: its name and arguments matching its parameters,
    closed (no property they do not declare; `{}` for a function with none)."""
    arguments = closed_schema(parameters) if parameters else EMPTY_OBJECT
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_call_grammar(
    functions: Sequence[tuple[str, Mapping[str, Any] | None]],
    *,
    wrapped: bool = True,
    parallel: bool = False,
) -> str:
    """One call to one of `functions` ((name, parameters schema) pairs), or with `parallel` one
    or more calls.

    `wrapped` puts each call's JSON inside Qwen/Hermes' `<tool_call>\\n...\\n</tool_call>` tags
    (several blocks one per line, as the model's chat template writes them); otherwise the call is
    bare JSON, and several calls a JSON list of them.

    The output may end (EOS) right after every complete block and nowhere else, and blocks are
    separated by exactly one newline (tests/unit/test_constraints.py checks both on the Qwen
    vocabulary). Parallel calls are neither capped nor kept distinct: a cap would be a guess at
    how many calls a request needs (the weather in six cities is six calls), and "unlike every
    earlier block" is no context-free rule, so no grammar engine (llguidance, xgrammar) can
    express it; masking, token by token, whatever would complete a duplicate can
    leave no allowed token (once a closed schema's last value is written, only the closing braces
    are). An answer that repeats itself into `max_tokens` keeps its whole calls and ends with
    finish_reason `length` (api/chat/tools.py).
    """
    if not functions:
        raise GrammarError("no functions to call")
    options = [function_call_schema(name, params) for name, params in functions]
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if wrapped:
        block = f"{_lark_string(TOOL_CALL_OPEN + chr(10))} call {_lark_string(chr(10) + TOOL_CALL_CLOSE)}"
        start = f"block ({_lark_string(chr(10))} block)*" if parallel else "block"
        rules = f"start: {start}\nblock: {block}\n"
    else:
        start = 'call | "[" call (", " call)* "]"' if parallel else "call"
        rules = f"start: {start}\n"
    return f"{rules}call: {_json_rule(schema)}\n"


def json_schema_grammar(schema: Mapping[str, Any], *, closed: bool = False) -> str:
    """Output that is one JSON value valid against `schema`; `closed` (for `strict` schemas)
    forbids the properties an object does not declare unless it sets `additionalProperties`."""
    if not isinstance(schema, Mapping):
        raise GrammarError("the JSON schema must be an object")
    return f"start: value\nvalue: {_json_rule(closed_schema(schema) if closed else schema)}\n"


def json_object_grammar() -> str:
    """Output that is any one JSON object (`response_format: json_object`)."""
    return json_schema_grammar(_ANY_OBJECT)
