"""Constrained decoding: grammars compiled from JSON schemas and tool definitions, applied to
each sequence's logits as a token mask (llguidance)."""

from __future__ import annotations

from aios_serve.engine.errors import GrammarError
from aios_serve.engine.generation.constraints.grammars import (
    json_object_grammar,
    json_schema_grammar,
    tool_call_grammar,
)
from aios_serve.engine.generation.constraints.matcher import (
    CompiledGrammar,
    ConstraintVocab,
    TokenConstraint,
)

__all__ = [
    "CompiledGrammar",
    "ConstraintVocab",
    "GrammarError",
    "TokenConstraint",
    "json_object_grammar",
    "json_schema_grammar",
    "tool_call_grammar",
]
