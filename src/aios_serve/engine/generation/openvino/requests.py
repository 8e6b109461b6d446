"""A request inside the OpenVINO engine: its choices (one OpenVINO request each), their text and
finish state, and the updates it sends out. Same semantics as the llama.cpp loop's sequences."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aios_serve.engine.generation.choices import take_choice_update
from aios_serve.engine.generation.interface import RequestUpdate, UpdateStream
from aios_serve.engine.generation.sampling import SamplingParams, TokenLogprobs
from aios_serve.engine.generation.text import OutputText

_request_ids = itertools.count()


@dataclass
class Choice:
    """One choice: its OpenVINO handle, tokens, text and finish state."""

    index: int
    text: OutputText
    request_id: int = field(default_factory=lambda: next(_request_ids))
    handle: Any = None
    """The OpenVINO GenerationHandle while the pipeline holds the choice."""
    generated: list[int] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    new_logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    reported_finish: bool = False

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def finish(self, reason: str, stop_reason: int | str | None) -> None:
        self.finish_reason, self.stop_reason = reason, stop_reason
        self.text.finish()


class Request:
    """A request: prompt, parameters, its n choices and its stream."""

    def __init__(
        self, prompt_ids: list[int], params: SamplingParams, n: int, stream: UpdateStream, structured: Any
    ) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.stream = stream
        self.structured = structured
        self.choices = [Choice(i, OutputText(params.stop)) for i in range(n)]
        self.cancelled = False

    @property
    def done(self) -> bool:
        return all(c.finished for c in self.choices)

    def live_handles(self) -> int:
        return sum(1 for c in self.choices if c.handle is not None)

    def take_update(self) -> RequestUpdate | None:
        """The choices that moved since the last call, as one update (None if none moved)."""
        moved = (take_choice_update(choice) for choice in self.choices)
        updates = [update for update in moved if update is not None]
        if not updates:
            return None
        return RequestUpdate(choices=updates, finished=self.done)
