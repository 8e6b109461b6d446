"""Aggregation queries over usage records: what to group by, which window, which bucket."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aios_serve.errors import invalid

GROUP_KEYS = ("caller", "model", "api")
Bucket = Literal["hour", "day"]
BUCKET_SECONDS: dict[str, int] = {"hour": 3600, "day": 86400}


@dataclass(frozen=True)
class UsageQuery:
    """A validated request for aggregates; `caller` restricts the records to one caller."""

    start: float | None = None
    end: float | None = None
    group_by: tuple[str, ...] = ()
    bucket: Bucket | None = None
    caller: str | None = None


LATEST_UNIX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime can show


def parse_time(value: str | None, param: str) -> float | None:
    """Unix seconds, or an ISO 8601 date or datetime (UTC unless it carries an offset)."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or not 0 <= number <= LATEST_UNIX_TIME:
            raise invalid(
                f"{param} must be Unix seconds between 0 and {LATEST_UNIX_TIME} or an ISO 8601 date.",
                param,
            )
        return number
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(
            f"{param} must be Unix seconds or an ISO 8601 date/time (e.g. 2026-01-31T12:00:00Z), "
            f"got {value!r}.",
            param,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_group_by(value: str | None) -> tuple[str, ...]:
    if value is None or value.strip() == "":
        return ()
    keys: list[str] = []
    for raw in value.split(","):
        key = raw.strip()
        if key not in GROUP_KEYS:
            raise invalid(
                f"group_by takes a comma-separated list of {', '.join(GROUP_KEYS)}; got {key!r}.",
                "group_by",
            )
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def parse_bucket(value: str | None) -> Bucket | None:
    if value is None or value.strip() == "":
        return None
    if value == "hour":
        return "hour"
    if value == "day":
        return "day"
    raise invalid(f"bucket must be 'hour' or 'day', got {value!r}.", "bucket")


def build_query(
    start: str | None, end: str | None, group_by: str | None, bucket: str | None, caller: str | None
) -> UsageQuery:
    """Validate the query parameters of GET /v1/usage; bad values are 400s naming the field."""
    start_s = parse_time(start, "start")
    end_s = parse_time(end, "end")
    if start_s is not None and end_s is not None and end_s < start_s:
        raise invalid("end must not be before start.", "end")
    return UsageQuery(
        start=start_s,
        end=end_s,
        group_by=parse_group_by(group_by),
        bucket=parse_bucket(bucket),
        caller=caller or None,
    )


def iso_utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def aggregate_sql(query: UsageQuery) -> tuple[str, list[Any]]:
    """One GROUP BY statement; the bucket is the record time floored to the hour or day (UTC)."""
    columns: list[str] = []
    if query.bucket is not None:
        size = BUCKET_SECONDS[query.bucket]
        columns.append(f"CAST(time / {size} AS INTEGER) * {size} AS bucket")
    columns += list(query.group_by)
    where: list[str] = []
    params: list[Any] = []
    if query.start is not None:
        where.append("time >= ?")
        params.append(query.start)
    if query.end is not None:
        where.append("time < ?")
        params.append(query.end)
    if query.caller is not None:
        where.append("caller = ?")
        params.append(query.caller)
    keys = (["bucket"] if query.bucket else []) + list(query.group_by)
    sql = (
        f"SELECT {', '.join([*columns, ''])}"
        "COUNT(*) AS requests, "
        "COALESCE(SUM(status >= 400), 0) AS errors, "
        "COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, "
        "COALESCE(SUM(completion_tokens), 0) AS completion_tokens, "
        "COALESCE(AVG(latency_s), 0) AS mean_latency_s "
        "FROM usage"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + (f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}" if keys else "")
    )
    return sql, params


def shape_row(row: dict[str, Any]) -> dict[str, Any]:
    """One aggregate row as the API returns it: ISO bucket start, total tokens, rounded latency."""
    shaped = dict(row)
    if "bucket" in shaped:
        shaped["bucket"] = iso_utc(float(shaped["bucket"]))
    shaped["total_tokens"] = int(shaped["prompt_tokens"]) + int(shaped["completion_tokens"])
    shaped["mean_latency_s"] = round(float(shaped["mean_latency_s"]), 6)
    return shaped
