"""API errors as values, and the one place that maps them to HTTP statuses."""

from __future__ import annotations

import enum
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from aios_serve.engine.errors import (
    EngineUnavailable,
    GrammarError,
    InferenceFailed,
    InputTooLong,
    QueueFull,
    TokenOutOfVocabulary,
)


class ErrorKind(enum.Enum):
    """What went wrong, independent of transport."""

    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_TASK = "unsupported_task"
    MODEL_NOT_FOUND = "model_not_found"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    BAD_GATEWAY = "bad_gateway"
    INTERNAL = "internal"


STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.UNSUPPORTED_TASK: 400,
    ErrorKind.MODEL_NOT_FOUND: 404,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.PAYLOAD_TOO_LARGE: 413,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.BAD_GATEWAY: 502,
    ErrorKind.INTERNAL: 500,
}

TYPE_BY_KIND: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "BadRequestError",
    ErrorKind.UNSUPPORTED_TASK: "BadRequestError",
    ErrorKind.MODEL_NOT_FOUND: "NotFoundError",
    ErrorKind.UNAUTHORIZED: "AuthenticationError",
    ErrorKind.FORBIDDEN: "PermissionDeniedError",
    ErrorKind.NOT_FOUND: "NotFoundError",
    ErrorKind.METHOD_NOT_ALLOWED: "MethodNotAllowedError",
    ErrorKind.PAYLOAD_TOO_LARGE: "PayloadTooLargeError",
    ErrorKind.OVERLOADED: "ServiceUnavailableError",
    ErrorKind.TIMEOUT: "TimeoutError",
    ErrorKind.BAD_GATEWAY: "BadGatewayError",
    ErrorKind.INTERNAL: "InternalServerError",
}


class ApiError(Exception):
    """An error value that any layer may raise; `error_response` renders it."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS_BY_KIND[self.kind]

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": TYPE_BY_KIND[self.kind],
                "param": self.param,
                "code": self.status,
            }
        }


def invalid(message: str, param: str | None = None) -> ApiError:
    """A 400 for a request that is well formed JSON but cannot be served."""
    return ApiError(ErrorKind.INVALID_REQUEST, message, param)


def error_response(error: ApiError) -> Response:
    return Response(
        orjson.dumps(error.body()),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


def _param_from_location(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    # pydantic adds the union member's tag (e.g. "str", "list[str]") to the path; drop those.
    parts = [p for p in parts if "[" not in p and p not in {"str", "int", "function-after"}]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> ApiError:
    """Turn FastAPI's validation failure into a 400 that names the field."""
    errors = list(exc.errors())
    if not errors:
        return invalid("Invalid request body.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return invalid(f"Malformed JSON body: {first.get('msg', 'invalid JSON')}.")
    param = _param_from_location(tuple(first.get("loc", ())))
    if param is None and first.get("type") == "model_attributes_type":
        return invalid("The request body must be a JSON object (send Content-Type: application/json).")
    message = str(first.get("msg", "Invalid value")).removeprefix("Value error, ")
    if param:
        message = f"{param}: {message}"
    return invalid(message, param)


_KIND_BY_HTTP_STATUS = {
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.METHOD_NOT_ALLOWED,
    413: ErrorKind.PAYLOAD_TOO_LARGE,
}


def install_error_handlers(app: FastAPI) -> None:
    """Register the single mapping from exceptions to OpenAI-shaped error responses."""

    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _KIND_BY_HTTP_STATUS.get(exc.status_code, ErrorKind.INVALID_REQUEST)
        return error_response(ApiError(kind, str(exc.detail)))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def api_error_from_engine(exc: BaseException, param: str | None = None) -> ApiError:
    """An engine's typed error as the API reports it. `param` is the request field the engine's
    input came from. Anything untyped is a 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (QueueFull, EngineUnavailable)):
        what = str(exc) if isinstance(exc, QueueFull) else f"the model's engine is unavailable: {exc}"
        message = f"{what[:1].upper()}{what[1:]}; retry shortly."
        return ApiError(ErrorKind.OVERLOADED, message, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, GrammarError):
        return invalid(str(exc), param)
    if isinstance(exc, InputTooLong):
        where = f"{param}[{exc.index}]"
        return invalid(
            f"This model's maximum context length is {exc.limit} tokens. However, you requested "
            f"{exc.length} tokens in {'the pair with ' + where if exc.pair else where}. Please "
            "reduce the length of the input.",
            param,
        )
    if isinstance(exc, TokenOutOfVocabulary):
        return invalid(
            f"{param}[{exc.index}]: token id {exc.token_id} is outside the vocabulary "
            f"(0..{exc.vocab_size - 1}).",
            param,
        )
    if isinstance(exc, InferenceFailed):
        return ApiError(ErrorKind.INTERNAL, f"Inference failed: {exc.cause}")
    return ApiError(ErrorKind.INTERNAL, f"The engine failed: {type(exc).__name__}: {exc}")
