"""What engines raise, in engine terms: no request parameter names and no HTTP statuses.

Serving maps each type to a status and the parameter the request gave it in (`errors.py`,
`api_error_from_engine`), so the same engine error reads right in every API.
"""

from __future__ import annotations

from typing import Literal

PairSide = Literal["query", "document"]
"""Which side of a query-document pair an input is (relevance scoring)."""


class EngineError(Exception):
    """Base of every error an engine raises on purpose."""


class QueueFull(EngineError):
    """The engine has too many queued requests; retry shortly (503 with Retry-After)."""

    def __init__(self, message: str = "The model's request queue is full", retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineUnavailable(EngineError):
    """The engine is not running (its worker died or is restarting); 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GrammarError(EngineError, ValueError):
    """A schema or tool definition that cannot be compiled into a grammar."""


class InputTooLong(EngineError):
    """Input `index` has `length` tokens, more than the model's `limit` (`pair`: a text pair).
    `side`: in relevance scoring, the list the input came from (a pair counts as its document)."""

    def __init__(
        self, length: int, limit: int, index: int, pair: bool = False, side: PairSide | None = None
    ) -> None:
        super().__init__(f"input {index} has {length} tokens; the model takes at most {limit}")
        self.length = length
        self.limit = limit
        self.index = index
        self.pair = pair
        self.side = side


class TokenOutOfVocabulary(EngineError):
    """Input `index` holds `token_id`, which is not below the vocabulary size."""

    def __init__(self, token_id: int, vocab_size: int, index: int) -> None:
        bounds = f"(0..{vocab_size - 1})"
        super().__init__(f"input {index}: token id {token_id} is outside the vocabulary {bounds}")
        self.token_id = token_id
        self.vocab_size = vocab_size
        self.index = index


class InferenceFailed(EngineError):
    """A forward pass raised (a bug or a misconfigured model); `cause` names the exception's type.
    The original exception is chained; the engine has logged it."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"the forward pass failed: {cause}")
        self.cause = cause
