"""The API-key check: a pure ASGI middleware in front of every route."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from aios_serve.api.common.context import context_of
from aios_serve.errors import ApiError, ErrorKind, error_response
from aios_serve.security.api_keys import KeyRing

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="aios-serve"'}


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class OpenPaths:
    """Paths served without a key: exact paths, and prefixes written with a trailing `*`."""

    def __init__(self, patterns: Iterable[str]) -> None:
        paths = list(patterns)
        self.exact = frozenset(path for path in paths if not path.endswith("*"))
        self.prefixes = tuple(path.removesuffix("*") for path in paths if path.endswith("*"))

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (path in self.exact or path.startswith(self.prefixes))


class ApiKeyMiddleware:
    """Sets the request context's `caller` on every request: the key's caller, or anonymous when no keys
    are configured. With keys, a request without a valid `Authorization: Bearer <key>` is 401,
    except on `open_paths` (a trailing `*` makes a prefix) and CORS preflights, which never
    carry credentials."""

    def __init__(self, app: ASGIApp, keys: KeyRing, open_paths: Iterable[str]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = OpenPaths(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = context_of(scope)
        if not self.keys or scope["path"] in self.open_paths or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        caller = self.keys.caller_for(token) if token is not None else None
        if caller is None:
            message = (
                "Incorrect API key provided."
                if token is not None
                else "Missing API key: send it as `Authorization: Bearer <key>`."
            )
            error = ApiError(ErrorKind.UNAUTHORIZED, message, headers=CHALLENGE)
            await error_response(error)(scope, receive, send)
            return
        context.caller = caller
        await self.app(scope, receive, send)
