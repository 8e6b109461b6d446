"""Request and response models of the Score API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from aios_serve.api.common.protocol import ApiModel, UsageInfo


class ScoreRequest(ApiModel):
    model: str
    text_1: str | list[str]
    text_2: str | list[str]
    encoding_format: Literal["float"] = "float"
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)

    @field_validator("text_1", "text_2")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("must not be an empty array")
        if any(not text for text in texts):
            raise ValueError("must not contain empty strings")
        return value


class ScoreData(ApiModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(ApiModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: UsageInfo
