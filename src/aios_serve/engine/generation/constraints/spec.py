"""A request's output constraint as plain data (picklable, engine-neutral)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aios_serve.engine.generation.constraints.grammars import (
    json_object_grammar,
    json_schema_grammar,
    tool_call_grammar,
)


@dataclass(frozen=True)
class OutputConstraint:
    """What a request's output must match, as data; each engine compiles it its own way."""

    kind: Literal["json_object", "json_schema", "tool_calls"]
    schema: Mapping[str, Any] | None = None
    """json_schema: the schema (`strict` ones are closed by the engine when `closed`)."""
    closed: bool = False
    functions: tuple[tuple[str, Mapping[str, Any] | None], ...] = ()
    """tool_calls: (name, parameters schema) of each function that may be called."""
    wrapped: bool = False
    """tool_calls: each call inside `<tool_call>\\n...\\n</tool_call>` tags (else bare JSON)."""
    parallel: bool = False
    """tool_calls: one or more calls (else exactly one)."""

    def lark(self) -> str:
        """The grammar in llguidance's Lark dialect (raises GrammarError)."""
        if self.kind == "json_object":
            return json_object_grammar()
        if self.kind == "json_schema":
            return json_schema_grammar(self.schema or {}, closed=self.closed)
        return tool_call_grammar(self.functions, wrapped=self.wrapped, parallel=self.parallel)
