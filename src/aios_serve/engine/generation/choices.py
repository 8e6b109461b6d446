"""What one choice produced since it last reported: shared by both engines' request states."""

from __future__ import annotations

from typing import Protocol

from aios_serve.engine.generation.interface import ChoiceUpdate
from aios_serve.engine.generation.sampling import TokenLogprobs
from aios_serve.engine.generation.text import OutputText


class ChoiceOutput(Protocol):
    """A choice's output as an engine tracks it (our Sequence, OpenVINO's Choice)."""

    index: int
    text: OutputText
    new_tokens: list[int]
    new_logprobs: list[TokenLogprobs]
    finish_reason: str | None
    stop_reason: int | str | None
    reported_finish: bool

    @property
    def finished(self) -> bool: ...


def take_choice_update(choice: ChoiceOutput) -> ChoiceUpdate | None:
    """The choice's new text, tokens, logprobs and finish since the last call; None if nothing
    moved (or its finish was already reported)."""
    if choice.reported_finish:
        return None
    final = choice.finished
    delta = choice.text.take_delta(final)
    if not (delta or choice.new_tokens or final):
        return None
    update = ChoiceUpdate(
        index=choice.index,
        text=delta,
        token_ids=choice.new_tokens,
        logprobs=choice.new_logprobs,
        finish_reason=choice.finish_reason,
        stop_reason=choice.stop_reason,
    )
    choice.new_tokens, choice.new_logprobs = [], []
    choice.reported_finish = final
    return update
