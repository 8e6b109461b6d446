"""Completions serving: tokenize each prompt, run its n choices on the engine, answer in
OpenAI's legacy shape (or stream it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import Response, StreamingResponse

from aios_serve.api.common.pipeline import ServingPipeline
from aios_serve.api.common.protocol import new_id, unix_now
from aios_serve.api.common.request_state import note_usage
from aios_serve.api.common.responses import json_response
from aios_serve.api.completions.generate import (
    SSE_DONE,
    ChoiceResult,
    as_generator,
    check_model_limits,
    check_on_engine,
    check_request_fields,
    check_request_limits,
    check_request_tokens,
    check_token_ids,
    collect,
    merged_updates,
    resolve_max_tokens,
    sampling_params,
    sse,
    sse_error,
    start_streams,
    truncate_prompt,
    usage,
    vllm_prompt_logprobs,
)
from aios_serve.api.completions.protocol import CompletionRequest, usage_chunks
from aios_serve.engine.generation import GenerationModel, SamplingParams
from aios_serve.engine.generation.interface import RequestUpdate, UpdateStream
from aios_serve.engine.generation.sampling import TokenLogprobs
from aios_serve.errors import invalid
from aios_serve.registry import ServedModel

DEFAULT_MAX_TOKENS = 16


@dataclass
class CompletionWork:
    """Tokenized prompts with their echo text and sampling parameters."""

    prompts: list[list[int]]
    prompt_texts: list[str]
    params: list[SamplingParams]

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


@dataclass
class CompletionOutcome:
    results: list[ChoiceResult] | None = None
    streams: list[UpdateStream] | None = None


def legacy_logprobs(
    model: GenerationModel,
    entries: list[TokenLogprobs],
    offset: int,
    prompt_ids: list[int] | None,
    prompt_entries: list[TokenLogprobs | None] | None = None,
) -> dict[str, Any]:
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
    return {
        "text_offset": text_offset,
        "token_logprobs": token_logprobs,
        "tokens": tokens,
        "top_logprobs": top_logprobs,
    }


def _top_by_text(model: GenerationModel, entry: TokenLogprobs) -> dict[str, float]:
    tops = {model.token_text(t): lp for t, lp in entry.top}
    tops.setdefault(model.token_text(entry.token_id), entry.logprob)
    return tops


def prompt_logprob_count(request: CompletionRequest) -> int | None:
    """Top-k to score prompt tokens with: for `echo` with `logprobs`, or vLLM's `prompt_logprobs`."""
    echoed = request.logprobs if request.echo else None
    wanted = [k for k in (request.prompt_logprobs, echoed) if k is not None]
    return max(wanted) if wanted else None


class CompletionServing(ServingPipeline[CompletionRequest, CompletionWork, CompletionOutcome]):
    capability = "completions"

    async def handle(self, request: CompletionRequest, raw: Request) -> Response:
        check_request_fields(request)
        self.raw = raw
        return await super().handle(request, raw)

    def validate(self, request: CompletionRequest, model: ServedModel) -> None:
        check_request_limits(request, self.registry.config.limits)
        check_model_limits(request, as_generator(model))

    async def preprocess(self, request: CompletionRequest, model: ServedModel) -> CompletionWork:
        generator = as_generator(model)
        given = request.prompt
        prompts: list[list[int]] = []
        texts: list[str] = []
        if isinstance(given, str) or (given and isinstance(given[0], str)):
            strings = [given] if isinstance(given, str) else [str(p) for p in given]
            for text in strings:
                prompts.append(generator.tokenize(text, add_special=True))
                texts.append(text)
        else:
            lists = [given] if given and isinstance(given[0], int) else given
            for ids in lists:
                token_ids = [int(t) for t in ids]  # type: ignore[union-attr]
                check_token_ids(token_ids, generator.n_vocab, "prompt")
                prompts.append(token_ids)
                texts.append(generator.detokenize(token_ids, skip_special=False))
        if not prompts:
            raise invalid("The prompt is empty.", "prompt")
        params: list[SamplingParams] = []
        for i, ids in enumerate(prompts):
            prompts[i] = ids = truncate_prompt(ids, request.truncate_prompt_tokens, generator.max_model_len)
            if request.truncate_prompt_tokens is not None:
                texts[i] = generator.detokenize(ids, skip_special=False)
            max_tokens = resolve_max_tokens(
                request, len(ids), generator.max_model_len, DEFAULT_MAX_TOKENS, "prompt"
            )
            params.append(
                sampling_params(request, max_tokens, request.logprobs, prompt_logprob_count(request))
            )
            check_request_tokens(len(ids), params[-1], request.n or 1, self.registry.config.limits)
        echo_scores = request.echo and request.prompt_logprobs is None
        asked_as = {"prompt_logprobs": "echo"} if echo_scores else None
        await check_on_engine(generator, params[0], request.n or 1, asked_as=asked_as)
        return CompletionWork(prompts, texts, params)

    async def run(
        self, request: CompletionRequest, model: ServedModel, work: CompletionWork, raw: Request
    ) -> CompletionOutcome:
        generator = as_generator(model)
        n = request.n or 1
        if work.params[0].max_tokens == 0:
            empty = [ChoiceResult(finish_reason="length") for _ in range(len(work.prompts) * n)]
            return CompletionOutcome(results=empty)
        streams = start_streams(generator, work.prompts, work.params, n)
        if request.stream:
            return CompletionOutcome(streams=streams)
        return CompletionOutcome(results=await collect(streams, n, raw))

    def build_response(
        self, request: CompletionRequest, model: ServedModel, work: CompletionWork, result: CompletionOutcome
    ) -> Response:
        generator = as_generator(model)
        if result.streams is not None:
            body = self._stream(request, generator, work, result.streams)
            return StreamingResponse(body, media_type="text/event-stream")
        assert result.results is not None
        n = request.n or 1
        choices = []
        completion_tokens = 0
        for index, choice in enumerate(result.results):
            prompt_pos = index // n
            prefix = work.prompt_texts[prompt_pos] if request.echo else ""
            logprobs = None
            if request.logprobs is not None:
                echo_ids = work.prompts[prompt_pos] if request.echo else None
                logprobs = legacy_logprobs(generator, choice.logprobs, 0, echo_ids, choice.prompt_logprobs)
            completion_tokens += len(choice.token_ids)
            choices.append(
                {
                    "index": index,
                    "text": prefix + choice.text,
                    "logprobs": logprobs,
                    "finish_reason": choice.finish_reason,
                    "stop_reason": choice.stop_reason,
                    "prompt_logprobs": (
                        vllm_prompt_logprobs(generator, choice.prompt_logprobs)
                        if request.prompt_logprobs is not None
                        else None
                    ),
                }
            )
        note_usage(self.raw, work.prompt_tokens, completion_tokens)
        return json_response(
            {
                "id": new_id("cmpl"),
                "object": "text_completion",
                "created": unix_now(),
                "model": request.model,
                "choices": choices,
                "usage": usage(work.prompt_tokens, completion_tokens),
                "system_fingerprint": None,
            }
        )

    async def _stream(
        self,
        request: CompletionRequest,
        generator: GenerationModel,
        work: CompletionWork,
        streams: list[UpdateStream],
    ) -> AsyncIterator[bytes]:
        response_id, created, n = new_id("cmpl"), unix_now(), request.n or 1
        include_usage, continuous = usage_chunks(request.stream_options)
        completion_tokens = 0
        offsets = [len(work.prompt_texts[i // n]) if request.echo else 0 for i in range(len(streams) * n)]
        raw = self.raw

        def chunk(choices: list[dict[str, Any]]) -> bytes:
            payload: dict[str, Any] = {
                "id": response_id,
                "object": "text_completion",
                "created": created,
                "model": request.model,
                "choices": choices,
            }
            if continuous:
                payload["usage"] = usage(work.prompt_tokens, completion_tokens)
            return sse(payload)

        opened: set[int] = set()
        try:
            async for position, update in merged_updates(streams):
                if position not in opened:
                    opened.add(position)
                    opening = self._opening_choice(request, generator, work, position, update)
                    if opening is not None:
                        for index in range(position * n, (position + 1) * n):
                            yield chunk([{"index": index, **opening}])
                for choice in update.choices:
                    index = position * n + choice.index
                    completion_tokens += len(choice.token_ids)
                    logprobs = None
                    if request.logprobs is not None:
                        logprobs = legacy_logprobs(generator, choice.logprobs, offsets[index], None)
                        offsets[index] += sum(len(t) for t in logprobs["tokens"])
                    yield chunk(
                        [
                            {
                                "index": index,
                                "text": choice.text,
                                "logprobs": logprobs,
                                "finish_reason": choice.finish_reason,
                                "stop_reason": choice.stop_reason,
                            }
                        ]
                    )
            if include_usage:
                yield sse(
                    {
                        "id": response_id,
                        "object": "text_completion",
                        "created": created,
                        "model": request.model,
                        "choices": [],
                        "usage": usage(work.prompt_tokens, completion_tokens),
                    }
                )
        except Exception as exc:  # the stream has started: report in-band
            yield sse_error(exc, raw)
        finally:
            for stream in streams:
                stream.cancel()
            note_usage(raw, work.prompt_tokens, completion_tokens)
        yield SSE_DONE

    @staticmethod
    def _opening_choice(
        request: CompletionRequest,
        generator: GenerationModel,
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
            opening["logprobs"] = legacy_logprobs(generator, [], 0, ids, update.prompt_logprobs)
        if request.prompt_logprobs is not None:
            opening["prompt_logprobs"] = vllm_prompt_logprobs(generator, update.prompt_logprobs)
        return opening
