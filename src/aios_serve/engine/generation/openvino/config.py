"""SamplingParams and OutputConstraint as OpenVINO GenAI `GenerationConfig`s, and what the
OpenVINO engine refuses.

What OpenVINO GenAI 2026.4 does differently (read in its sampler's source and measured):
- `logprobs`: only the chosen token's log-probability (any `logprobs > 1` acts as 1), from
  the raw logits. No alternatives, so `top_logprobs > 0` is refused; rank is unknown (reported 0).
- `presence_penalty` / `frequency_penalty`: moved toward zero (`logit -= p` when the logit is
  >= 0, else `logit += p`), which raises negative logits; OpenAI's are plain subtractions.
  Different semantics, so both are refused when non-zero.
- `repetition_penalty` is vLLM's rule (prompt and output tokens, positive logits divided, others
  multiplied), so it is passed as is. Teacher-forced against our sampler over llama.cpp (SmolLM2,
  20 prompts x 16 tokens, f32): 309-316/320 top-1 at 0.8-2.0, as 310/320 at 1.0; penalising
  only the output in our sampler instead gave 258/320.
- `ignore_eos` also disables `stop_token_ids`: the engine checks stop tokens itself.
- structured output is xgrammar; its JSON schemas allow any whitespace, in which a small model
  loops until `max_tokens` (SmolLM2 did for 20 seeds of a strict schema). JSON parts are therefore
  given as EBNF that xgrammar's own converter writes with one layout (", " and ": ", as
  json.dumps and our llguidance grammar).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from typing import Any

import openvino_genai as ov

from aios_serve.engine.generation.constraints.grammars import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    GrammarError,
    function_call_schema,
)
from aios_serve.engine.generation.constraints.schemas import closed_schema
from aios_serve.engine.generation.constraints.spec import OutputConstraint
from aios_serve.engine.generation.interface import UnsupportedParameter
from aios_serve.engine.generation.sampling import SamplingParams

ENGINE = "openvino"
GREEDY_BELOW = 1e-5

_SO = ov.StructuredOutputConfig


def request_constraint(params: SamplingParams) -> OutputConstraint | None:
    """The request's output constraint, or None."""
    return params.constraint


def unsupported(params: SamplingParams, n: int, max_sequences: int) -> UnsupportedParameter | None:
    """The first parameter this engine cannot honour, as the error to raise; None if all can."""
    if params.logit_bias:
        return UnsupportedParameter("logit_bias", ENGINE, "OpenVINO GenAI has no logit bias")
    if params.prompt_logprobs is not None:
        return UnsupportedParameter("prompt_logprobs", ENGINE, "OpenVINO GenAI scores no prompt tokens")
    if params.logprobs is not None and params.logprobs > 0:
        return UnsupportedParameter(
            "logprobs",
            ENGINE,
            "OpenVINO GenAI returns only the chosen token's log-probability (ask for 0 alternatives)",
        )
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(params, name):
            return UnsupportedParameter(
                name, ENGINE, "OpenVINO GenAI moves logits toward zero instead of subtracting (OpenAI's)"
            )
    if n > max_sequences:
        return UnsupportedParameter("n", ENGINE, f"at most {max_sequences} choices")
    return None


def _schema_json(schema: Mapping[str, Any]) -> str:
    try:
        return json.dumps(schema, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise GrammarError(f"the schema is not JSON: {exc}") from exc


JSON_SEPARATORS = (", ", ": ")


def json_ebnf(schema: Mapping[str, Any]) -> str:
    """The schema as xgrammar EBNF with one JSON layout (raises GrammarError)."""
    import xgrammar

    try:
        grammar = xgrammar.Grammar.from_json_schema(
            _schema_json(schema), any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=False
        )
    except (RuntimeError, ValueError) as exc:
        raise GrammarError(f"the schema cannot be compiled into a grammar: {exc}") from exc
    return _OPEN_REPEAT.sub(_open_repeat, str(grammar))


_OPEN_REPEAT = re.compile(r"\{(\d+), -1\}")
"""xgrammar 0.2's unbounded repetition `{m, -1}`, which OpenVINO's bundled parser rejects."""


def _open_repeat(match: re.Match[str]) -> str:
    least = int(match.group(1))
    return "*" if least == 0 else "+" if least == 1 else f"{{{least},}}"


def _json(schema: Mapping[str, Any]) -> ov.StructuredOutputConfig:
    return _SO(grammar=json_ebnf(schema))


def structured_output(constraint: OutputConstraint) -> ov.StructuredOutputConfig:
    """The constraint as xgrammar structures (raises GrammarError for a bad schema or tool list).

    tool_calls: wrapped, `<tool_call>\\n{call}\\n</tool_call>` blocks separated by "\\n" (one,
    or with `parallel` one or more); bare, one call object, or with `parallel` also a JSON list
    of calls. Each call is `{"name": <const>, "arguments": {...}}` against the function's closed
    parameters, as our llguidance grammar, with one JSON layout. xgrammar writes the tags as
    `tag ("\\n" tag)*`: the same language as `tool_call_grammar`, ending (EOS) after any complete
    block.
    """
    if constraint.kind == "json_object":
        return _json({"type": "object"})
    if constraint.kind == "json_schema":
        schema = constraint.schema or {}
        if not isinstance(schema, Mapping):
            raise GrammarError("the JSON schema must be an object")
        return _json(closed_schema(schema) if constraint.closed else schema)
    if not constraint.functions:
        raise GrammarError("no functions to call")
    calls = [function_call_schema(name, params) for name, params in constraint.functions]
    if constraint.wrapped:
        open_tag, close_tag = TOOL_CALL_OPEN + "\n", "\n" + TOOL_CALL_CLOSE
        tags = [_SO.Tag(open_tag, _SO.EBNF(json_ebnf(call)), close_tag) for call in calls]
        return _SO(
            compound_grammar=_SO.TagsWithSeparator(
                tags, "\n", at_least_one=True, stop_after_first=not constraint.parallel
            )
        )
    one: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if not constraint.parallel:
        return _json(one)
    return _json({"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]})


def validate_constraint(constraint: OutputConstraint) -> ov.StructuredOutputConfig:
    """Check the constraint as our grammar compiler does (llguidance, no vocabulary needed) and
    build its xgrammar structures; raises GrammarError. xgrammar itself compiles at
    `add_request`, where a failure fails the request with a GrammarError."""
    import llguidance

    grammar = llguidance.LLMatcher.grammar_from_lark(constraint.lark())
    message = llguidance.LLMatcher.validate_grammar(grammar, None)
    if message and not message.startswith("WARNING"):
        raise GrammarError(f"the schema cannot be compiled into a grammar: {message}")
    return structured_output(constraint)


def generation_config(
    params: SamplingParams,
    *,
    choice_index: int,
    max_new_tokens: int,
    eog_ids: list[int],
    structured: ov.StructuredOutputConfig | None,
) -> ov.GenerationConfig:
    """One choice's GenerationConfig (each choice is its own OpenVINO request, seeded apart)."""
    config = ov.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.min_new_tokens = min(params.min_tokens, max_new_tokens)
    config.ignore_eos = params.ignore_eos
    # stop tokens end the choice in OpenVINO too (and feed min_new_tokens' EOS mask); the engine
    # still decides itself, since `ignore_eos` disables OpenVINO's whole stop-token check
    stops = set(params.stop_token_ids) | (set() if params.ignore_eos else set(eog_ids))
    config.stop_token_ids = stops
    if eog_ids and not params.ignore_eos:  # OpenVINO requires its EOS among the stop tokens
        config.eos_token_id = eog_ids[0]
    if params.temperature <= GREEDY_BELOW:
        config.do_sample = False
    else:
        config.do_sample = True
        config.temperature = params.temperature
        config.top_p = params.top_p
        config.top_k = params.top_k if params.top_k > 0 else 0
        config.min_p = params.min_p
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        config.rng_seed = (seed * 1_000_003 + choice_index) & 0xFFFFFFFFFFFFFFFF
    config.repetition_penalty = params.repetition_penalty
    if params.logprobs is not None:
        config.logprobs = 1
    if structured is not None:
        config.structured_output_config = structured
    return config
