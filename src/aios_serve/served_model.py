"""What every served model is, whatever runs it: the engines and the remote proxy implement these
protocols, and the registry (above them) builds and resolves them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from aios_serve.config import Capability, ModelSpec

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


class Forwarder(Protocol):
    """A model served elsewhere: the request, checked against the API, is passed on as is."""

    async def forward(self, capability: Capability, raw: Request) -> Response: ...

    async def forward_path(self, path: str, raw: Request) -> Response:
        """Relay a request to an endpoint outside the capabilities' own (`/tokenize`)."""


@runtime_checkable
class ServedModel(Protocol):
    """What every engine hands the registry, whatever its backend."""

    spec: ModelSpec
    forwarder: Forwarder | None
    """Set on a model that another server runs; None for the models this process runs."""

    @property
    def max_model_len(self) -> int: ...

    async def start(self) -> None:
        """Load weights and start workers; called once, off the request path."""

    async def stop(self) -> None:
        """Drain and release resources."""


@runtime_checkable
class ReportsCapabilities(Protocol):
    """A model that knows, once loaded, more than its config says it serves (e.g. `tools`)."""

    @property
    def capabilities(self) -> tuple[Capability, ...]: ...


def capabilities_of(model: ServedModel) -> tuple[Capability, ...]:
    """What a model serves: its own view where it has one, else its config's."""
    if isinstance(model, ReportsCapabilities):
        return model.capabilities
    return model.spec.resolved_capabilities()
