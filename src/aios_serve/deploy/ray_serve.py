"""Ray Serve deployment: each local model is its own Ray Serve application (replicas or
autoscaling from the model's `deployment` options) at `/models/<name>` on Ray's HTTP proxy, and
the aios-serve FastAPI app is the ingress at `/`, serving every model as a remote model whose
upstream is that route. Run it with `aios-serve serve --ray` or `python -m aios_serve.deploy.ray_serve`.

Needs `ray[serve]` (not a dependency of aios-serve: `make ray-venv` builds a venv with it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aios_serve.app import create_app
from aios_serve.config import ModelSpec, ServerConfig, load_config
from aios_serve.remote.settings import RemoteOptions, UpstreamSpec
from aios_serve.security.api_keys import ApiKeySpec

log = logging.getLogger("aios_serve.ray")

REPLICA_HEADER = "x-aios-replica"
INGRESS_OPTIONS: dict[str, Any] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}
# A replica reserves no CPU unless its config says so: Ray's default of one CPU each leaves the
# third model of the bundled defaults waiting forever on a 2-core machine. Models use every core
# they are given through their own thread pools; set `deployment.ray_actor_options` to reserve.
DEFAULT_DEPLOYMENT: dict[str, Any] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}
# Ray's proxy replaces a dead replica; the ingress only needs to notice a model route failing.
INGRESS_HEALTH = RemoteOptions(health_interval_s=2.0, unhealthy_after=3, healthy_after=1)


def route_of(spec: ModelSpec) -> str:
    return "/models/" + re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name)


def app_name_of(spec: ModelSpec) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name)


def model_config(config: ServerConfig, spec: ModelSpec, internal_key: str) -> ServerConfig:
    """One model's own server: only the ingress (holding the internal key) may call it. A replica
    is a process Ray supervises, so its generation engine stays in it (no worker of its own)."""
    key = ApiKeySpec(name="ingress", key=SecretStr(internal_key), admin=True)
    if spec.kind == "generate":
        spec = spec.model_copy(update={"options": {"worker": False, **spec.options}})
    return config.model_copy(update={"models": [spec], "api_keys": [key]})


def ingress_config(config: ServerConfig, http_url: str, internal_key: str) -> ServerConfig:
    """The user-facing server: every local model becomes a remote model on its Ray route."""
    models = []
    for spec in config.models:
        if spec.kind == "remote":
            models.append(spec)
            continue
        models.append(
            ModelSpec(
                name=spec.name,
                aliases=spec.aliases,
                kind="remote",
                capabilities=list(spec.resolved_capabilities()),
                max_model_len=spec.max_model_len,
                upstreams=[
                    UpstreamSpec(url=http_url + route_of(spec), model=spec.name, api_key=internal_key)
                ],
                remote=INGRESS_HEALTH,
            )
        )
    return config.model_copy(update={"models": models})


def with_served_capabilities(front: ServerConfig, local_names: set[str]) -> ServerConfig:
    """The ingress config with each local model's capabilities as its own server lists them (a
    generation model adds `tools` once its chat template is read); the config's where that server
    cannot be asked or the config lists them."""
    models = []
    for spec in front.models:
        upstream = spec.upstreams[0] if spec.upstreams else None
        if spec.name not in local_names or upstream is None:
            models.append(spec)
            continue
        key = upstream.key()
        try:
            response = httpx.get(
                f"{upstream.url}/v1/models",
                headers={"Authorization": f"Bearer {key}"} if key else {},
                timeout=INGRESS_HEALTH.connect_timeout_s,
            )
            cards = {card["id"]: card for card in response.json()["data"]}
            listed = cards[upstream.model or spec.name]["capabilities"]
            models.append(spec.model_copy(update={"capabilities": listed}))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("kept the configured capabilities of %s: %s", spec.name, exc)
            models.append(spec)
    return front.model_copy(update={"models": models})


def _ingress_builder(front: ServerConfig, local_names: set[str]) -> Callable[[], ASGIApp]:
    """Builds the ingress in its replica, which starts after the model applications have loaded."""

    def build() -> ASGIApp:
        return create_app(with_served_capabilities(front, local_names))

    return build


class ModelReplicaApp:
    """A model's server inside a replica: startup completes only once the model has loaded (so Ray
    routes nothing to a replica still loading), and responses name the replica that answered."""

    def __init__(self, app: FastAPI, replica: str) -> None:
        self.app = app
        self.replica = replica.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._after_loading(send))
            return

        async def named_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REPLICA_HEADER.encode(), self.replica)]
            await send(message)

        await self.app(scope, receive, named_send if scope["type"] == "http" else send)

    def _after_loading(self, send: Send) -> Send:
        registry = self.app.state.registry

        async def send_when_loaded(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                while not registry.ready and registry.load_error is None:
                    await asyncio.sleep(0.1)
                if registry.load_error is not None:
                    message = {"type": "lifespan.startup.failed", "message": str(registry.load_error)}
            await send(message)

        return send_when_loaded


def _model_app_builder(config: ServerConfig) -> Callable[[], ASGIApp]:
    def build() -> ASGIApp:
        from ray import serve

        replica = serve.get_replica_context().replica_id.to_full_id_str()
        return ModelReplicaApp(create_app(config), replica)

    return build


def build_applications(
    config: ServerConfig, http_url: str, internal_key: str | None = None
) -> list[tuple[str, str, Any]]:
    """(name, route prefix, bound application) for every local model, then the ingress."""
    from ray import serve

    internal_key = internal_key or secrets.token_urlsafe(24)
    applications: list[tuple[str, str, Any]] = []
    for spec in config.models:
        if spec.kind == "remote":
            continue
        builder = _model_app_builder(model_config(config, spec, internal_key))
        options = {**DEFAULT_DEPLOYMENT, **spec.deployment}
        deployment = serve.deployment(name=app_name_of(spec), **options)(serve.ingress(builder)())
        applications.append((app_name_of(spec), route_of(spec), deployment.bind()))
    front = ingress_config(config, http_url, internal_key)
    local_names = {spec.name for spec in config.models if spec.kind != "remote" and spec.capabilities is None}
    builder = _ingress_builder(front, local_names)
    ingress = serve.deployment(name="ingress", **INGRESS_OPTIONS)(serve.ingress(builder)())
    applications.append(("ingress", "/", ingress.bind()))
    return applications


def deploy(config: ServerConfig, host: str, port: int, internal_key: str | None = None) -> None:
    """Start (or join, with RAY_ADDRESS) a Ray cluster and run every application on it."""
    import ray
    from ray import serve

    # A local instance runs without the dashboard (its start hangs on small machines).
    local = {} if os.environ.get("RAY_ADDRESS") else {"include_dashboard": False}
    ray.init(ignore_reinit_error=True, **local)
    serve.start(http_options={"host": host, "port": port})
    local_url = f"http://127.0.0.1:{port}"
    for name, route, application in build_applications(config, local_url, internal_key):
        log.info("deploying %s at %s", name, route)
        serve.run(application, name=name, route_prefix=route, blocking=False)


def serve_with_ray(config: ServerConfig, host: str, port: int) -> None:
    """Deploy, then wait for SIGTERM/SIGINT and shut Ray Serve down."""
    from ray import serve

    deploy(config, host, port)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    log.info("serving on http://%s:%d through Ray Serve", host, port)
    stopped.wait()
    serve.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve aios-serve's models as Ray Serve deployments.")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    serve_with_ray(load_config(args.config), args.host, args.port)


if __name__ == "__main__":
    main()
