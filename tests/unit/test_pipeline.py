"""The request pipeline (`ServingPipeline`) in process: a tiny FastAPI app with one route whose
serving fills in the stages over a fake model, served by the real `ModelRegistry` and the real
error handlers, called through httpx's ASGI transport.

The fake model is the only stand-in: the thing under test is the pipeline (stage order, the
request context, engine errors as API errors, forwarding, model lookup), not an engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aios_serve import registry as registry_module
from aios_serve.api.common.context import RequestContext, Usage, context_of
from aios_serve.api.common.pipeline import ServingPipeline
from aios_serve.config import Capability, ModelSpec, ServerConfig
from aios_serve.engine.errors import EngineError, InputTooLong, QueueFull
from aios_serve.errors import ApiError, api_error_from_engine, install_error_handlers, invalid
from aios_serve.registry import ModelRegistry

LOCAL, ALIAS, ELSEWHERE, RERANKER = "fake-local", "fake-alias", "fake-elsewhere", "fake-reranker"
MAX_LEN = 8
STAGES = ["check_request", "validate", "preprocess", "run", "build_response"]


@dataclass
class Forwarded:
    """What the fake upstream got: the capability and the raw request's body."""

    capability: Capability
    body: bytes


@dataclass
class FakeForwarder:
    seen: list[Forwarded] = field(default_factory=list)

    async def forward(self, capability: Capability, raw: Request) -> Response:
        self.seen.append(Forwarded(capability, await raw.body()))
        return JSONResponse({"from": "upstream"}, status_code=202)


class FakeModel:
    """A ServedModel that loads nothing; `forwarder` set for a model served elsewhere."""

    def __init__(self, spec: ModelSpec, forwarder: FakeForwarder | None = None) -> None:
        self.spec = spec
        self.forwarder = forwarder
        self.started = False

    @property
    def max_model_len(self) -> int:
        return MAX_LEN

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False


class EchoRequest(BaseModel):
    model: str
    text: str
    refuse: bool = False
    """check_request refuses it (a cross-field check that needs no model)."""
    fail: Literal["validate", "preprocess", "run"] | None = None
    """The stage that raises `error`."""
    error: Literal["input_too_long", "queue_full", "invalid"] = "input_too_long"


def failure(kind: str) -> Exception:
    if kind == "queue_full":
        return QueueFull(retry_after=3)
    if kind == "invalid":
        return invalid("text: not allowed here.", "text")
    return InputTooLong(length=MAX_LEN + 4, limit=MAX_LEN, index=0)


class EchoServing(ServingPipeline):  # type: ignore[type-arg]
    """Splits the text into words (preprocess) and upper-cases them (run); records each stage."""

    capability = "embeddings"
    model_type = FakeModel

    def __init__(self, registry: ModelRegistry, stages: list[str]) -> None:
        super().__init__(registry)
        self.stages = stages

    def _stage(self, name: str, request: EchoRequest) -> None:
        self.stages.append(name)
        if request.fail == name:
            raise failure(request.error)

    def check_request(self, request: EchoRequest) -> None:
        self.stages.append("check_request")
        if request.refuse:
            raise invalid("refused before any model was looked up.", "refuse")

    def validate(self, context: RequestContext, request: EchoRequest, model: FakeModel) -> None:
        assert context.model == request.model, "the context names the model before validate"
        self._stage("validate", request)

    async def preprocess(self, context: RequestContext, request: EchoRequest, model: FakeModel) -> list[str]:
        self._stage("preprocess", request)
        return request.text.split()

    async def run(
        self, context: RequestContext, request: EchoRequest, model: FakeModel, work: list[str]
    ) -> list[str]:
        self._stage("run", request)
        return [word.upper() for word in work]

    def build_response(
        self,
        context: RequestContext,
        request: EchoRequest,
        model: FakeModel,
        work: list[str],
        result: list[str],
    ) -> Response:
        self.stages.append("build_response")
        context.usage = Usage(prompt_tokens=len(work))
        return JSONResponse({"model": request.model, "served_by": model.spec.name, "words": result})

    def engine_error(self, exc: EngineError, request: EchoRequest) -> ApiError:
        return api_error_from_engine(exc, "text")


class KeepContext:
    """Creates each request's context first, as the observability middleware does, and keeps it
    for the test to read after the response."""

    def __init__(self, app: ASGIApp, kept: list[RequestContext]) -> None:
        self.app = app
        self.kept = kept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.kept.append(context_of(scope, request_id=f"req-{len(self.kept)}"))
        await self.app(scope, receive, send)


@dataclass
class Harness:
    client: httpx.AsyncClient
    registry: ModelRegistry
    stages: list[str]
    contexts: list[RequestContext]
    forwarder: FakeForwarder

    async def post(self, **body: Any) -> httpx.Response:
        self.stages.clear()
        return await self.client.post("/v1/echo", json=body)

    @property
    def context(self) -> RequestContext:
        return self.contexts[-1]


def build_fake(forwarder: FakeForwarder) -> Callable[[ModelSpec], FakeModel]:
    def build(spec: ModelSpec) -> FakeModel:
        return FakeModel(spec, forwarder if spec.kind == "remote" else None)

    return build


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    forwarder = FakeForwarder()
    monkeypatch.setattr(registry_module, "build_model", build_fake(forwarder))
    config = ServerConfig(
        models=[
            ModelSpec(name=LOCAL, aliases=[ALIAS], kind="embedding", path="/models/fake"),
            ModelSpec(
                name=ELSEWHERE,
                kind="remote",
                capabilities=["embeddings"],
                upstreams=[{"url": "http://upstream.invalid"}],  # type: ignore[list-item]
            ),
            ModelSpec(name=RERANKER, kind="cross-encoder", path="/models/fake-reranker"),
        ]
    )
    registry = ModelRegistry(config)
    await registry.start()
    assert all(isinstance(model, FakeModel) and model.started for model in registry.models)

    stages: list[str] = []
    contexts: list[RequestContext] = []
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/echo")
    async def echo(request: EchoRequest, raw: Request) -> Response:
        return await EchoServing(registry, stages).handle(request, raw)

    app.add_middleware(KeepContext, kept=contexts)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pipeline.test") as client:
        yield Harness(client, registry, stages, contexts, forwarder)
    await registry.stop()


def assert_error(response: httpx.Response, status: int, kind: str, param: str | None) -> dict[str, Any]:
    """The OpenAI error shape: one `error` object with exactly these four fields."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (kind, param, status)
    return error


async def test_the_stages_run_in_order_and_the_context_carries_model_and_usage(harness: Harness) -> None:
    response = await harness.post(model=LOCAL, text="one two three")
    assert response.status_code == 200, response.text
    assert response.json() == {"model": LOCAL, "served_by": LOCAL, "words": ["ONE", "TWO", "THREE"]}
    assert harness.stages == STAGES
    assert harness.context.model == LOCAL
    assert harness.context.usage == Usage(prompt_tokens=3)
    assert harness.context.request_id == "req-0"  # the context the middleware made, not a new one


async def test_an_alias_is_the_model_the_request_named(harness: Harness) -> None:
    response = await harness.post(model=ALIAS, text="a b")
    assert response.json()["served_by"] == LOCAL
    assert harness.context.model == ALIAS  # usage is recorded under the name the caller used
    assert harness.context.usage == Usage(prompt_tokens=2)


@pytest.mark.parametrize("stage", ["validate", "preprocess", "run"])
async def test_input_too_long_in_any_stage_is_a_400_naming_the_parameter(
    harness: Harness, stage: str
) -> None:
    response = await harness.post(model=LOCAL, text="x", fail=stage, error="input_too_long")
    error = assert_error(response, 400, "BadRequestError", "text")
    assert f"maximum context length is {MAX_LEN} tokens" in error["message"]
    assert f"{MAX_LEN + 4} tokens in text[0]" in error["message"]
    assert harness.stages == STAGES[: STAGES.index(stage) + 1]  # nothing ran after the failure
    assert harness.context.model == LOCAL and harness.context.usage is None


async def test_a_full_queue_is_a_503_with_retry_after(harness: Harness) -> None:
    response = await harness.post(model=LOCAL, text="x", fail="run", error="queue_full")
    error = assert_error(response, 503, "ServiceUnavailableError", None)
    assert response.headers["retry-after"] == "3"
    assert "queue is full" in error["message"]
    assert harness.stages == ["check_request", "validate", "preprocess", "run"]
    assert harness.context.usage is None


async def test_an_api_error_raised_by_a_stage_passes_through_as_it_is(harness: Harness) -> None:
    response = await harness.post(model=LOCAL, text="x", fail="validate", error="invalid")
    error = assert_error(response, 400, "BadRequestError", "text")
    assert error["message"] == "text: not allowed here."
    assert harness.stages == ["check_request", "validate"]


async def test_check_request_refuses_before_the_model_is_looked_up(harness: Harness) -> None:
    response = await harness.post(model="no-such-model", text="x", refuse=True)
    assert_error(response, 400, "BadRequestError", "refuse")  # not the unknown model's 404
    assert harness.stages == ["check_request"]
    assert harness.context.model is None


async def test_an_unknown_model_is_a_404_listing_the_served_names(harness: Harness) -> None:
    response = await harness.post(model="no-such-model", text="x")
    error = assert_error(response, 404, "NotFoundError", "model")
    assert "no-such-model" in error["message"]
    for name in (LOCAL, ALIAS, ELSEWHERE, RERANKER):
        assert name in error["message"]
    assert harness.stages == ["check_request"]
    assert harness.context.model is None and harness.context.usage is None


async def test_a_model_without_the_capability_is_a_400(harness: Harness) -> None:
    response = await harness.post(model=RERANKER, text="x")
    error = assert_error(response, 400, "BadRequestError", "model")
    assert "embeddings" in error["message"]
    assert harness.stages == ["check_request"]


async def test_a_model_with_a_forwarder_skips_the_local_stages(harness: Harness) -> None:
    response = await harness.post(model=ELSEWHERE, text="one two")
    assert (response.status_code, response.json()) == (202, {"from": "upstream"})
    assert harness.stages == ["check_request"]  # checked against the API, then passed on
    (forwarded,) = harness.forwarder.seen
    assert forwarded.capability == "embeddings"
    assert json.loads(forwarded.body) == {"model": ELSEWHERE, "text": "one two"}  # the request as sent
    assert harness.context.model == ELSEWHERE


async def test_models_still_loading_answer_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "build_model", build_fake(FakeForwarder()))
    registry = ModelRegistry(ServerConfig(models=[ModelSpec(name=LOCAL, kind="embedding", path="/m")]))
    app = FastAPI()
    install_error_handlers(app)
    stages: list[str] = []

    @app.post("/v1/echo")
    async def echo(request: EchoRequest, raw: Request) -> Response:
        return await EchoServing(registry, stages).handle(request, raw)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/v1/echo", json={"model": LOCAL, "text": "x"})
    assert_error(response, 503, "ServiceUnavailableError", None)
    assert response.headers["retry-after"] == "1"
    assert stages == ["check_request"]
