"""Response models of the model list, health and version endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from aios_serve.config import Capability


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "aios-serve"
    root: str
    parent: str | None = None
    max_model_len: int | None
    capabilities: list[Capability]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthStatus(BaseModel):
    status: Literal["ok", "loading", "failed"]
    models: dict[str, bool]


class VersionInfo(BaseModel):
    version: str
