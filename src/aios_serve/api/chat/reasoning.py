"""Reasoning output: a reasoning model's `<think>…</think>` goes to `reasoning_content`, the
rest to `content` (as vLLM's deepseek_r1 / qwen3 parsers do).

A chat template may open the thinking block itself (the prompt ends with `<think>`, as
DeepSeek-R1's and Qwen3's do); the output then starts inside it and only `</think>` appears.
"""

from __future__ import annotations

from dataclasses import dataclass

from aios_serve.api.chat.tags import split_before_partial_tag

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
REASONING_PARSERS = ("think",)
"""Values of the generation option `reasoning_parser`."""


def prompt_opens_thinking(prompt: str) -> bool:
    """The rendered prompt leaves a `<think>` block open for the model to continue."""
    return prompt.rstrip().endswith(THINK_OPEN)


def split_reasoning(text: str, started_in_reasoning: bool = False) -> tuple[str | None, str | None]:
    """(reasoning, content) of a whole output; None for an empty part."""
    body = text
    in_reasoning = started_in_reasoning
    stripped = body.lstrip()
    if stripped.startswith(THINK_OPEN):
        body = stripped[len(THINK_OPEN) :]
        in_reasoning = True
    if not in_reasoning:
        return None, text or None
    end = body.find(THINK_CLOSE)
    if end < 0:
        return body or None, None
    reasoning, content = body[:end], body[end + len(THINK_CLOSE) :]
    return reasoning or None, content or None


@dataclass
class ReasoningDelta:
    reasoning: str = ""
    content: str = ""

    def __add__(self, later: ReasoningDelta) -> ReasoningDelta:
        return ReasoningDelta(self.reasoning + later.reasoning, self.content + later.content)


class ReasoningStreamParser:
    """Splits streamed text into reasoning and content deltas; a tag split across deltas is
    held back until it is complete."""

    def __init__(self, started_in_reasoning: bool = False) -> None:
        self._pending = ""
        self._state = "reasoning" if started_in_reasoning else "start"

    def feed(self, text: str, final: bool = False) -> ReasoningDelta:
        """The reasoning and content `text` completes; with `final`, also what was held back."""
        out = self._split(text)
        return out + self.finish() if final else out

    def _split(self, text: str) -> ReasoningDelta:
        self._pending += text
        out = ReasoningDelta()
        while self._pending:
            if self._state == "start":
                stripped = self._pending.lstrip()
                if not stripped:
                    return out
                if stripped.startswith(THINK_OPEN):
                    self._pending = stripped[len(THINK_OPEN) :]
                    self._state = "reasoning"
                elif THINK_OPEN.startswith(stripped):
                    return out  # could still become <think>
                else:
                    self._state = "content"
            elif self._state == "reasoning":
                at = self._pending.find(THINK_CLOSE)
                if at >= 0:
                    out.reasoning += self._pending[:at]
                    self._pending = self._pending[at + len(THINK_CLOSE) :]
                    self._state = "content"
                    continue
                ready, self._pending = split_before_partial_tag(self._pending, THINK_CLOSE)
                out.reasoning += ready
                return out
            else:
                out.content += self._pending
                self._pending = ""
        return out

    def finish(self) -> ReasoningDelta:
        out = ReasoningDelta()
        if self._state == "reasoning":
            out.reasoning = self._pending
        else:
            out.content = self._pending
        self._pending = ""
        return out
