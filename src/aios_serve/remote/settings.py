"""Config of a `remote` model: its upstream servers, timeouts and health checks."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator


class UpstreamSpec(BaseModel):
    """One OpenAI-compatible server (vLLM, aios-serve, TEI, llama.cpp server) behind a served name."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1)
    """The server's root, e.g. `http://gpu-1:8000` (a trailing `/v1` is accepted and dropped)."""
    model: str | None = None
    """The name the upstream serves the model under; default: the served name."""
    api_key: str | None = None
    api_key_env: str | None = None
    """Read the key from this environment variable instead of writing it in the file."""

    @field_validator("url")
    @classmethod
    def _root_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"upstream url {url!r} must start with http:// or https://")
        return url.rstrip("/").removesuffix("/v1")

    def key(self) -> str | None:
        if self.api_key_env is not None:
            return os.environ.get(self.api_key_env) or self.api_key
        return self.api_key


class RemoteOptions(BaseModel):
    """How a remote model talks to its upstreams and decides which of them are healthy."""

    model_config = ConfigDict(extra="forbid")

    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0)
    """Longest wait for the next bytes of an upstream's answer (a long generation streams)."""
    write_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=256, gt=0)
    """Open connections to each upstream, at most."""
    health_path: str = "/health"
    health_interval_s: float = Field(default=5.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    unhealthy_after: int = Field(default=2, ge=1)
    """Failed checks in a row that eject an upstream (a refused connection ejects at once)."""
    healthy_after: int = Field(default=2, ge=1)
    """Passed checks in a row that re-admit an ejected upstream."""
