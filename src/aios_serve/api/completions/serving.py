"""Completions serving: tokenize each prompt, run its n choices on the engine, answer in
OpenAI's legacy shape (or stream it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aios_serve.api.common.context import RequestContext
from aios_serve.api.common.generation import ChoiceResult, Choices, GenerationServing, GenerationWork, Updates
from aios_serve.api.common.logprobs import vllm_prompt_logprobs
from aios_serve.api.common.sampling import (
    check_request_tokens,
    check_token_ids,
    resolve_max_tokens,
    sampling_params,
    truncate_prompt,
)
from aios_serve.api.completions.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
)
from aios_serve.engine.generation import GenerationModel, RequestUpdate, SamplingParams, TokenLogprobs
from aios_serve.errors import invalid

DEFAULT_MAX_TOKENS = 16


@dataclass
class CompletionWork(GenerationWork):
    """Tokenized prompts with their echo text and sampling parameters."""

    prompt_texts: list[str]


def legacy_logprobs(
    model: GenerationModel,
    entries: list[TokenLogprobs],
    offset: int,
    prompt_ids: list[int] | None,
    prompt_entries: list[TokenLogprobs | None] | None = None,
) -> CompletionLogprobs:
    """OpenAI's legacy shape: tokens, token_logprobs, top_logprobs, text_offset.

    With `prompt_ids` (echo) the prompt's tokens come first, scored from `prompt_entries`
    where given (the first token has nothing before it, so it stays null).
    """
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []
    scored = list(prompt_entries or [])
    for position, token_id in enumerate(prompt_ids or []):
        prompt_entry = scored[position] if position < len(scored) else None
        text = model.token_text(token_id)
        tokens.append(text)
        token_logprobs.append(None if prompt_entry is None else prompt_entry.logprob)
        top_logprobs.append(None if prompt_entry is None else _top_by_text(model, prompt_entry))
        text_offset.append(offset)
        offset += len(text)
    for entry in entries:
        text = model.token_text(entry.token_id)
        tokens.append(text)
        token_logprobs.append(entry.logprob)
        top_logprobs.append(_top_by_text(model, entry))
        text_offset.append(offset)
        offset += len(text)
    return CompletionLogprobs.model_construct(
        text_offset=text_offset, token_logprobs=token_logprobs, tokens=tokens, top_logprobs=top_logprobs
    )


def _top_by_text(model: GenerationModel, entry: TokenLogprobs) -> dict[str, float]:
    tops = {model.token_text(t): lp for t, lp in entry.top}
    tops.setdefault(model.token_text(entry.token_id), entry.logprob)
    return tops


def prompt_logprob_count(request: CompletionRequest) -> int | None:
    """Top-k to score prompt tokens with: for `echo` with `logprobs`, or vLLM's `prompt_logprobs`."""
    echoed = request.logprobs if request.echo else None
    wanted = [k for k in (request.prompt_logprobs, echoed) if k is not None]
    return max(wanted) if wanted else None


class CompletionServing(GenerationServing[CompletionRequest, CompletionWork]):
    capability = "completions"
    id_prefix = "cmpl"
    response_type = CompletionResponse
    chunk_type = CompletionStreamResponse

    async def preprocess(
        self, context: RequestContext, request: CompletionRequest, model: GenerationModel
    ) -> CompletionWork:
        given = request.prompt
        prompts: list[list[int]] = []
        texts: list[str] = []
        if isinstance(given, str) or (given and isinstance(given[0], str)):
            strings = [given] if isinstance(given, str) else [str(p) for p in given]
            for text in strings:
                prompts.append(model.tokenize(text, add_special=True))
                texts.append(text)
        else:
            lists = [given] if given and isinstance(given[0], int) else given
            for ids in lists:
                token_ids = [int(t) for t in ids]  # type: ignore[union-attr]
                check_token_ids(token_ids, model.n_vocab, "prompt")
                prompts.append(token_ids)
                texts.append(model.detokenize(token_ids, skip_special=False))
        if not prompts:
            raise invalid("The prompt is empty.", "prompt")
        params: list[SamplingParams] = []
        for i, ids in enumerate(prompts):
            prompts[i] = ids = truncate_prompt(ids, request.truncate_prompt_tokens, model.max_model_len)
            if request.truncate_prompt_tokens is not None:
                texts[i] = model.detokenize(ids, skip_special=False)
            max_tokens = resolve_max_tokens(
                request, len(ids), model.max_model_len, DEFAULT_MAX_TOKENS, "prompt"
            )
            params.append(
                sampling_params(request, max_tokens, request.logprobs, prompt_logprob_count(request))
            )
            check_request_tokens(len(ids), params[-1], request.n or 1, self.registry.config.limits)
        await model.check(params[0], request.n or 1)
        return CompletionWork(prompts, params, texts)

    def final_choices(
        self,
        request: CompletionRequest,
        model: GenerationModel,
        work: CompletionWork,
        results: list[ChoiceResult],
    ) -> tuple[Choices, dict[str, Any]]:
        n = request.n or 1
        choices: Choices = []
        for index, choice in enumerate(results):
            prompt_pos = index // n
            prefix = work.prompt_texts[prompt_pos] if request.echo else ""
            logprobs = None
            if request.logprobs is not None:
                echo_ids = work.prompts[prompt_pos] if request.echo else None
                logprobs = legacy_logprobs(model, choice.logprobs, 0, echo_ids, choice.prompt_logprobs)
            prompt_logprobs = None
            if request.prompt_logprobs is not None:
                prompt_logprobs = vllm_prompt_logprobs(model, choice.prompt_logprobs)
            choices.append(
                CompletionChoice.model_construct(
                    index=index,
                    text=prefix + choice.text,
                    logprobs=logprobs,
                    finish_reason=choice.finish_reason,
                    stop_reason=choice.stop_reason,
                    prompt_logprobs=prompt_logprobs,
                )
            )
        return choices, {}

    async def stream_choices(
        self, request: CompletionRequest, model: GenerationModel, work: CompletionWork, updates: Updates
    ) -> AsyncIterator[Choices]:
        n = request.n or 1
        offsets = [
            len(work.prompt_texts[i // n]) if request.echo else 0 for i in range(len(work.prompts) * n)
        ]
        opened: set[int] = set()
        async for position, update in updates:
            if position not in opened:
                opened.add(position)
                opening = self._opening_choice(request, model, work, position, update)
                if opening is not None:
                    for index in range(position * n, (position + 1) * n):
                        yield [CompletionChoice.model_construct(index=index, **opening)]
            for choice in update.choices:
                index = position * n + choice.index
                logprobs = None
                if request.logprobs is not None:
                    logprobs = legacy_logprobs(model, choice.logprobs, offsets[index], None)
                    offsets[index] += sum(len(t) for t in logprobs.tokens)
                yield [
                    CompletionChoice.model_construct(
                        index=index,
                        text=choice.text,
                        logprobs=logprobs,
                        finish_reason=choice.finish_reason,
                        stop_reason=choice.stop_reason,
                    )
                ]

    @staticmethod
    def _opening_choice(
        request: CompletionRequest,
        model: GenerationModel,
        work: CompletionWork,
        position: int,
        update: RequestUpdate,
    ) -> dict[str, Any] | None:
        """The chunk before a prompt's first output: its echo and its prompt log-probabilities."""
        if not request.echo and request.prompt_logprobs is None:
            return None
        opening: dict[str, Any] = {
            "text": work.prompt_texts[position] if request.echo else "",
            "logprobs": None,
            "finish_reason": None,
            "stop_reason": None,
        }
        if request.echo and request.logprobs is not None:
            ids = work.prompts[position]
            opening["logprobs"] = legacy_logprobs(model, [], 0, ids, update.prompt_logprobs)
        if request.prompt_logprobs is not None:
            opening["prompt_logprobs"] = vllm_prompt_logprobs(model, update.prompt_logprobs)
        return opening
