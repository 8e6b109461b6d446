"""The start-up banner: what is served and where, logged once every model has loaded."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from aios_serve.registry import ModelRegistry, ServedModel, capabilities_of

log = logging.getLogger("aios_serve.banner")

WILDCARD_HOSTS = ("", "0.0.0.0", "::")


@runtime_checkable
class NamesItsBackend(Protocol):
    """A served model that can say which backend runs it (`llama.cpp`, `transformers`, ...)."""

    @property
    def backend_name(self) -> str: ...


def public_url(host: str, port: int) -> str:
    """The base URL a local client reaches the server at; a wildcard host means this machine."""
    shown = "localhost" if host in WILDCARD_HOSTS else host
    if ":" in shown and not shown.startswith("["):  # an IPv6 address
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


@runtime_checkable
class DescribesItsBackend(Protocol):
    """A served model whose engine says more of itself (OpenVINO: the compiled precision)."""

    @property
    def backend_details(self) -> str: ...


def backend_of(model: ServedModel) -> str:
    """The backend's name, with what its engine says of itself in brackets."""
    if not isinstance(model, NamesItsBackend):
        return model.spec.kind  # a remote model: its upstreams run it
    details = model.backend_details if isinstance(model, DescribesItsBackend) else ""
    return f"{model.backend_name} ({details})" if details else model.backend_name


def banner_lines(registry: ModelRegistry, base_url: str | None) -> list[str]:
    """One line per served model, then the playground, docs and metrics URLs."""
    models = registry.models
    lines = [f"serving {len(models)} model{'s' if len(models) != 1 else ''}:"]
    for model in models:
        spec = model.spec
        aliases = f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else ""
        lines.append(
            f"  {spec.name}{aliases}: kind {spec.kind}; backend {backend_of(model)}; "
            f"capabilities {', '.join(capabilities_of(model)) or 'none'}; "
            f"max_model_len {model.max_model_len}"
        )
    if base_url is not None:
        lines += [
            f"playground: {base_url}/",
            f"API docs:   {base_url}/docs",
            f"metrics:    {base_url}/metrics",
        ]
    return lines


def log_banner(registry: ModelRegistry, base_url: str | None) -> None:
    for line in banner_lines(registry, base_url):
        log.info("%s", line)
