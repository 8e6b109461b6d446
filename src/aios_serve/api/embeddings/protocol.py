"""Request and response models of the Embedding API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SkipValidation

from aios_serve.api.common.protocol import ApiModel, UsageInfo

EmbeddingInput = str | list[str] | list[int] | list[list[int]]


def _check_input(value: Any) -> Any:
    """Accept the four OpenAI input shapes; refuse empty and mixed ones clearly."""
    if isinstance(value, str):
        if not value:
            raise ValueError("input must not be an empty string")
        return value
    if not isinstance(value, list):
        raise ValueError("input must be a string, an array of strings, or token ids")
    if not value:
        raise ValueError("input must not be an empty array")
    if all(isinstance(item, str) for item in value):
        if any(not item for item in value):
            raise ValueError("input must not contain empty strings")
        return value
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return value
    if all(isinstance(item, list) for item in value):
        for row in value:
            if not row:
                raise ValueError("input must not contain empty token arrays")
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in row):
                raise ValueError("token arrays must hold integers only")
        return value
    raise ValueError(
        "input must be a string, an array of strings, an array of token ids, "
        "or an array of token-id arrays, not a mix"
    )


class EmbeddingRequest(ApiModel):
    model: str
    input: Annotated[EmbeddingInput, BeforeValidator(_check_input)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0)
    user: str | None = None
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)


class EmbeddingData(ApiModel):
    index: int
    object: Literal["embedding"] = "embedding"
    embedding: SkipValidation[list[float] | str]
    """A float vector is kept as the engine's numpy row (orjson writes it as an array); base64 is
    the little-endian float32 bytes."""


class EmbeddingResponse(ApiModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[EmbeddingData]
    usage: UsageInfo
