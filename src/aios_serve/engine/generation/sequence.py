"""State of requests and their sequences inside the engine loop."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aios_serve.backends.protocols.generation import Logits
from aios_serve.engine.generation.choices import take_choice_update
from aios_serve.engine.generation.constraints import CompiledGrammar
from aios_serve.engine.generation.interface import RequestUpdate
from aios_serve.engine.generation.sampling import (
    SamplingParams,
    SequenceSampler,
    TokenLogprobs,
    repetition_ids,
    token_logprobs,
)
from aios_serve.engine.generation.text import OutputText

log = logging.getLogger("aios_serve.engine.generation")

_request_counter = itertools.count()


class Sequence:
    """One choice: its KV slot, generated tokens, sampler and text."""

    def __init__(
        self,
        index: int,
        params: SamplingParams,
        eog_ids: list[int],
        grammar: CompiledGrammar | None,
        prompt_ids: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """`prompt_ids`: the prompt's distinct ids, for the repetition penalty (`repetition_ids`)."""
        self.index = index
        self.slot: int | None = None
        self.sampler = SequenceSampler(params, index, eog_ids, prompt_ids)
        self.constraint = grammar.new_constraint() if grammar is not None else None
        self.text = OutputText(params.stop)
        self.generated: list[int] = []
        self.pending: int | None = None
        """The last sampled token, not yet written to the KV cache."""
        self.n_cached = 0
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.new_tokens: list[int] = []
        self.new_logprobs: list[TokenLogprobs] = []
        self.reported_finish = False

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class PrefillTask:
    """Tokens to write to the KV cache for sequences that share them (n choices, one prompt)."""

    tokens: list[int]
    seqs: list[Sequence]
    done: int = 0

    @property
    def remaining(self) -> int:
        return len(self.tokens) - self.done


class RequestState:
    """A request in the engine: its prompt, its choices, and where to send updates."""

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        n: int,
        eog_ids: list[int],
        deliver: Callable[[RequestUpdate], None],
        grammar: CompiledGrammar | None = None,
    ) -> None:
        self.order = next(_request_counter)
        self.prompt_ids = prompt_ids
        self.params = params
        distinct = repetition_ids(prompt_ids, params)
        self.seqs = [Sequence(i, params, eog_ids, grammar, distinct) for i in range(n)]
        self.tasks: list[PrefillTask] = []
        self.deliver = deliver
        self.cancelled = False
        self.prompt_logprobs: list[TokenLogprobs | None] | None = (
            [None] if params.prompt_logprobs is not None else None
        )
        self._prompt_logprobs_sent = False

    @property
    def needs_prompt_logprobs(self) -> bool:
        """Whether prefill must still score prompt tokens (not again after a preemption)."""
        return self.prompt_logprobs is not None and len(self.prompt_logprobs) < len(self.prompt_ids)

    def record_prompt_logits(self, start_pos: int, rows: list[Logits]) -> None:
        """Score the prompt tokens that follow positions start_pos.. from their rows' logits."""
        assert self.prompt_logprobs is not None and self.params.prompt_logprobs is not None
        for offset, logits in enumerate(rows):
            position = start_pos + offset + 1
            if position >= len(self.prompt_ids) or position != len(self.prompt_logprobs):
                continue
            self.prompt_logprobs.append(
                token_logprobs(logits, self.prompt_ids[position], self.params.prompt_logprobs)
            )

    def unadmitted_tasks(self) -> list[PrefillTask]:
        """The prefill work this request needs before its sequences can decode again."""
        live = [s for s in self.seqs if not s.finished]
        if all(not s.generated for s in live):
            return [PrefillTask(list(self.prompt_ids), live)]
        return [PrefillTask(self.prompt_ids + s.generated, [s]) for s in live]

    @property
    def done(self) -> bool:
        return all(s.finished for s in self.seqs)

    def cached_tokens(self) -> int:
        """An estimate of the KV cells this request holds (the prompt once, outputs per seq)."""
        return len(self.prompt_ids) + sum(len(s.generated) for s in self.seqs if s.slot is not None)

    def take_update(self) -> RequestUpdate | None:
        """Collect the choices that moved since the last call."""
        moved = (take_choice_update(seq) for seq in self.seqs)
        choices = [choice for choice in moved if choice is not None]
        if not choices:
            return None
        update = RequestUpdate(choices=choices, finished=self.done)
        if self.prompt_logprobs is not None and not self._prompt_logprobs_sent:
            update.prompt_logprobs = self.prompt_logprobs
            self._prompt_logprobs_sent = True
        return update
