"""One request's context: who asked, for which model, under which id, what it used, and when its
first token left. Created by the observability middleware, filled in by security and every
pipeline stage, and read back once, after the response, for metrics and the usage record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import Scope


@dataclass(frozen=True)
class Caller:
    """Who sent a request: an API key's name, or anonymous when no keys are set."""

    name: str
    admin: bool = False


ANONYMOUS = Caller("anonymous")


@dataclass(frozen=True)
class Usage:
    """Tokens a request used: what it read and what it generated."""

    prompt_tokens: int
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class RequestContext:
    """What the layers of one request tell each other."""

    request_id: str
    caller: Caller = ANONYMOUS
    model: str | None = None
    """The served name the request asked for, once the registry found it."""
    usage: Usage | None = None
    stream_status: int | None = None
    """A stream that ended with an in-band error: the status its record takes (the status line,
    sent before the error, said 200)."""
    first_token_at: float | None = None
    cancelled: str | None = None
    """Why the request stopped early (`client_disconnected`), set by the request guard."""
    request: Request | None = None

    def note_first_token(self) -> None:
        """The first generated token is out (time to first token)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    async def disconnected(self) -> bool:
        """Whether the client has gone away (polled while a response is being computed)."""
        if self.cancelled is not None:
            return True
        return self.request is not None and await self.request.is_disconnected()


_STATE_KEY = "context"


def context_of(scope_or_request: Scope | Request, request_id: str = "-") -> RequestContext:
    """The request's context, created on first use (normally by the observability middleware)."""
    scope: Scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    state: dict[str, Any] = scope.setdefault("state", {})
    context = state.get(_STATE_KEY)
    if not isinstance(context, RequestContext):
        context = state[_STATE_KEY] = RequestContext(request_id)
    if isinstance(scope_or_request, Request) and context.request is None:
        context.request = scope_or_request
    return context
