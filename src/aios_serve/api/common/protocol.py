"""Protocol pieces shared by every API family."""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    """Base for request models: unknown fields are ignored, as OpenAI and vLLM do."""

    model_config = ConfigDict(extra="ignore")


class UsageInfo(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = 0
    prompt_tokens_details: None = None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorBody


def prompt_only_usage(prompt_tokens: int) -> dict[str, int | None]:
    """The `usage` object of an API that reads tokens and generates none."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


def new_id(prefix: str) -> str:
    """A unique response id such as `embd-1f0c…`."""
    return f"{prefix}-{uuid.uuid4().hex}"


def unix_now() -> int:
    return int(time.time())


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 500, 503)
}
