"""Routes of the Score API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aios_serve.api.common.dependencies import registry_of
from aios_serve.api.common.protocol import ERROR_RESPONSES
from aios_serve.api.score.protocol import ScoreRequest, ScoreResponse
from aios_serve.api.score.serving import ScoreServing

router = APIRouter(tags=["score"])


async def score(request: ScoreRequest, raw: Request) -> Response:
    return await ScoreServing(registry_of(raw)).handle(request, raw)


for path in ("/score", "/v1/score"):
    router.add_api_route(
        path,
        score,
        methods=["POST"],
        response_model=ScoreResponse,
        responses=ERROR_RESPONSES,
        summary="Score text pairs",
        operation_id=f"score_{path.strip('/').replace('/', '_')}",
    )
