"""Fast JSON responses through orjson: dicts, dataclasses, response models and numpy arrays."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SERIALIZE_DATACLASS


def _fields_of(value: Any) -> dict[str, Any]:
    """orjson's fallback for response models: their field values as they stand, so numpy rows
    inside a model (embeddings) are written directly, without a dump to dicts first."""
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_response(content: Any, status_code: int = 200) -> Response:
    """Serialize straight to bytes."""
    return Response(
        orjson.dumps(content, default=_fields_of, option=_OPTIONS),
        status_code=status_code,
        media_type="application/json",
    )
