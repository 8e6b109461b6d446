"""Routes of /tokenize and /detokenize (vLLM's shapes), for prompts and for chat messages.
A remote model's requests are relayed to the same paths on its upstream."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aios_serve.api.chat.serving import template_messages
from aios_serve.api.common.dependencies import registry_of
from aios_serve.api.common.protocol import ERROR_RESPONSES
from aios_serve.api.common.responses import json_response
from aios_serve.api.common.sampling import check_token_ids
from aios_serve.api.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeResponse,
)
from aios_serve.config import Capability
from aios_serve.engine.generation import ChatTemplateError, GenerationModel
from aios_serve.errors import invalid
from aios_serve.registry import ModelRegistry
from aios_serve.served_model import ServedModel

router = APIRouter(tags=["tokenize"])


def _model(registry: ModelRegistry, name: str | None, capability: Capability) -> ServedModel:
    """The named model, or the first generation model when no name is given (as vLLM)."""
    if name is None:
        for model in registry.models:
            if capability in model.spec.resolved_capabilities():
                name = model.spec.name
                break
        else:
            raise invalid("No generation model is served; give `model`.", "model")
    return registry.resolve(name, capability)


def _generation_model(served: ServedModel) -> GenerationModel:
    """A model this process runs; the registry checked that it serves completions or chat."""
    assert isinstance(served, GenerationModel), f"tokenize on a {type(served).__name__}"
    return served


@router.post(
    "/tokenize",
    response_model=TokenizeResponse,
    responses=ERROR_RESPONSES,
    summary="Tokenize a prompt or chat messages",
)
async def tokenize(request: TokenizeChatRequest | TokenizeCompletionRequest, raw: Request) -> Response:
    capability: Capability = "chat" if isinstance(request, TokenizeChatRequest) else "completions"
    served = _model(registry_of(raw), request.model, capability)
    if served.forwarder is not None:
        return await served.forwarder.forward_path("/tokenize", raw)
    model = _generation_model(served)
    if isinstance(request, TokenizeChatRequest):
        tools = [tool.model_dump(exclude_none=True) for tool in request.tools] if request.tools else None
        add_generation_prompt = request.add_generation_prompt and not request.continue_final_message
        try:
            text = model.render_chat(
                template_messages(request.messages),
                tools,
                add_generation_prompt,
                request.chat_template_kwargs,
            )
        except ChatTemplateError as exc:
            raise invalid(str(exc), "messages") from exc
    else:
        text = request.prompt
    tokens = model.tokenize(text, add_special=request.add_special_tokens)
    token_strs = [model.token_text(t) for t in tokens] if request.return_token_strs else None
    return json_response(
        {
            "count": len(tokens),
            "max_model_len": model.max_model_len,
            "tokens": tokens,
            "token_strs": token_strs,
        }
    )


@router.post(
    "/detokenize",
    response_model=DetokenizeResponse,
    responses=ERROR_RESPONSES,
    summary="Turn token ids back into text",
)
async def detokenize(request: DetokenizeRequest, raw: Request) -> Response:
    served = _model(registry_of(raw), request.model, "completions")
    if served.forwarder is not None:
        return await served.forwarder.forward_path("/detokenize", raw)
    model = _generation_model(served)
    check_token_ids(request.tokens, model.n_vocab, "tokens")
    return json_response({"prompt": model.detokenize(request.tokens, skip_special=False)})
