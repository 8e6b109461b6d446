"""The one fixed request pipeline: check model → validate → preprocess → run → build response.
A remote model skips the local stages: the validated request is forwarded to its upstream."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Protocol, TypeVar

from fastapi import Request
from starlette.responses import Response

from aios_serve.api.common.request_state import note_model
from aios_serve.config import Capability
from aios_serve.engine.remote.model import RemoteModel
from aios_serve.registry import ModelRegistry, ServedModel


class NamesModel(Protocol):
    """Every API request names the model it is for."""

    model: str


RequestT = TypeVar("RequestT", bound=NamesModel)
WorkT = TypeVar("WorkT")
ResultT = TypeVar("ResultT")


class ServingPipeline(ABC, Generic[RequestT, WorkT, ResultT]):
    """Each API family fills in the stages; the order never changes."""

    capability: ClassVar[Capability]

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def handle(self, request: RequestT, raw: Request) -> Response:
        model = self.registry.resolve(request.model, self.capability)
        note_model(raw, request.model)
        if isinstance(model, RemoteModel):
            # Checked against the API here; the upstream applies its own model's limits.
            return await model.forward(self.capability, raw)
        self.validate(request, model)
        work = await self.preprocess(request, model)
        result = await self.run(request, model, work, raw)
        return self.build_response(request, model, work, result)

    def validate(self, request: RequestT, model: ServedModel) -> None:
        """Checks that need the model (dimensions, limits); raise ApiError to refuse."""

    @abstractmethod
    async def preprocess(self, request: RequestT, model: ServedModel) -> WorkT: ...

    @abstractmethod
    async def run(self, request: RequestT, model: ServedModel, work: WorkT, raw: Request) -> ResultT: ...

    @abstractmethod
    def build_response(
        self, request: RequestT, model: ServedModel, work: WorkT, result: ResultT
    ) -> Response: ...
