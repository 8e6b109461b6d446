"""The serving base that chat and completions share (as vLLM's `OpenAIServing` beneath its chat
and completion servings): the checks, the engine's own checks, running the choices (with
client-disconnect cancellation), the outcome, usage, and the server-sent-event stream around
each API's own chunks."""

from __future__ import annotations

import asyncio
import contextlib
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import orjson
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from aios_serve.api.common.context import RequestContext, Usage
from aios_serve.api.common.pipeline import ServingPipeline
from aios_serve.api.common.protocol import UsageInfo, new_id, unix_now
from aios_serve.api.common.responses import json_response
from aios_serve.api.common.sampling import check_model_limits, check_request_fields, check_request_limits
from aios_serve.api.completions.protocol import SamplingFields, usage_chunks
from aios_serve.engine.errors import EngineError
from aios_serve.engine.generation import (
    GenerationModel,
    RequestUpdate,
    SamplingParams,
    TokenLogprobs,
    UpdateStream,
)
from aios_serve.errors import ApiError, ErrorKind, api_error_from_engine

DISCONNECT_POLL_S = 0.25
SSE_DONE = b"data: [DONE]\n\n"

RequestT = TypeVar("RequestT", bound=SamplingFields)
Updates = AsyncIterator[tuple[int, RequestUpdate]]
"""A request's engine updates as they come, each with its prompt's position."""
Choices = list[BaseModel]


@dataclass
class GenerationWork:
    """Tokenized prompts and their sampling parameters (one engine request each)."""

    prompts: list[list[int]]
    params: list[SamplingParams]

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


WorkT = TypeVar("WorkT", bound=GenerationWork)


@dataclass
class ChoiceResult:
    """A finished choice, accumulated from the engine's updates."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list[TokenLogprobs | None] | None = None


@dataclass
class GenerationOutcome:
    """What running a request gave: finished choices, or engine streams still to be read."""

    results: list[ChoiceResult] | None = None
    streams: list[UpdateStream] | None = None


@dataclass
class StreamTally:
    """Completion tokens streamed so far (for usage in chunks and the record)."""

    completion_tokens: int = 0


class GenerationServing(
    ServingPipeline[RequestT, GenerationModel, WorkT, GenerationOutcome], Generic[RequestT, WorkT]
):
    """Run, the stream skeleton, the outcome and usage; subclasses shape requests and chunks."""

    model_type = GenerationModel
    id_prefix: ClassVar[str]
    response_type: ClassVar[type[BaseModel]]
    chunk_type: ClassVar[type[BaseModel]]
    """The API's response and stream-chunk models."""

    def check_request(self, request: RequestT) -> None:
        check_request_fields(request)

    def validate(self, context: RequestContext, request: RequestT, model: GenerationModel) -> None:
        check_request_limits(request, self.registry.config.limits, self.tool_count(request))
        check_model_limits(request, model)

    def tool_count(self, request: RequestT) -> int:
        return 0

    async def run(
        self, context: RequestContext, request: RequestT, model: GenerationModel, work: WorkT
    ) -> GenerationOutcome:
        n = request.n or 1
        if work.params[0].max_tokens == 0:
            empty = [ChoiceResult(finish_reason="length") for _ in range(len(work.prompts) * n)]
            return GenerationOutcome(results=empty)
        streams = start_streams(model, work.prompts, work.params, n)
        if request.stream:
            return GenerationOutcome(streams=streams)
        return GenerationOutcome(results=await collect(context, streams, n))

    def build_response(
        self,
        context: RequestContext,
        request: RequestT,
        model: GenerationModel,
        work: WorkT,
        result: GenerationOutcome,
    ) -> Response:
        if result.streams is not None:
            events = self._events(context, request, model, work, result.streams)
            return StreamingResponse(events, media_type="text/event-stream")
        assert result.results is not None
        usage = Usage(work.prompt_tokens, sum(len(choice.token_ids) for choice in result.results))
        context.usage = usage
        choices, extra = self.final_choices(request, model, work, result.results)
        body = self.response_type.model_construct(
            id=new_id(self.id_prefix),
            object=self.response_type.model_fields["object"].default,
            created=unix_now(),
            model=request.model,
            choices=choices,
            usage=UsageInfo.of(usage),
            system_fingerprint=None,
            **extra,
        )
        return json_response(body)

    @abstractmethod
    def final_choices(
        self, request: RequestT, model: GenerationModel, work: WorkT, results: list[ChoiceResult]
    ) -> tuple[Choices, dict[str, Any]]:
        """The non-streaming response's choices, and any other fields of the API's own."""

    @abstractmethod
    def stream_choices(
        self, request: RequestT, model: GenerationModel, work: WorkT, updates: Updates
    ) -> AsyncIterator[Choices]:
        """Each chunk's choices, as the engine's updates come (position: the prompt's index)."""

    def engine_error(self, exc: EngineError, request: RequestT) -> ApiError:
        return api_error_from_engine(exc, self.constraint_param(request))

    def constraint_param(self, request: RequestT) -> str:
        """The request field an output constraint came from (named when it does not compile)."""
        return "response_format"

    async def _events(
        self,
        context: RequestContext,
        request: RequestT,
        model: GenerationModel,
        work: WorkT,
        streams: list[UpdateStream],
    ) -> AsyncIterator[bytes]:
        response_id, created = new_id(self.id_prefix), unix_now()
        include_usage, continuous = usage_chunks(request.stream_options)
        tally = StreamTally()
        chunk_type = self.chunk_type

        def event(choices: list[BaseModel], usage: bool) -> bytes:
            fields: dict[str, Any] = {
                "id": response_id,
                "object": chunk_type.model_fields["object"].default,
                "created": created,
                "model": request.model,
                "choices": choices,
            }
            if usage:
                fields["usage"] = UsageInfo.of(Usage(work.prompt_tokens, tally.completion_tokens))
            return sse(chunk_type.model_construct(**fields).model_dump(exclude_unset=True))

        try:
            updates = _counted(context, merged_updates(streams), tally)
            async for choices in self.stream_choices(request, model, work, updates):
                yield event(choices, continuous)
            if include_usage:
                yield event([], True)
        except Exception as exc:  # the stream has started: report in-band
            error = self.engine_error(exc, request) if isinstance(exc, EngineError) else as_api_error(exc)
            context.stream_status = error.status
            yield sse(error.body())
        finally:
            cancel_all(streams)
            context.usage = Usage(work.prompt_tokens, tally.completion_tokens)
        yield SSE_DONE


async def _counted(
    context: RequestContext, updates: AsyncIterator[tuple[int, RequestUpdate]], tally: StreamTally
) -> AsyncIterator[tuple[int, RequestUpdate]]:
    async for position, update in updates:
        for choice in update.choices:
            tally.completion_tokens += len(choice.token_ids)
            if choice.token_ids:
                context.note_first_token()
        yield position, update


def start_streams(
    model: GenerationModel, prompts: list[list[int]], params: list[SamplingParams], n: int
) -> list[UpdateStream]:
    streams: list[UpdateStream] = []
    try:
        for prompt, param in zip(prompts, params, strict=True):
            streams.append(model.generate(prompt, param, n))
    except BaseException:
        cancel_all(streams)
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


async def collect(context: RequestContext, streams: list[UpdateStream], n: int) -> list[ChoiceResult]:
    """Run to the end (or until the client leaves); choices in prompt-major order."""
    results = [ChoiceResult() for _ in range(len(streams) * n)]

    async def consume() -> None:
        async for position, update in _counted(context, merged_updates(streams), StreamTally()):
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
                    raise error if isinstance(error, EngineError) else as_api_error(error)
                return results
            if await context.disconnected():
                raise ApiError(ErrorKind.INVALID_REQUEST, "Client disconnected.")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        cancel_all(streams)


LINE_BREAKING = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))
"""U+0085, U+2028 and U+2029 in UTF-8, and their JSON escapes: generated text may hold them, and
clients that split a stream with `str.splitlines` (httpx's `iter_lines`) would cut an event there."""


def sse(payload: dict[str, Any]) -> bytes:
    data = orjson.dumps(payload)
    for raw, escaped in LINE_BREAKING:
        if raw in data:
            data = data.replace(raw, escaped)
    return b"data: " + data + b"\n\n"


def as_api_error(exc: BaseException) -> ApiError:
    """A failure that is not an engine's typed error: an ApiError as is, else a 500."""
    if isinstance(exc, ApiError):
        return exc
    return ApiError(ErrorKind.INTERNAL, f"Generation failed: {exc}")
