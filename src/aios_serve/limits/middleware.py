"""413 for request bodies above the limit, checked before any handler parses them."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aios_serve.errors import ApiError, ErrorKind, error_response


def _too_large(limit: int) -> str:
    return f"Request body is larger than this server's limit of {limit} bytes."


class BodySizeLimitMiddleware:
    """Refuses a declared Content-Length above the limit at once, and counts chunked bodies
    as they arrive so that an undeclared large body is cut off at the limit too."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                error = ApiError(ErrorKind.INVALID_REQUEST, "Invalid Content-Length header.")
                await error_response(error)(scope, receive, send)
                return
            if length > limit:
                error = ApiError(ErrorKind.PAYLOAD_TOO_LARGE, _too_large(limit))
                await error_response(error)(scope, receive, send)
                return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPException from body reading; errors.py maps 413.
                    raise HTTPException(413, _too_large(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await error_response(ApiError(ErrorKind.PAYLOAD_TOO_LARGE, str(exc.detail)))(scope, receive, send)
