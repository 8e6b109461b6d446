"""Routes of the Embedding API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aios_serve.api.common.dependencies import registry_of
from aios_serve.api.common.protocol import ERROR_RESPONSES
from aios_serve.api.embeddings.protocol import EmbeddingRequest, EmbeddingResponse
from aios_serve.api.embeddings.serving import EmbeddingServing

router = APIRouter(tags=["embeddings"])


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingResponse,
    responses=ERROR_RESPONSES,
    summary="Create embeddings",
)
@router.post(
    "/v1/embedding",
    response_model=EmbeddingResponse,
    responses=ERROR_RESPONSES,
    summary="Create embeddings (the reference's path)",
)
async def create_embeddings(request: EmbeddingRequest, raw: Request) -> Response:
    return await EmbeddingServing(registry_of(raw)).handle(request, raw)
