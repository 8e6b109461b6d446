"""Chat completions serving: render the model's chat template, run the n choices, answer as
`chat.completion` (or stream `chat.completion.chunk`s)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from aios_serve.api.chat.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatMessage,
    ChatStreamChoice,
    ChoiceLogprobs,
    DeltaMessage,
    NamedToolChoice,
    ResponseMessage,
    TokenLogprob,
    TopLogprob,
)
from aios_serve.api.chat.structured import (
    ChoiceStreamer,
    OutputPlan,
    output_message,
    plan_output,
    prompt_tools,
)
from aios_serve.api.common.context import RequestContext
from aios_serve.api.common.generation import ChoiceResult, Choices, GenerationServing, GenerationWork, Updates
from aios_serve.api.common.logprobs import vllm_prompt_logprobs
from aios_serve.api.common.sampling import (
    check_request_fields,
    check_request_tokens,
    resolve_max_tokens,
    sampling_params,
    truncate_prompt,
)
from aios_serve.engine.generation import ChatTemplateError, GenerationModel, TokenLogprobs
from aios_serve.errors import invalid


@dataclass
class ChatWork(GenerationWork):
    prompt_text: str = ""
    plan: OutputPlan = field(default_factory=OutputPlan)


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


def content_logprobs(model: GenerationModel, entries: list[TokenLogprobs]) -> ChoiceLogprobs:
    """Chat's `logprobs.content` shape: token, logprob, bytes, top_logprobs."""

    def top(token_id: int, logprob: float) -> TopLogprob:
        return TopLogprob.model_construct(
            token=model.token_text(token_id), logprob=logprob, bytes=list(model.token_bytes(token_id))
        )

    content = [
        TokenLogprob.model_construct(
            token=model.token_text(entry.token_id),
            logprob=entry.logprob,
            bytes=list(model.token_bytes(entry.token_id)),
            top_logprobs=[top(t, lp) for t, lp in entry.top],
        )
        for entry in entries
    ]
    return ChoiceLogprobs.model_construct(content=content)


class ChatServing(GenerationServing[ChatCompletionRequest, ChatWork]):
    capability = "chat"
    id_prefix = "chatcmpl"
    response_type = ChatCompletionResponse
    chunk_type = ChatCompletionStreamResponse

    def check_request(self, request: ChatCompletionRequest) -> None:
        check_chat_fields(request)

    def tool_count(self, request: ChatCompletionRequest) -> int:
        return len(request.tools or [])

    def constraint_param(self, request: ChatCompletionRequest) -> str:
        return "tools" if request.tools and request.tool_choice != "none" else "response_format"

    async def preprocess(
        self, context: RequestContext, request: ChatCompletionRequest, model: GenerationModel
    ) -> ChatWork:
        messages = template_messages(request.messages)
        tools = prompt_tools(request)
        add_generation_prompt = request.add_generation_prompt and not request.continue_final_message
        try:
            text = model.render_chat(messages, tools, add_generation_prompt, request.chat_template_kwargs)
        except ChatTemplateError as exc:
            raise invalid(str(exc), "messages") from exc
        if request.continue_final_message:
            final = messages[-1].get("content") or ""
            at = text.rfind(final)
            if final and at >= 0:
                text = text[: at + len(final)]
        prompt_ids = model.tokenize(text, add_special=False)
        prompt_ids = truncate_prompt(prompt_ids, request.truncate_prompt_tokens, model.max_model_len)
        max_tokens = resolve_max_tokens(request, len(prompt_ids), model.max_model_len, None, "messages")
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        params = sampling_params(request, max_tokens, logprobs, request.prompt_logprobs)
        check_request_tokens(len(prompt_ids), params, request.n or 1, self.registry.config.limits)
        plan = plan_output(request, text, model.options.reasoning_parser is not None)
        if plan.constraint is not None:
            params = replace(params, constraint=plan.constraint)
        await model.check(params, request.n or 1)
        return ChatWork([prompt_ids], [params], text, plan)

    def final_choices(
        self,
        request: ChatCompletionRequest,
        model: GenerationModel,
        work: ChatWork,
        results: list[ChoiceResult],
    ) -> tuple[Choices, dict[str, Any]]:
        prefix = self._echo_prefix(request)
        choices: Choices = []
        for index, choice in enumerate(results):
            message, finish_reason = output_message(work.plan, choice.text, choice.finish_reason)
            if prefix:
                message["content"] = prefix + (message["content"] or "")
            choices.append(
                ChatChoice(
                    index=index,
                    message=ResponseMessage.model_validate(message),
                    logprobs=content_logprobs(model, choice.logprobs) if request.logprobs else None,
                    finish_reason=finish_reason,
                    stop_reason=choice.stop_reason,
                )
            )
        prompt_logprobs = None
        if request.prompt_logprobs is not None and results:
            prompt_logprobs = vllm_prompt_logprobs(model, results[0].prompt_logprobs)
        return choices, {"prompt_logprobs": prompt_logprobs}

    @staticmethod
    def _echo_prefix(request: ChatCompletionRequest) -> str:
        """vLLM's chat `echo`: the last message's content, when it is the assistant's."""
        if request.echo and request.messages[-1].role == "assistant":
            return _content_text(request.messages[-1]) or ""
        return ""

    async def stream_choices(
        self, request: ChatCompletionRequest, model: GenerationModel, work: ChatWork, updates: Updates
    ) -> AsyncIterator[Choices]:
        n = request.n or 1
        prefix = self._echo_prefix(request)
        for index in range(n):
            opening = DeltaMessage.model_construct(role="assistant", content=prefix)
            yield [
                ChatStreamChoice.model_construct(
                    index=index, delta=opening, logprobs=None, finish_reason=None
                )
            ]
        streamers = [ChoiceStreamer(work.plan) for _ in range(n)]
        async for _, update in updates:
            for choice in update.choices:
                streamer = streamers[choice.index]
                delta = streamer.feed(choice.text, final=choice.finish_reason is not None)
                if choice.finish_reason is None and not delta and not (request.logprobs and choice.logprobs):
                    continue
                item: dict[str, Any] = {
                    "index": choice.index,
                    "delta": DeltaMessage.model_construct(**delta),
                    "logprobs": content_logprobs(model, choice.logprobs) if request.logprobs else None,
                    "finish_reason": streamer.finish_reason(choice.finish_reason),
                }
                if choice.finish_reason is not None:
                    item["stop_reason"] = choice.stop_reason
                yield [ChatStreamChoice.model_construct(**item)]
