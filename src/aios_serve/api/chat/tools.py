"""Tool calls in model output: Qwen/Hermes `<tool_call>{json}</tool_call>` blocks, or a bare
JSON call, parsed whole (`parse_tool_calls`) or as a stream of OpenAI-style deltas
(`ToolCallStreamParser`). Text that is not a valid call stays content.

Both parsers give the same `arguments` string for the same output: the model's own JSON text
of the arguments object, so streamed fragments join into exactly the non-streamed value.

A block the output ends inside (no `</tool_call>`: cut by `max_tokens`, or by a stop) is never
content, in either parser: if its JSON is whole it is a call; if its name and the start of its
arguments were written it is a call whose `arguments` end where the output did (what the stream
has already sent; finish_reason `length` tells the client so, as in OpenAI's API); otherwise it
is dropped.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from aios_serve.api.chat.tags import split_before_partial_tag, tag_prefix_len
from aios_serve.engine.generation import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')
_ARGS_KEY = re.compile(r'"(?:arguments|parameters)"\s*:\s*')
_FENCED = re.compile(r"\A```(?:json)?\s*\n(.*?)\n?```\Z", re.DOTALL)
_BARE_STARTS = ("{", "[", "`")
_decoder = json.JSONDecoder()


def new_call_id() -> str:
    """`call_` and 24 hex digits."""
    return "call_" + secrets.token_hex(12)


@dataclass
class ParsedToolCall:
    name: str
    arguments: str
    id: str = field(default_factory=new_call_id)

    def as_openai(self) -> dict[str, Any]:
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}


def _raw_arguments(body: str, value: Any) -> str:
    """The arguments' JSON text as the model wrote it (re-serialized if it cannot be found)."""
    for match in _ARGS_KEY.finditer(body):
        try:
            found, end = _decoder.raw_decode(body, match.end())
        except json.JSONDecodeError:
            continue
        if found == value:
            return body[match.end() : end]
    return json.dumps(value, ensure_ascii=False)


def parse_call(body: str, names: Collection[str] | None) -> ParsedToolCall | None:
    """One call from a JSON object `{"name": ..., "arguments": {...}}` (or `parameters`)."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    name: str = data["name"]
    if names is not None and name not in names:
        return None
    key = "arguments" if "arguments" in data else "parameters"
    value = data.get(key, {})
    if isinstance(value, str):  # arguments already given as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    return ParsedToolCall(name, _raw_arguments(body, value) if key in data else "{}")


def _head(body: str, names: Collection[str] | None) -> tuple[str, int] | None:
    """(name, where the arguments start) once a block's body has written both, and the first
    character of the arguments; None before that or for a function not in `names`."""
    head = _HEAD.match(body)
    if head is None or head.end() >= len(body):
        return None
    name: str = json.loads(f'"{head.group(1)}"')
    if names is not None and name not in names:
        return None
    return name, head.end()


def _arguments_end(body: str) -> int:
    """How far an open block's arguments can be sent: the outer object's closing brace and
    trailing whitespace are held back until the block closes."""
    visible = body.rstrip()
    return len(visible) - 1 if visible.endswith("}") else len(visible)


def unclosed_body(text: str) -> str:
    """The body of a block the output ends inside, less a cut `</tool_call>` at its end."""
    return text[: len(text) - tag_prefix_len(text, TOOL_CALL_CLOSE)]


def parse_unclosed_call(body: str, names: Collection[str] | None) -> ParsedToolCall | None:
    """The call in a block the output ends inside (see the module's docstring); None: dropped."""
    call = parse_call(body, names)
    if call is not None:
        return call
    head = _head(body, names)
    if head is None:
        return None
    name, args_start = head
    return ParsedToolCall(name, body[args_start : max(args_start, _arguments_end(body))])


def parse_tool_calls(
    text: str, names: Collection[str] | None = None
) -> tuple[str | None, list[ParsedToolCall]]:
    """Split output into (content, calls); `names` restricts calls to the offered functions.

    Content is None when the output is nothing but calls. A block the output ends inside is
    never content (`parse_unclosed_call`).
    """
    calls: list[ParsedToolCall] = []
    kept: list[str] = []
    position = 0
    unclosed = False
    while (start := text.find(TOOL_CALL_OPEN, position)) >= 0:
        body_start = start + len(TOOL_CALL_OPEN)
        end = text.find(TOOL_CALL_CLOSE, body_start)
        kept.append(text[position:start])
        if end < 0:
            unclosed = True
            call = parse_unclosed_call(unclosed_body(text[body_start:]), names)
            if call is not None:
                calls.append(call)
            position = len(text)
            break
        call = parse_call(text[body_start:end], names)
        if call is None:
            kept.append(text[start : end + len(TOOL_CALL_CLOSE)])
        else:
            calls.append(call)
        position = end + len(TOOL_CALL_CLOSE)
    kept.append(text[position:])
    if not calls and not unclosed:
        bare = _parse_bare(text, names)
        if bare:
            return None, bare
        return (text or None), []
    content = "".join(kept)
    return (content if content.strip() else None), calls


def _parse_bare(text: str, names: Collection[str] | None) -> list[ParsedToolCall]:
    """A whole output that is a JSON call, or a JSON list of calls (bare or in a ```json fence)."""
    stripped = text.strip()
    fenced = _FENCED.match(stripped)
    if fenced is not None:
        stripped = fenced.group(1).strip()
    if not stripped.startswith(("{", "[")):
        return []
    single = parse_call(stripped, names)
    if single is not None:
        return [single]
    try:
        items = json.loads(stripped)
    except json.JSONDecodeError:
        return []
    if not isinstance(items, list) or not items:
        return []
    calls = [parse_call(json.dumps(item, ensure_ascii=False), names) for item in items]
    return [c for c in calls if c is not None] if all(calls) else []


@dataclass
class StreamEvents:
    """What one piece of streamed text produced: content, and tool-call deltas (OpenAI shape)."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def __add__(self, later: StreamEvents) -> StreamEvents:
        return StreamEvents(self.content + later.content, self.tool_calls + later.tool_calls)


class _OpenCall:
    """A `<tool_call>` block being streamed."""

    def __init__(self) -> None:
        self.body = ""
        self.index: int | None = None
        self.args_start = 0
        self.sent_args = 0


class ToolCallStreamParser:
    """Feeds on text deltas; emits content and tool-call deltas (index, id, name first, then
    argument fragments). A block that turns out not to be a call is emitted as content."""

    def __init__(self, names: Collection[str] | None = None) -> None:
        self._names = names
        self._pending = ""
        self._call: _OpenCall | None = None
        self._started = False
        self._bare = False
        self.calls: list[ParsedToolCall] = []

    @property
    def called(self) -> bool:
        return bool(self.calls)

    def feed(self, text: str, final: bool = False) -> StreamEvents:
        """The content and call deltas `text` completes; with `final`, also what was held back."""
        events = self._split(text)
        return events + self.finish() if final else events

    def _split(self, text: str) -> StreamEvents:
        events = StreamEvents()
        self._pending += text
        if not self._started:
            if not self._pending.strip():
                return events
            self._started = True
            self._bare = self._pending.lstrip().startswith(_BARE_STARTS)
        if self._bare:
            return events  # a bare JSON call is only known at the end
        while self._pending:
            if self._call is None:
                at = self._pending.find(TOOL_CALL_OPEN)
                if at < 0:
                    ready, self._pending = split_before_partial_tag(self._pending, TOOL_CALL_OPEN)
                    events.content += ready
                    break
                events.content += self._pending[:at]
                self._pending = self._pending[at + len(TOOL_CALL_OPEN) :]
                self._call = _OpenCall()
            else:
                at = self._pending.find(TOOL_CALL_CLOSE)
                if at < 0:
                    ready, self._pending = split_before_partial_tag(self._pending, TOOL_CALL_CLOSE)
                    self._call.body += ready
                    self._stream_call(events)
                    break
                self._call.body += self._pending[:at]
                self._pending = self._pending[at + len(TOOL_CALL_CLOSE) :]
                self._close_call(events)
        return events

    def finish(self) -> StreamEvents:
        """Flush at the end of the output."""
        events = StreamEvents()
        if self._bare:
            bare = _parse_bare(self._pending, self._names)
            if bare:
                for call in bare:
                    events.tool_calls.append(self._start_delta(call.id, call.name))
                    events.tool_calls.append(self._args_delta(len(self.calls), call.arguments))
                    self.calls.append(call)
            else:
                events.content = self._pending
            self._pending = ""
            return events
        if self._call is not None:  # the output ended inside a block
            self._call.body = unclosed_body(self._call.body + self._pending)
            self._pending = ""
            self._stream_call(events)
            self._close_call(events, closed=False)
        events.content += self._pending
        self._pending = ""
        return events

    # --- one block ------------------------------------------------------------------------

    def _start_delta(self, call_id: str, name: str) -> dict[str, Any]:
        """The first delta of the next call (call it before appending the call)."""
        return {
            "index": len(self.calls),
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }

    @staticmethod
    def _args_delta(index: int, fragment: str) -> dict[str, Any]:
        return {"index": index, "function": {"arguments": fragment}}

    def _stream_call(self, events: StreamEvents) -> None:
        call = self._call
        assert call is not None
        if call.index is None:
            head = _head(call.body, self._names)
            if head is None:
                return
            name, call.args_start = head
            call.index = len(self.calls)
            opened = ParsedToolCall(name, "")
            events.tool_calls.append(self._start_delta(opened.id, name))
            self.calls.append(opened)
        end = _arguments_end(call.body)
        if end > call.args_start + call.sent_args:
            fragment = call.body[call.args_start + call.sent_args : end]
            call.sent_args += len(fragment)
            self.calls[call.index].arguments += fragment
            events.tool_calls.append(self._args_delta(call.index, fragment))

    def _close_call(self, events: StreamEvents, closed: bool = True) -> None:
        """End the open block: at its `</tool_call>`, or (not `closed`) where the output ended."""
        call = self._call
        assert call is not None
        self._call = None
        parsed = parse_call(call.body, self._names)
        if call.index is None:
            if parsed is None:
                if closed:  # a whole block that is not a call stays content; a cut one is dropped
                    events.content += TOOL_CALL_OPEN + call.body + TOOL_CALL_CLOSE
                return
            events.tool_calls.append(self._start_delta(parsed.id, parsed.name))
            events.tool_calls.append(self._args_delta(len(self.calls), parsed.arguments))
            self.calls.append(parsed)
            return
        streamed = self.calls[call.index].arguments
        final = parsed.arguments if parsed is not None else streamed
        if final.startswith(streamed) and len(final) > len(streamed):
            events.tool_calls.append(self._args_delta(call.index, final[len(streamed) :]))
            self.calls[call.index].arguments = final
