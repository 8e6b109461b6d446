"""The one fixed request pipeline: check the request → find the model → validate → preprocess →
run → build the response. Every stage gets the request's context. A model served elsewhere
(`model.forwarder`) skips the local stages: the validated request goes to its upstream.

Engines raise typed errors (`aios_serve.engine.errors`); the pipeline turns them into API errors
through `engine_error`, where each API names the parameter an engine error is about."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Protocol, TypeVar

from fastapi import Request
from starlette.responses import Response

from aios_serve.api.common.context import RequestContext, context_of
from aios_serve.config import Capability
from aios_serve.engine.errors import EngineError
from aios_serve.errors import ApiError, api_error_from_engine
from aios_serve.registry import ModelRegistry
from aios_serve.served_model import ServedModel


class NamesModel(Protocol):
    """Every API request names the model it is for."""

    model: str


RequestT = TypeVar("RequestT", bound=NamesModel)
ModelT = TypeVar("ModelT", bound=ServedModel)
WorkT = TypeVar("WorkT")
ResultT = TypeVar("ResultT")


class ServingPipeline(ABC, Generic[RequestT, ModelT, WorkT, ResultT]):
    """Each API family fills in the stages; the order never changes."""

    capability: ClassVar[Capability]
    model_type: ClassVar[type]
    """The engine's model class this API runs on (the registry checked the capability)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def handle(self, request: RequestT, raw: Request) -> Response:
        context = context_of(raw)
        self.check_request(request)
        served = self.registry.resolve(request.model, self.capability)
        context.model = request.model
        if served.forwarder is not None:
            # Checked against the API here; the upstream applies its own model's limits.
            return await served.forwarder.forward(self.capability, raw)
        assert isinstance(served, self.model_type), f"{self.capability} on a {type(served).__name__}"
        model: ModelT = served  # type: ignore[assignment]
        try:
            self.validate(context, request, model)
            work = await self.preprocess(context, request, model)
            result = await self.run(context, request, model, work)
            return self.build_response(context, request, model, work, result)
        except EngineError as exc:
            raise self.engine_error(exc, request) from exc

    def check_request(self, request: RequestT) -> None:
        """Cross-field checks that need no model; raise ApiError to refuse."""

    def validate(self, context: RequestContext, request: RequestT, model: ModelT) -> None:
        """Checks that need the model (dimensions, limits); raise ApiError to refuse."""

    @abstractmethod
    async def preprocess(self, context: RequestContext, request: RequestT, model: ModelT) -> WorkT: ...

    @abstractmethod
    async def run(
        self, context: RequestContext, request: RequestT, model: ModelT, work: WorkT
    ) -> ResultT: ...

    @abstractmethod
    def build_response(
        self, context: RequestContext, request: RequestT, model: ModelT, work: WorkT, result: ResultT
    ) -> Response:
        """The response body from the API's response model; sets `context.usage` (a stream sets
        it when it ends)."""

    def engine_error(self, exc: EngineError, request: RequestT) -> ApiError:
        """An engine error as this API reports it: override to name the request's parameter."""
        return api_error_from_engine(exc)
