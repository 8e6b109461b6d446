"""The server's YAML configuration: which models to serve, and how."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aios_serve.limits.settings import LimitsConfig
from aios_serve.native_memory import MemoryConfig
from aios_serve.remote.settings import RemoteOptions, UpstreamSpec
from aios_serve.security.api_keys import ApiKeySpec

Capability = Literal["embeddings", "rerank", "score", "completions", "chat", "tools"]
ModelKind = Literal["embedding", "cross-encoder", "generate", "remote"]

CAPABILITIES_BY_KIND: dict[str, tuple[Capability, ...]] = {
    "embedding": ("embeddings", "rerank", "score"),
    "cross-encoder": ("rerank", "score"),
    "generate": ("completions", "chat"),
    "remote": (),  # a remote model's capabilities are those its config lists
}

DEFAULT_CONFIG_PATH = Path(__file__).parent / "default_config.yaml"


class ModelSpec(BaseModel):
    """One served model: its names, its kind, where its weights are, and engine options."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    kind: ModelKind
    path: str | None = None
    bundled: str | None = None
    capabilities: list[Capability] | None = None
    max_model_len: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    upstreams: list[UpstreamSpec] = Field(default_factory=list)
    """For kind `remote`: the OpenAI-compatible servers requests are forwarded to."""
    remote: RemoteOptions = Field(default_factory=RemoteOptions)
    deployment: dict[str, Any] = Field(default_factory=dict)
    """Ray Serve deployment options for `serve --ray` (num_replicas, autoscaling_config, ...)."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.kind == "remote":
            if self.path is not None or self.bundled is not None or not self.upstreams:
                raise ValueError(f"remote model {self.name!r}: give 'upstreams', not 'path' or 'bundled'")
            if not self.capabilities:
                raise ValueError(f"remote model {self.name!r}: list its 'capabilities' (e.g. [chat])")
            return self
        if self.upstreams:
            raise ValueError(f"model {self.name!r}: 'upstreams' needs kind 'remote'")
        if (self.path is None) == (self.bundled is None):
            raise ValueError(f"model {self.name!r}: give exactly one of 'path' or 'bundled'")
        return self

    @property
    def served_names(self) -> list[str]:
        return [self.name, *self.aliases]

    def resolved_capabilities(self) -> tuple[Capability, ...]:
        if self.capabilities is not None:
            return tuple(self.capabilities)
        return CAPABILITIES_BY_KIND[self.kind]


class ServerConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1)
    data_dir: str | None = None
    """Folder for the server's data (the usage store, usage.sqlite3); default ./data."""
    record_usage: bool = True
    """One usage record per request that reaches a model; off for a server behind another."""
    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    """With any key set, every path but `open_paths` needs `Authorization: Bearer <key>`."""
    open_paths: list[str] = Field(
        # The playground and the docs pages hold no data: the playground sends the user's key itself.
        default_factory=lambda: [
            "/health",
            "/metrics",
            "/",
            "/playground",
            "/playground/assets/*",
            "/docs",
            "/redoc",
            "/docs-assets/*",
            "/openapi.json",
        ]
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    """Allocator and kernel-cache bounds for the server process (aios_serve/native_memory.py)."""
    drain_timeout_s: int = Field(default=30, ge=0)
    """On SIGTERM, how long requests in flight may take to finish before they are cancelled."""

    @model_validator(mode="after")
    def _unique_names(self) -> ServerConfig:
        seen: set[str] = set()
        for spec in self.models:
            for name in spec.served_names:
                if name in seen:
                    raise ValueError(f"served name {name!r} is used twice")
                seen.add(name)
        return self

    @model_validator(mode="after")
    def _queue_bound(self) -> ServerConfig:
        """`limits.max_queued_requests` applies to every model that sets no bound of its own."""
        if self.limits.max_queued_requests is not None:
            for spec in self.models:
                spec.options.setdefault("max_queued_requests", self.limits.max_queued_requests)
        return self


def load_config(path: Path | None = None) -> ServerConfig:
    """Read a YAML config; with no path, the bundled defaults."""
    source = path or DEFAULT_CONFIG_PATH
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    config = ServerConfig.model_validate(raw)
    base = source.parent
    for spec in config.models:
        if spec.path is not None and not Path(spec.path).expanduser().is_absolute():
            spec.path = str((base / spec.path).resolve())
    return config
