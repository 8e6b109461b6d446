"""Protocol pieces shared by every API family."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from aios_serve.api.common.context import Usage


class ApiModel(BaseModel):
    """Base for request models: unknown fields are ignored, as OpenAI and vLLM do."""

    model_config = ConfigDict(extra="ignore")


class UsageInfo(BaseModel):
    """The `usage` object of every API's response."""

    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: dict[str, Any] | None = None

    @classmethod
    def of(cls, usage: Usage) -> UsageInfo:
        """The response's `usage` for what the request context recorded."""
        return cls.model_construct(
            prompt_tokens=usage.prompt_tokens,
            total_tokens=usage.total_tokens,
            completion_tokens=usage.completion_tokens,
            prompt_tokens_details=None,
        )


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorBody


def new_id(prefix: str) -> str:
    """A unique response id such as `embd-1f0c…`."""
    return f"{prefix}-{uuid.uuid4().hex}"


def unix_now() -> int:
    return int(time.time())


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 500, 503)
}
