"""Fast JSON responses through orjson, numpy arrays included."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SERIALIZE_DATACLASS


def json_response(content: Any, status_code: int = 200) -> Response:
    """Serialize dicts, dataclasses and numpy arrays straight to bytes."""
    if hasattr(content, "model_dump"):
        content = content.model_dump(mode="json")
    return Response(
        orjson.dumps(content, option=_OPTIONS),
        status_code=status_code,
        media_type="application/json",
    )
