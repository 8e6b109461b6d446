"""The FastAPI application: routers of every API family over one model registry."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import Response

from aios_serve import __version__
from aios_serve.banner import log_banner
from aios_serve.config import ServerConfig
from aios_serve.errors import ApiError, ErrorKind, error_response, install_error_handlers
from aios_serve.lifecycle import install_guards
from aios_serve.observability import install_observability, request_id_of
from aios_serve.registry import ModelRegistry
from aios_serve.security import OpenPaths, document_bearer_auth

log = logging.getLogger("aios_serve.app")

# One package per API family under aios_serve.api, each exposing `router`.
API_FAMILIES = (
    "models",
    "embeddings",
    "rerank",
    "score",
    "completions",
    "chat",
    "tokenize",
    "docs",
    "playground",
)


def _family_routers() -> list[object]:
    routers = []
    for family in API_FAMILIES:
        module_name = f"aios_serve.api.{family}.router"
        if importlib.util.find_spec(f"aios_serve.api.{family}") is None:
            continue
        if importlib.util.find_spec(module_name) is None:
            continue
        routers.append(importlib.import_module(module_name).router)
    return routers


def _stop_when_loading_failed(loading: asyncio.Task[None]) -> None:
    """A server whose models cannot load shuts down (the CLI then exits 1) rather than idle."""
    if not loading.cancelled() and loading.exception() is not None:
        log.critical("model loading failed; shutting down: %s", loading.exception())
        signal.raise_signal(signal.SIGTERM)


def create_app(config: ServerConfig, public_url: str | None = None) -> FastAPI:
    """Build the app; models load in the background and /health turns 200 when done, when the
    start-up banner lists them (with the playground, docs and metrics under `public_url`)."""
    registry = ModelRegistry(config)

    def announce_when_loaded(loading: asyncio.Task[None]) -> None:
        if not loading.cancelled() and loading.exception() is None:
            log_banner(registry, public_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        observability.start()
        loading = asyncio.create_task(registry.start())
        loading.add_done_callback(_stop_when_loading_failed)
        loading.add_done_callback(announce_when_loaded)
        try:
            yield
        finally:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await registry.stop()
            observability.stop()

    app = FastAPI(
        title="aios-serve",
        docs_url=None,  # offline Swagger UI and ReDoc come from aios_serve.api.docs
        redoc_url=None,
        version=__version__,
        summary="A self-hosted server for the AIOS API (OpenAI- and vLLM-compatible).",
        lifespan=lifespan,
    )
    app.state.registry = registry
    install_error_handlers(app)
    install_guards(app, config)  # request guard, API keys, body-size limit
    if config.api_keys:  # Swagger UI's Authorize button then sends the key
        document_bearer_auth(app, OpenPaths(config.open_paths))
    # Outermost: request ids, access log, metrics and usage records (also /metrics, /v1/usage).
    observability = install_observability(app, config, registry)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        response = error_response(ApiError(ErrorKind.INTERNAL, f"Internal error: {type(exc).__name__}"))
        response.headers["X-Request-Id"] = request_id_of(request)
        return response

    app.add_exception_handler(Exception, on_unexpected)
    for router in _family_routers():
        app.include_router(router)  # type: ignore[arg-type]
    return app
