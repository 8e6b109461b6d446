"""`GET /v1/usage` (aggregates as JSON) and `GET /usage/report` (the HTML report page)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, Response

from aios_serve.api.common.context import Caller, context_of
from aios_serve.api.common.protocol import ERROR_RESPONSES
from aios_serve.api.common.responses import json_response
from aios_serve.errors import ApiError, ErrorKind
from aios_serve.usage.queries import GROUP_KEYS, UsageQuery, build_query, iso_utc, parse_bucket
from aios_serve.usage.report import bucket_starts, page_html, series_from_rows
from aios_serve.usage.store import UsageStore

router = APIRouter(tags=["usage"])

# The page loads nothing: no script, no image, no font; only its own inline style.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
TOTAL_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")
# The report page shows at most this many buckets (a year of days, or a year of hours).
MAX_REPORT_HOURS = 8784


def store_of(request: Request) -> UsageStore:
    store: UsageStore = request.app.state.usage_store
    return store


def scoped_to(query: UsageQuery, caller: Caller) -> UsageQuery:
    """An admin reads anyone's usage; any other caller reads only their own."""
    if caller.admin:
        return query
    if query.caller is not None and query.caller != caller.name:
        raise ApiError(ErrorKind.FORBIDDEN, "Only an admin key reads other callers' usage.", "caller")
    return dataclasses.replace(query, caller=caller.name)


def totals_of(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {name: sum(int(row[name]) for row in rows) for name in TOTAL_FIELDS}


@router.get("/v1/usage", responses=ERROR_RESPONSES, summary="Usage aggregates")
async def read_usage(
    raw: Request,
    start: str | None = Query(None, description="Unix seconds or ISO 8601; default: the first record"),
    end: str | None = Query(None, description="Unix seconds or ISO 8601, exclusive; default: now"),
    group_by: str | None = Query(None, description=f"comma-separated subset of {', '.join(GROUP_KEYS)}"),
    bucket: str | None = Query(None, description="hour or day: also group by time bucket (UTC)"),
    caller: str | None = Query(None, description="only this caller's records (admin keys only)"),
) -> Response:
    """Calls and tokens, grouped by caller, model, API type and time bucket."""
    query = scoped_to(build_query(start, end, group_by, bucket, caller), context_of(raw).caller)
    rows = await store_of(raw).aggregate_async(query)
    return json_response(
        {
            "object": "usage",
            "start": iso_utc(query.start) if query.start is not None else None,
            "end": iso_utc(query.end) if query.end is not None else None,
            "group_by": list(query.group_by),
            "bucket": query.bucket,
            "caller": query.caller,
            "data": rows,
            "totals": totals_of(rows),
        }
    )


@router.get(
    "/usage/report",
    responses={200: {"content": {"text/html": {}}, "description": "The report page"}, **ERROR_RESPONSES},
    summary="Usage report page",
)
async def usage_report(
    raw: Request,
    hours: int = Query(24, ge=1, le=MAX_REPORT_HOURS, description="window: the last N hours"),
    bucket: str | None = Query(None, description="hour or day; default: hour up to 72 hours"),
) -> Response:
    """Calls and tokens over time per model, charted as SVG on the server."""
    caller = context_of(raw).caller
    chosen = parse_bucket(bucket) or ("hour" if hours <= 72 else "day")
    end = time.time()
    start = end - hours * 3600
    starts = bucket_starts(start, end, chosen)
    window = scoped_to(UsageQuery(start=starts[0], end=end), caller)
    store = store_of(raw)
    over_time = await store.aggregate_async(dataclasses.replace(window, group_by=("model",), bucket=chosen))
    by_model = await store.aggregate_async(dataclasses.replace(window, group_by=("model", "api")))
    by_caller = (
        await store.aggregate_async(dataclasses.replace(window, group_by=("caller",)))
        if caller.admin
        else None
    )
    html = page_html(
        start=starts[0],
        end=end,
        bucket=chosen,
        scope="all callers" if caller.admin else f"caller {caller.name}",
        calls=series_from_rows(over_time, starts, "requests", f"Calls per {chosen}, by model"),
        tokens=series_from_rows(over_time, starts, "total_tokens", f"Tokens per {chosen}, by model"),
        by_model=by_model,
        by_caller=by_caller,
    )
    return HTMLResponse(
        html,
        headers={"Content-Security-Policy": REPORT_POLICY},
    )
