"""What completions and chat share: request checks, sampling parameters, running the engine
(with client-disconnect cancellation), and server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request

from aios_serve.api.common.request_state import note_stream_status
from aios_serve.api.completions.protocol import SamplingFields
from aios_serve.engine.generation import GenerationModel, SamplingParams
from aios_serve.engine.generation.constraints import GrammarError
from aios_serve.engine.generation.interface import (
    EngineUnavailable,
    RequestUpdate,
    UnsupportedParameter,
    UpdateStream,
)
from aios_serve.engine.generation.sampling import TokenLogprobs
from aios_serve.errors import ApiError, ErrorKind, invalid
from aios_serve.limits import LimitsConfig, check_count, check_max, check_total_tokens
from aios_serve.registry import ServedModel

DISCONNECT_POLL_S = 0.25


def as_generator(model: ServedModel) -> GenerationModel:
    assert isinstance(model, GenerationModel), "generation capability on a non-generation model"
    return model


def check_request_fields(request: SamplingFields) -> None:
    """Cross-field checks that pydantic cannot name a field for; run before the model lookup."""
    if request.stream_options is not None and not request.stream:
        raise invalid("Stream options can only be defined when `stream=True`.", "stream_options")


def check_model_limits(request: SamplingFields, model: GenerationModel) -> None:
    """Checks that need the loaded model: token ids in logit_bias and the number of choices."""
    n_vocab = model.n_vocab
    for key in request.logit_bias or {}:
        if int(key) >= n_vocab:
            raise invalid(f"logit_bias token id {key} is out of vocabulary (0..{n_vocab - 1}).", "logit_bias")
    for token_id in request.stop_token_ids or []:
        if not 0 <= token_id < n_vocab:
            raise invalid(f"stop_token_ids has an out-of-vocabulary id {token_id}.", "stop_token_ids")
    n = request.n or 1
    if n > model.max_sequences:
        raise invalid(f"n must be at most {model.max_sequences} for this model.", "n")


def check_request_limits(request: SamplingFields, limits: LimitsConfig, tools: int = 0) -> None:
    """The server's configured limits on choices, stop strings and tools."""
    check_max(request.n, limits.max_n, "n")
    check_count(len(request.stop_list()), limits.max_stop, "stop", "stop strings")
    check_count(tools, limits.max_tools, "tools", "tools")


def check_request_tokens(prompt_tokens: int, params: SamplingParams, n: int, limits: LimitsConfig) -> None:
    """Prompt plus every choice's maximum output must fit the per-request token limit."""
    check_total_tokens(prompt_tokens + n * params.max_tokens, limits.max_request_tokens, "max_tokens")


def check_token_ids(token_ids: list[int], n_vocab: int, param: str) -> None:
    for token_id in token_ids:
        if not 0 <= token_id < n_vocab:
            raise invalid(f"Token id {token_id} is out of vocabulary (0..{n_vocab - 1}).", param)


def truncate_prompt(token_ids: list[int], keep: int | None, max_model_len: int) -> list[int]:
    """`truncate_prompt_tokens`: keep the last k tokens (-1 means the model's maximum)."""
    if keep is None:
        return token_ids
    if keep == -1:
        keep = max_model_len
    if keep > max_model_len:
        raise invalid(
            f"truncate_prompt_tokens value ({keep}) is greater than max_model_len ({max_model_len}).",
            "truncate_prompt_tokens",
        )
    if keep == 0:
        raise invalid("truncate_prompt_tokens must be -1 or at least 1.", "truncate_prompt_tokens")
    return token_ids[-keep:]


def resolve_max_tokens(
    request: SamplingFields, prompt_len: int, max_model_len: int, default: int | None, what: str
) -> int:
    """The output budget, checked against the context as vLLM words it."""
    if prompt_len == 0:
        raise invalid(f"The {what} is empty.", what)
    if prompt_len >= max_model_len:
        raise invalid(
            f"This model's maximum context length is {max_model_len} tokens. However, your request "
            f"has {prompt_len} input tokens. Please reduce the length of the input {what}.",
            what,
        )
    room = max_model_len - prompt_len
    requested = request.requested_max_tokens()
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        raise invalid(
            f"'{param}' is too large: {requested}. This model's maximum context length is "
            f"{max_model_len} tokens and your request has {prompt_len} input tokens "
            f"({requested} > {max_model_len} - {prompt_len}).",
            param,
        )
    return requested


def sampling_params(
    request: SamplingFields, max_tokens: int, logprobs: int | None, prompt_logprobs: int | None = None
) -> SamplingParams:
    temperature = 1.0 if request.temperature is None else request.temperature
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=request.top_k if request.top_k not in (None, 0) else -1,
        min_p=request.min_p or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        presence_penalty=request.presence_penalty or 0.0,
        logit_bias={int(k): float(v) for k, v in (request.logit_bias or {}).items()},
        seed=request.seed,
        stop=tuple(request.stop_list()),
        stop_token_ids=tuple(request.stop_token_ids or ()),
        ignore_eos=request.ignore_eos,
        min_tokens=request.min_tokens,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )


@dataclass
class ChoiceResult:
    """A finished choice, accumulated from the engine's updates."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list[TokenLogprobs | None] | None = None


async def check_on_engine(
    model: GenerationModel,
    params: SamplingParams,
    n: int,
    constraint_param: str = "response_format",
    asked_as: dict[str, str] | None = None,
) -> None:
    """The engine's own checks, as 400s naming the parameter: what it cannot run, and a
    constraint that does not compile. `asked_as` renames an engine parameter to the request's
    (completions' `echo` asks for prompt log-probabilities)."""
    try:
        await model.check(params, n)
    except UnsupportedParameter as exc:
        param = (asked_as or {}).get(exc.param, exc.param)
        raise invalid(str(exc).replace(f"`{exc.param}`", f"`{param}`"), param) from exc
    except GrammarError as exc:
        raise invalid(str(exc), constraint_param) from exc


def start_streams(
    model: GenerationModel, prompts: list[list[int]], params: list[SamplingParams], n: int
) -> list[UpdateStream]:
    streams: list[UpdateStream] = []
    try:
        for prompt, param in zip(prompts, params, strict=True):
            streams.append(model.generate(prompt, param, n))
    except BaseException:
        for stream in streams:
            stream.cancel()
        raise
    return streams


async def merged_updates(streams: list[UpdateStream]) -> AsyncIterator[tuple[int, RequestUpdate]]:
    """Updates of several engine requests as they come, tagged with the request's position."""
    if len(streams) == 1:
        async for update in streams[0]:
            yield 0, update
        return
    out: asyncio.Queue[tuple[int, RequestUpdate | BaseException | None]] = asyncio.Queue()

    async def pump(position: int, stream: UpdateStream) -> None:
        try:
            async for update in stream:
                out.put_nowait((position, update))
        except Exception as exc:  # handed to the consumer
            out.put_nowait((position, exc))
        out.put_nowait((position, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        open_streams = len(streams)
        while open_streams:
            position, item = await out.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield position, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def cancel_all(streams: list[UpdateStream]) -> None:
    for stream in streams:
        stream.cancel()


async def collect(streams: list[UpdateStream], n: int, raw: Request) -> list[ChoiceResult]:
    """Run to the end (or until the client leaves); choices in prompt-major order."""
    results = [ChoiceResult() for _ in range(len(streams) * n)]

    async def consume() -> None:
        async for position, update in merged_updates(streams):
            if update.prompt_logprobs is not None:
                for result in results[position * n : (position + 1) * n]:
                    result.prompt_logprobs = update.prompt_logprobs
            for choice in update.choices:
                result = results[position * n + choice.index]
                result.text += choice.text
                result.token_ids.extend(choice.token_ids)
                result.logprobs.extend(choice.logprobs)
                if choice.finish_reason is not None:
                    result.finish_reason = choice.finish_reason
                    result.stop_reason = choice.stop_reason

    task = asyncio.create_task(consume())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                error = task.exception()
                if error is not None:
                    raise as_api_error(error)
                return results
            if await raw.is_disconnected():
                raise ApiError(ErrorKind.INVALID_REQUEST, "Client disconnected.")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        cancel_all(streams)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def as_api_error(exc: BaseException) -> ApiError:
    """An engine's failure as the API reports it: 503 while the engine is down, else 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, EngineUnavailable):
        return ApiError(
            ErrorKind.OVERLOADED,
            f"The model's engine is unavailable: {exc}; retry shortly.",
            headers={"Retry-After": str(exc.retry_after)},
        )
    return ApiError(ErrorKind.INTERNAL, f"Generation failed: {exc}")


def sse_error(exc: BaseException, raw: Request) -> bytes:
    """An error after the stream started: an error chunk (then the caller sends [DONE]); the
    request's usage record takes the error's status."""
    error = as_api_error(exc)
    note_stream_status(raw, error.status)
    return sse(error.body())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


def vllm_prompt_logprobs(
    model: GenerationModel, entries: list[TokenLogprobs | None] | None
) -> list[dict[str, Any] | None] | None:
    """vLLM's `prompt_logprobs`: per prompt token, {token id: logprob, rank, decoded_token}."""
    if entries is None:
        return None
    out: list[dict[str, Any] | None] = []
    for entry in entries:
        if entry is None:
            out.append(None)
            continue
        ranked = {t: (lp, rank) for rank, (t, lp) in enumerate(entry.top, start=1)}
        ranked[entry.token_id] = (entry.logprob, entry.rank)
        out.append(
            {
                str(t): {"logprob": lp, "rank": rank, "decoded_token": model.token_text(t)}
                for t, (lp, rank) in ranked.items()
            }
        )
    return out
