"""Chat completions serving: render the model's chat template, run the n choices, answer as
`chat.completion` (or stream `chat.completion.chunk`s)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from starlette.responses import Response, StreamingResponse

from aios_serve.api.chat.protocol import ChatCompletionRequest, ChatMessage, NamedToolChoice
from aios_serve.api.chat.structured import (
    ChoiceStreamer,
    OutputPlan,
    output_message,
    plan_output,
    prompt_tools,
)
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
from aios_serve.api.completions.protocol import usage_chunks
from aios_serve.engine.generation import GenerationModel, SamplingParams
from aios_serve.engine.generation.chat_template import ChatTemplateError
from aios_serve.engine.generation.interface import UpdateStream
from aios_serve.engine.generation.sampling import TokenLogprobs
from aios_serve.errors import invalid
from aios_serve.registry import ServedModel


@dataclass
class ChatWork:
    prompt_ids: list[int]
    prompt_text: str
    params: SamplingParams
    plan: OutputPlan = field(default_factory=OutputPlan)


@dataclass
class ChatOutcome:
    results: list[ChoiceResult] | None = None
    streams: list[UpdateStream] | None = None


def check_chat_fields(request: ChatCompletionRequest) -> None:
    """Cross-field checks, before the model lookup."""
    check_request_fields(request)
    if request.top_logprobs is not None and request.top_logprobs > 0 and not request.logprobs:
        raise invalid("top_logprobs requires logprobs to be true.", "top_logprobs")
    choice = request.tool_choice
    if choice is not None and choice != "none" and not request.tools:
        raise invalid("When using `tool_choice`, `tools` must be set.", "tool_choice")
    if isinstance(choice, NamedToolChoice):
        names = {tool.function.name for tool in request.tools or []}
        if choice.function.name not in names:
            raise invalid(
                f"tool_choice names the function `{choice.function.name}`, which is not in tools.",
                "tool_choice",
            )


def _content_text(message: ChatMessage) -> str | None:
    content = message.content
    if content is None or isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise invalid(f"Only text content parts are supported, not `{part.type}`.", "messages")
        texts.append(part.text)
    return "\n".join(texts)


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as the chat template expects them (tool-call arguments parsed to objects)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item = message.model_dump(exclude_none=True)
        item["content"] = _content_text(message)
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                arguments: Any = call.function.arguments
                if isinstance(arguments, str):
                    with contextlib.suppress(json.JSONDecodeError):
                        arguments = json.loads(arguments) if arguments else {}
                calls.append(
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": arguments},
                    }
                )
            item["tool_calls"] = calls
        out.append(item)
    return out


def content_logprobs(model: GenerationModel, entries: list[TokenLogprobs]) -> dict[str, Any]:
    """Chat's `logprobs.content` shape: token, logprob, bytes, top_logprobs."""
    content = []
    for entry in entries:
        top = [
            {"token": model.token_text(t), "logprob": lp, "bytes": list(model.token_bytes(t))}
            for t, lp in entry.top
        ]
        content.append(
            {
                "token": model.token_text(entry.token_id),
                "logprob": entry.logprob,
                "bytes": list(model.token_bytes(entry.token_id)),
                "top_logprobs": top,
            }
        )
    return {"content": content}


class ChatServing(ServingPipeline[ChatCompletionRequest, ChatWork, ChatOutcome]):
    capability = "chat"

    async def handle(self, request: ChatCompletionRequest, raw: Request) -> Response:
        check_chat_fields(request)
        self.raw = raw
        return await super().handle(request, raw)

    def validate(self, request: ChatCompletionRequest, model: ServedModel) -> None:
        check_request_limits(request, self.registry.config.limits, len(request.tools or []))
        check_model_limits(request, as_generator(model))

    async def preprocess(self, request: ChatCompletionRequest, model: ServedModel) -> ChatWork:
        generator = as_generator(model)
        messages = template_messages(request.messages)
        tools = prompt_tools(request)
        add_generation_prompt = request.add_generation_prompt and not request.continue_final_message
        try:
            text = generator.render_chat(messages, tools, add_generation_prompt, request.chat_template_kwargs)
        except ChatTemplateError as exc:
            raise invalid(str(exc), "messages") from exc
        if request.continue_final_message:
            final = messages[-1].get("content") or ""
            at = text.rfind(final)
            if final and at >= 0:
                text = text[: at + len(final)]
        prompt_ids = generator.tokenize(text, add_special=False)
        prompt_ids = truncate_prompt(prompt_ids, request.truncate_prompt_tokens, generator.max_model_len)
        max_tokens = resolve_max_tokens(request, len(prompt_ids), generator.max_model_len, None, "messages")
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        params = sampling_params(request, max_tokens, logprobs, request.prompt_logprobs)
        check_request_tokens(len(prompt_ids), params, request.n or 1, self.registry.config.limits)
        plan = plan_output(request, text, generator.options.reasoning_parser is not None)
        if plan.constraint is not None:
            params = replace(params, constraint=plan.constraint)
        constraint_param = "response_format" if plan.tool_names is None else "tools"
        await check_on_engine(
            generator, params, request.n or 1, constraint_param, asked_as={"logprobs": "top_logprobs"}
        )
        return ChatWork(prompt_ids, text, params, plan)

    async def run(
        self, request: ChatCompletionRequest, model: ServedModel, work: ChatWork, raw: Request
    ) -> ChatOutcome:
        n = request.n or 1
        if work.params.max_tokens == 0:
            return ChatOutcome(results=[ChoiceResult(finish_reason="length") for _ in range(n)])
        streams = start_streams(as_generator(model), [work.prompt_ids], [work.params], n)
        if request.stream:
            return ChatOutcome(streams=streams)
        return ChatOutcome(results=await collect(streams, n, raw))

    def build_response(
        self, request: ChatCompletionRequest, model: ServedModel, work: ChatWork, result: ChatOutcome
    ) -> Response:
        generator = as_generator(model)
        if result.streams is not None:
            return StreamingResponse(
                self._stream(request, generator, work, result.streams), media_type="text/event-stream"
            )
        assert result.results is not None
        prompt_tokens = len(work.prompt_ids)
        completion_tokens = sum(len(choice.token_ids) for choice in result.results)
        prefix = self._echo_prefix(request)
        choices = []
        for index, choice in enumerate(result.results):
            message, finish_reason = output_message(work.plan, choice.text, choice.finish_reason)
            if prefix:
                message["content"] = prefix + (message["content"] or "")
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": content_logprobs(generator, choice.logprobs) if request.logprobs else None,
                    "finish_reason": finish_reason,
                    "stop_reason": choice.stop_reason,
                }
            )
        note_usage(self.raw, prompt_tokens, completion_tokens)
        return json_response(
            {
                "id": new_id("chatcmpl"),
                "object": "chat.completion",
                "created": unix_now(),
                "model": request.model,
                "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens),
                "prompt_logprobs": (
                    vllm_prompt_logprobs(generator, result.results[0].prompt_logprobs)
                    if request.prompt_logprobs is not None and result.results
                    else None
                ),
                "system_fingerprint": None,
            }
        )

    @staticmethod
    def _echo_prefix(request: ChatCompletionRequest) -> str:
        """vLLM's chat `echo`: the last message's content, when it is the assistant's."""
        if request.echo and request.messages[-1].role == "assistant":
            return _content_text(request.messages[-1]) or ""
        return ""

    async def _stream(
        self,
        request: ChatCompletionRequest,
        generator: GenerationModel,
        work: ChatWork,
        streams: list[UpdateStream],
    ) -> AsyncIterator[bytes]:
        response_id, created, n = new_id("chatcmpl"), unix_now(), request.n or 1
        include_usage, continuous = usage_chunks(request.stream_options)
        prompt_tokens, completion_tokens = len(work.prompt_ids), 0
        raw = self.raw

        def chunk(choices: list[dict[str, Any]], with_usage: bool) -> bytes:
            payload: dict[str, Any] = {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "choices": choices,
            }
            if with_usage:
                payload["usage"] = usage(prompt_tokens, completion_tokens)
            return sse(payload)

        try:
            prefix = self._echo_prefix(request)
            for index in range(n):
                delta = {"role": "assistant", "content": prefix}
                first = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
                yield chunk([first], continuous)
            streamers = [ChoiceStreamer(work.plan) for _ in range(n)]
            async for _, update in merged_updates(streams):
                for choice in update.choices:
                    completion_tokens += len(choice.token_ids)
                    streamer = streamers[choice.index]
                    delta = streamer.feed(choice.text, final=choice.finish_reason is not None)
                    if (
                        choice.finish_reason is None
                        and not delta
                        and not (request.logprobs and choice.logprobs)
                    ):
                        continue
                    item: dict[str, Any] = {
                        "index": choice.index,
                        "delta": delta,
                        "logprobs": content_logprobs(generator, choice.logprobs)
                        if request.logprobs
                        else None,
                        "finish_reason": streamer.finish_reason(choice.finish_reason),
                    }
                    if choice.finish_reason is not None:
                        item["stop_reason"] = choice.stop_reason
                    yield chunk([item], continuous)
            if include_usage:
                yield chunk([], True)
        except Exception as exc:  # the stream has started: report in-band
            yield sse_error(exc, raw)
        finally:
            for stream in streams:
                stream.cancel()
            note_usage(raw, prompt_tokens, completion_tokens)
        yield SSE_DONE
