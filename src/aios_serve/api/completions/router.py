"""Routes of the Completions API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aios_serve.api.common.dependencies import registry_of
from aios_serve.api.common.protocol import ERROR_RESPONSES
from aios_serve.api.completions.protocol import CompletionRequest, CompletionResponse
from aios_serve.api.completions.serving import CompletionServing

router = APIRouter(tags=["completions"])


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses=ERROR_RESPONSES,
    summary="Create a text completion",
)
async def create_completion(request: CompletionRequest, raw: Request) -> Response:
    return await CompletionServing(registry_of(raw)).handle(request, raw)
