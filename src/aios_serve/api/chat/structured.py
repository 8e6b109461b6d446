"""Tools, structured outputs and reasoning for chat: what a request asks for (`OutputPlan`),
the constraint on its sampling, and its output turned into a message or deltas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aios_serve.api.chat.protocol import ChatCompletionRequest, NamedToolChoice
from aios_serve.api.chat.reasoning import ReasoningStreamParser, prompt_opens_thinking, split_reasoning
from aios_serve.api.chat.tools import ToolCallStreamParser, parse_tool_calls
from aios_serve.engine.generation import TOOL_CALL_OPEN, OutputConstraint
from aios_serve.errors import invalid


def tool_choice_of(request: ChatCompletionRequest) -> str | NamedToolChoice:
    """`auto` when tools are given, else `none` (the default), or what the request says."""
    if request.tool_choice is not None:
        return request.tool_choice
    return "auto" if request.tools else "none"


def prompt_tools(request: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools the chat template renders: none for `tool_choice: none`, so none is called."""
    if not request.tools or tool_choice_of(request) == "none":
        return None
    return [tool.model_dump(exclude_none=True) for tool in request.tools]


@dataclass
class OutputPlan:
    """How a chat request's output is constrained and read."""

    tool_names: frozenset[str] | None = None
    """Parse tool calls to these functions out of the output (None: no tool parsing)."""
    named_function: str | None = None
    constraint: OutputConstraint | None = None
    reasoning: bool = False
    """Split `<think>` reasoning out (the model's `reasoning_parser` option)."""
    opens_thinking: bool = False
    """The prompt leaves a `<think>` block open."""

    @property
    def calls_only(self) -> bool:
        """The output is constrained to tool calls (`required` or a named function): nothing of
        it is content, since what is not a call is a separator or a call cut by `max_tokens`."""
        return self.constraint is not None and self.constraint.kind == "tool_calls"

    def finish_reason(self, reason: str | None, called: bool) -> str | None:
        """`tool_calls` for auto and required calls, `stop` for a named function (as OpenAI).

        An output cut by `max_tokens` stays `length` even when it holds complete calls, as
        OpenAI answers: the client learns that its last call may be cut (see api/chat/tools.py).
        """
        if called and reason in ("stop", None):
            return "stop" if self.named_function is not None else "tool_calls"
        return reason


def _constraint(
    request: ChatCompletionRequest, choice: str | NamedToolChoice, wrapped: bool
) -> OutputConstraint | None:
    tools = request.tools or []
    if choice == "required" or isinstance(choice, NamedToolChoice):
        wanted = choice.function.name if isinstance(choice, NamedToolChoice) else None
        functions = [
            (tool.function.name, tool.function.parameters)
            for tool in tools
            if wanted is None or tool.function.name == wanted
        ]
        # `required` allows several calls unless parallel_tool_calls is false; a named choice, one.
        parallel = wanted is None and request.parallel_tool_calls is not False
        return OutputConstraint("tool_calls", functions=tuple(functions), wrapped=wrapped, parallel=parallel)
    response_format = request.response_format
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return OutputConstraint("json_object")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            message = "response_format json_schema needs a `json_schema.schema` object."
            raise invalid(message, "response_format")
        return OutputConstraint("json_schema", schema=spec["schema"], closed=spec.get("strict") is True)
    raise invalid(
        f"response_format type `{kind}` is not supported; use text, json_object or json_schema.",
        "response_format",
    )


def plan_output(request: ChatCompletionRequest, prompt_text: str, reasoning: bool) -> OutputPlan:
    """What to parse and how to constrain, for this request on this model."""
    choice = tool_choice_of(request)
    plan = OutputPlan(reasoning=reasoning, opens_thinking=reasoning and prompt_opens_thinking(prompt_text))
    if choice != "none" and request.tools:
        plan.tool_names = frozenset(tool.function.name for tool in request.tools)
    if isinstance(choice, NamedToolChoice):
        plan.named_function = choice.function.name
    wrapped = TOOL_CALL_OPEN in prompt_text  # the template taught the model <tool_call> tags
    plan.constraint = _constraint(request, choice, wrapped)
    return plan


def output_message(
    plan: OutputPlan, text: str, finish_reason: str | None
) -> tuple[dict[str, Any], str | None]:
    """A finished choice's message (reasoning, content, tool calls) and its finish_reason."""
    reasoning: str | None = None
    content: str | None = text
    if plan.reasoning:
        reasoning, content = split_reasoning(text, plan.opens_thinking)
    calls: list[dict[str, Any]] = []
    if plan.tool_names is not None and content:
        content, parsed = parse_tool_calls(content, plan.tool_names)
        calls = [call.as_openai() for call in parsed]
    if plan.calls_only:
        content = None
    message = {
        "role": "assistant",
        "reasoning_content": reasoning,
        "reasoning": reasoning,
        "content": content if (content or not plan.tool_names) else None,
        "tool_calls": calls,
    }
    return message, plan.finish_reason(finish_reason, bool(calls))


@dataclass
class ChoiceStreamer:
    """Turns one choice's streamed text into chat deltas: reasoning, content, tool calls."""

    plan: OutputPlan
    _reasoning: ReasoningStreamParser | None = None
    _tools: ToolCallStreamParser | None = None
    _called: bool = False
    _pending: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.plan.reasoning:
            self._reasoning = ReasoningStreamParser(self.plan.opens_thinking)
        if self.plan.tool_names is not None:
            self._tools = ToolCallStreamParser(self.plan.tool_names)

    def feed(self, text: str, final: bool = False) -> dict[str, Any]:
        """The delta fields for `text` (flushing the parsers when `final`); may be empty."""
        delta: dict[str, Any] = {}
        content = text
        if self._reasoning is not None:
            pieces = self._reasoning.feed(text, final)
            content = pieces.content
            if pieces.reasoning:
                delta["reasoning_content"] = delta["reasoning"] = pieces.reasoning
        if self._tools is not None:
            events = self._tools.feed(content, final)
            content = events.content
            if events.tool_calls:
                delta["tool_calls"] = events.tool_calls
                self._called = True
        if content and not self.plan.calls_only:
            delta["content"] = content
        return delta

    def finish_reason(self, reason: str | None) -> str | None:
        return self.plan.finish_reason(reason, self._called)
