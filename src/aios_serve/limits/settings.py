"""The `limits` section of the server config: every limit with a safe default."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class LimitsConfig(BaseModel):
    """Bounds on one request's size and on how long and where it may wait."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=16 * MIB, gt=0)
    """Largest request body; larger is 413 before the body is parsed."""
    max_embedding_inputs: int = Field(default=2048, gt=0)
    """Inputs in one embedding request (OpenAI's limit)."""
    max_rerank_documents: int = Field(default=1000, gt=0)
    """Documents in one rerank request."""
    max_score_pairs: int = Field(default=1000, gt=0)
    """Pairs one score request forms (1:N and N:N alike)."""
    max_request_tokens: int = Field(default=300_000, gt=0)
    """Tokens one request may make the model read and write, all inputs and choices together."""
    max_n: int = Field(default=128, gt=0)
    """Largest `n` (choices per prompt)."""
    max_tools: int = Field(default=128, gt=0)
    """Functions in `tools`."""
    max_stop: int = Field(default=4, gt=0)
    """Stop strings in `stop`."""
    max_queued_requests: int | None = Field(default=None, gt=0)
    """Requests one model queues before answering 503 with Retry-After; a model's own
    `options.max_queued_requests` wins. None keeps each engine's default."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """Longest a request waits for its response to begin; past it the request is cancelled
    (its queued work dropped) and answers 504."""
