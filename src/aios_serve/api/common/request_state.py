"""Per-request facts that middleware reads after the response: caller, model and usage."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request


@dataclass(frozen=True)
class Caller:
    """Who sent a request: an API key's name, or anonymous when no keys are set."""

    name: str
    admin: bool = False


ANONYMOUS = Caller("anonymous")


def caller_of(request: Request) -> Caller:
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) else ANONYMOUS


def note_model(request: Request, served_name: str) -> None:
    request.state.model = served_name


def note_stream_status(request: Request, status: int) -> None:
    """A stream that ended with an in-band error: its usage record and metrics carry `status`
    (the HTTP status line, sent before the error, said 200)."""
    request.state.stream_status = status


def note_usage(request: Request, prompt_tokens: int, completion_tokens: int = 0) -> None:
    """Record the token usage a response reported; streaming responses call it at their end."""
    request.state.usage = (prompt_tokens, completion_tokens)
