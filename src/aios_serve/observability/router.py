"""`GET /metrics` in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aios_serve.observability.metrics import ServerMetrics

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(raw: Request) -> Response:
    server_metrics: ServerMetrics = raw.app.state.metrics
    return Response(server_metrics.render(), media_type=server_metrics.content_type)
