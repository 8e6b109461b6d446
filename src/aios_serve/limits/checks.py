"""Small checks that API families call with the configured limit: each raises a clear 400."""

from __future__ import annotations

from aios_serve.errors import invalid


def check_count(count: int, limit: int, param: str, what: str) -> None:
    """Refuse a list longer than `limit`, e.g. `check_count(len(docs), lim.max_rerank_documents,
    "documents", "documents")`."""
    if count > limit:
        raise invalid(f"{param}: {count} {what} exceed this server's limit of {limit} per request.", param)


def check_max(value: int | None, limit: int, param: str) -> None:
    """Refuse a numeric field above `limit`, e.g. `n`."""
    if value is not None and value > limit:
        raise invalid(f"{param} must be at most {limit}; got {value}.", param)


def check_total_tokens(tokens: int, limit: int, param: str | None = None) -> None:
    """Refuse a request that would make the model read and write more than `limit` tokens."""
    if tokens > limit:
        raise invalid(
            f"This request needs {tokens} tokens, more than this server's limit of {limit} "
            "tokens per request. Send fewer or shorter inputs.",
            param,
        )
