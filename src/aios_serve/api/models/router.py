"""`GET /v1/models`, `/health` and `/version`."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from aios_serve import __version__
from aios_serve.api.common.dependencies import registry_of
from aios_serve.api.common.protocol import unix_now
from aios_serve.api.common.responses import json_response
from aios_serve.api.models.protocol import HealthStatus, ModelCard, ModelList, VersionInfo
from aios_serve.observability.metrics import worker_health_of
from aios_serve.served_model import capabilities_of

router = APIRouter(tags=["models"])


class ServerHealth(HealthStatus):
    """`degraded`: every model loaded, but a model's engine worker is not ready (it died or hung
    and is restarting); `engines` names each worker model's state, `models` marks it false."""

    status: Literal["ok", "loading", "failed", "degraded"]  # type: ignore[assignment]
    engines: dict[str, str] = Field(default_factory=dict)


@router.get("/v1/models", response_model=ModelList, summary="List served models")
async def list_models(raw: Request) -> ModelList:
    registry = registry_of(raw)
    created = unix_now()
    cards: list[ModelCard] = []
    for model in registry.models:
        spec = model.spec
        max_len = model.max_model_len if registry.ready else spec.max_model_len
        capabilities = list(capabilities_of(model))  # a generation model adds `tools` once loaded
        for name in spec.served_names:
            cards.append(
                ModelCard(
                    id=name,
                    created=created,
                    root=spec.name,
                    parent=None if name == spec.name else spec.name,
                    max_model_len=max_len,
                    capabilities=capabilities,
                )
            )
    return ModelList(data=cards)


@router.get(
    "/health",
    response_model=ServerHealth,
    responses={503: {"model": ServerHealth}},
    summary="200 once every model is loaded and every engine worker is ready",
)
async def health(raw: Request) -> Response:
    registry = registry_of(raw)
    status: Literal["ok", "loading", "failed", "degraded"] = (
        "ok" if registry.ready else ("failed" if registry.load_error else "loading")
    )
    models = {m.spec.name: registry.ready for m in registry.models}
    engines: dict[str, str] = {}
    for model in registry.models:
        worker = worker_health_of(model)
        if worker is None:
            continue
        engines[model.spec.name] = worker.state
        if worker.state != "ready":
            models[model.spec.name] = False
            status = "degraded" if status == "ok" else status
    body = ServerHealth(status=status, models=models, engines=engines)
    return json_response(body, status_code=200 if status == "ok" else 503)


@router.get("/version", response_model=VersionInfo, summary="Server version")
async def version() -> VersionInfo:
    return VersionInfo(version=__version__)
