"""Access to app-wide state from route handlers."""

from __future__ import annotations

from fastapi import Request

from aios_serve.registry import ModelRegistry


def registry_of(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry
