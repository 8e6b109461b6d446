"""Request and response models of the Rerank API (vLLM's shape, Cohere's field names accepted)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from aios_serve.api.common.protocol import ApiModel


class RerankDocument(ApiModel):
    text: str


def _check_documents(value: Any) -> Any:
    """Documents are strings or `{text}` objects; an empty list cannot be ranked."""
    if not isinstance(value, list):
        raise ValueError("documents must be an array of strings or {text} objects")
    if not value:
        raise ValueError("documents must not be empty")
    for index, item in enumerate(value):
        if isinstance(item, str):
            continue
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            continue
        raise ValueError(f"documents[{index}] must be a string or an object with a string `text`")
    return value


class RerankRequest(ApiModel):
    model: str
    query: str = Field(min_length=1)
    documents: Annotated[list[str | RerankDocument], BeforeValidator(_check_documents)]
    top_n: int = Field(default=0, ge=0, description="How many results to return; 0 returns all.")
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)
    return_documents: bool = True
    max_tokens_per_doc: int | None = Field(default=None, gt=0, description="Cohere's per-document cut.")

    def document_texts(self) -> list[str]:
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]


class RerankUsage(ApiModel):
    prompt_tokens: int
    total_tokens: int


class RerankResult(ApiModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = Field(
        default=None, description="Absent when return_documents is false."
    )


class RerankResponse(ApiModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]
