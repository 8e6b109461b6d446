"""Routes of the Rerank API: the same body on /rerank, /v1/rerank and /v2/rerank."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aios_serve.api.common.dependencies import registry_of
from aios_serve.api.common.protocol import ERROR_RESPONSES
from aios_serve.api.rerank.protocol import RerankRequest, RerankResponse
from aios_serve.api.rerank.serving import RerankServing

router = APIRouter(tags=["rerank"])


async def rerank(request: RerankRequest, raw: Request) -> Response:
    return await RerankServing(registry_of(raw)).handle(request, raw)


for path, summary in (
    ("/rerank", "Rerank documents against a query"),
    ("/v1/rerank", "Rerank documents against a query (v1 path)"),
    ("/v2/rerank", "Rerank documents against a query (Cohere v2 path)"),
):
    router.add_api_route(
        path,
        rerank,
        methods=["POST"],
        response_model=RerankResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary=summary,
        operation_id=f"rerank_{path.strip('/').replace('/', '_')}",
    )
