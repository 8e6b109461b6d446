"""Routes of the Chat Completions API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aios_serve.api.chat.protocol import ChatCompletionRequest, ChatCompletionResponse
from aios_serve.api.chat.serving import ChatServing
from aios_serve.api.common.dependencies import registry_of
from aios_serve.api.common.protocol import ERROR_RESPONSES

router = APIRouter(tags=["chat"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses=ERROR_RESPONSES,
    summary="Create a chat completion",
)
async def create_chat_completion(request: ChatCompletionRequest, raw: Request) -> Response:
    return await ChatServing(registry_of(raw)).handle(request, raw)
