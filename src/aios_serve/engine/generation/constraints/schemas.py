"""Closing JSON schemas: objects that leave `additionalProperties` unset allow only the properties
they declare, as vLLM's default grammar backend (xgrammar) reads them.

llguidance (1.9) follows JSON Schema here (undeclared properties are allowed) and has no option
to change that, so the schema itself is rewritten before it is compiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
"""The arguments of a function that takes none: `{}` only."""

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
"""Keywords whose value maps names to subschemas."""
_SCHEMA_LISTS = ("prefixItems",)
"""Keywords whose value lists subschemas that each describe their own value."""
_ALTERNATIVES = ("anyOf", "oneOf")
_SCHEMA_VALUES = ("items", "additionalItems", "additionalProperties")
_OPENNESS = ("additionalProperties", "unevaluatedProperties")
_COMBINED = ("allOf", "anyOf", "oneOf", "$ref")
"""Keywords that add constraints from elsewhere: an object with them is left as written, since
closing it would forbid the properties the other schemas declare."""


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    return "properties" in schema or kind == "object" or (isinstance(kind, list) and "object" in kind)


def closed_schema(schema: Any) -> Any:
    """A copy of `schema` in which every object schema without `additionalProperties` (or
    `unevaluatedProperties`) gets `additionalProperties: false`, down through properties, items,
    `$defs` and `anyOf`/`oneOf` alternatives. `allOf` members and `not` are left as written."""
    if isinstance(schema, list):
        return [closed_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    closed: dict[str, Any] = dict(schema)
    for key in _SCHEMA_MAPS:
        value = closed.get(key)
        if isinstance(value, Mapping):
            closed[key] = {name: closed_schema(sub) for name, sub in value.items()}
    for key in (*_SCHEMA_LISTS, *_SCHEMA_VALUES):
        if key in closed:
            closed[key] = closed_schema(closed[key])
    if "properties" not in closed:  # alternatives that refine declared properties stay open
        for key in _ALTERNATIVES:
            if isinstance(closed.get(key), list):
                closed[key] = closed_schema(closed[key])
    combined = any(key in closed for key in _COMBINED)
    if _is_object_schema(closed) and not combined and not any(key in closed for key in _OPENNESS):
        closed["additionalProperties"] = False
    return closed
