"""The usage record, and the API type a route belongs to."""

from __future__ import annotations

from dataclasses import dataclass

# Route paths (as declared, so unknown URLs never become labels) to the API type they serve.
API_TYPE_BY_PATH: dict[str, str] = {
    "/v1/embeddings": "embeddings",
    "/v1/embedding": "embeddings",
    "/rerank": "rerank",
    "/v1/rerank": "rerank",
    "/v2/rerank": "rerank",
    "/score": "score",
    "/v1/score": "score",
    "/v1/completions": "completions",
    "/v1/chat/completions": "chat",
    "/tokenize": "tokenize",
    "/detokenize": "detokenize",
}


def api_type_of(route_path: str) -> str:
    """The API type of a route: its known name, else the route's last path segment."""
    known = API_TYPE_BY_PATH.get(route_path)
    if known is not None:
        return known
    return route_path.rstrip("/").rsplit("/", 1)[-1] or "other"


@dataclass(frozen=True)
class UsageRecord:
    """One request that reached a model: who, what, how much, how it ended, how long it took."""

    time: float  # Unix seconds when the request arrived
    request_id: str
    caller: str
    model: str
    api: str
    prompt_tokens: int
    completion_tokens: int
    status: int
    latency_s: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
