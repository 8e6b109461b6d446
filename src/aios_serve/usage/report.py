"""The usage report page: calls and tokens over time per model, as server-rendered SVG."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from aios_serve.usage.queries import BUCKET_SECONDS, iso_utc

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")
WIDTH, HEIGHT = 960, 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 20, 50


@dataclass(frozen=True)
class Series:
    """One value per bucket, for each model, stacked in the chart."""

    title: str
    buckets: list[float]  # bucket starts, Unix seconds
    values_by_model: dict[str, list[float]]


def bucket_starts(start: float, end: float, bucket: str) -> list[float]:
    size = BUCKET_SECONDS[bucket]
    first = math.floor(start / size) * size
    return [float(t) for t in range(int(first), int(end), size)]


def series_from_rows(rows: list[dict[str, Any]], starts: list[float], value_key: str, title: str) -> Series:
    """Rows grouped by (bucket, model) to a dense bucket x model grid; missing cells are zero."""
    position = {iso_utc(t): i for i, t in enumerate(starts)}
    values: dict[str, list[float]] = {}
    for row in rows:
        index = position.get(str(row["bucket"]))
        if index is None:
            continue
        per_model = values.setdefault(str(row["model"]), [0.0] * len(starts))
        per_model[index] += float(row[value_key])
    return Series(title=title, buckets=starts, values_by_model=dict(sorted(values.items())))


def nice_ceiling(value: float) -> float:
    """The next 1, 2, 5 x 10^k at or above value (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def _bucket_label(start: float, bucket: str) -> str:
    moment = datetime.fromtimestamp(start, tz=UTC)
    return moment.strftime("%H:00") if bucket == "hour" else moment.strftime("%m-%d")


def _format_count(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def stacked_bar_svg(series: Series, bucket: str, chart_id: str) -> str:
    """A stacked bar chart: one bar per bucket, one coloured segment per model, with axes and legend."""
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    count = max(1, len(series.buckets))
    totals = [sum(v[i] for v in series.values_by_model.values()) for i in range(len(series.buckets))]
    top = 4 * nice_ceiling(max(totals, default=0.0) / 4)  # four whole-number steps
    slot = plot_w / count
    bar_w = max(1.0, slot * 0.75)
    parts: list[str] = [
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(series.title)}">'
    ]
    for tick in range(5):
        value = top * tick / 4
        y = MARGIN_TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e5e7eb"/><text x="{MARGIN_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" '
            f'class="tick">{_format_count(value)}</text>'
        )
    label_every = max(1, math.ceil(count / 12))
    for i, start in enumerate(series.buckets):
        x = MARGIN_LEFT + slot * i + (slot - bar_w) / 2
        base = float(MARGIN_TOP + plot_h)
        for color_index, (model, values) in enumerate(series.values_by_model.items()):
            value = values[i]
            if value <= 0:
                continue
            height = plot_h * value / top
            base -= height
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{height:.1f}" '
                f'fill="{PALETTE[color_index % len(PALETTE)]}"><title>{escape(model)} '
                f"{escape(iso_utc(start))}: {value:g}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{MARGIN_TOP + plot_h + 18}" text-anchor="middle" '
                f'class="tick">{_bucket_label(start, bucket)}</text>'
            )
    axis_y = MARGIN_TOP + plot_h
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{axis_y}" y2="{axis_y}" stroke="#6b7280"/>'
    )
    legend_x = MARGIN_LEFT
    for color_index, model in enumerate(series.values_by_model):
        color = PALETTE[color_index % len(PALETTE)]
        parts.append(
            f'<rect x="{legend_x}" y="{HEIGHT - 16}" width="12" height="12" fill="{color}"/>'
            f'<text x="{legend_x + 16}" y="{HEIGHT - 6}" class="legend">{escape(model)}</text>'
        )
        legend_x += 28 + 8 * len(model)
    if not series.values_by_model:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{MARGIN_TOP + plot_h / 2}" text-anchor="middle" class="empty">'
            "No requests in this window</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def table_html(rows: list[dict[str, Any]], keys: tuple[str, ...], table_id: str) -> str:
    columns = [*keys, "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens"]
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>" for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(columns)}">No requests in this window.</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #111827; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: #4b5563; font-size: 14px; }
.chart .tick { font-size: 11px; fill: #4b5563; } .chart .legend { font-size: 12px; fill: #111827; }
.chart .empty { font-size: 14px; fill: #6b7280; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { border: 1px solid #e5e7eb; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f9fafb; }
form { margin: 12px 0; font-size: 14px; }
"""


def page_html(
    *,
    start: float,
    end: float,
    bucket: str,
    scope: str,
    calls: Series,
    tokens: Series,
    by_model: list[dict[str, Any]],
    by_caller: list[dict[str, Any]] | None,
) -> str:
    """The whole page; no script and nothing loaded from elsewhere."""
    caller_section = ""
    if by_caller is not None:
        caller_section = f"<h2>By caller</h2>{table_html(by_caller, ('caller',), 'by-caller')}"
    hours = max(1, round((end - start) / 3600))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>aios-serve usage</title><style>{_STYLE}</style></head><body>"
        "<h1>Usage report</h1>"
        f'<p class="meta">{escape(iso_utc(start))} to {escape(iso_utc(end))} (UTC), per {bucket}; '
        f"{escape(scope)}.</p>"
        '<form method="get"><label>Last <input type="number" name="hours" min="1" max="8784" '
        f'value="{hours}"> hours</label> <label>per <select name="bucket">'
        + "".join(
            f'<option value="{b}"{" selected" if b == bucket else ""}>{b}</option>' for b in ("hour", "day")
        )
        + '</select></label> <button type="submit">Show</button></form>'
        f"<h2>{escape(calls.title)}</h2>{stacked_bar_svg(calls, bucket, 'calls-chart')}"
        f"<h2>{escape(tokens.title)}</h2>{stacked_bar_svg(tokens, bucket, 'tokens-chart')}"
        f"<h2>By model and API</h2>{table_html(by_model, ('model', 'api'), 'by-model')}"
        f"{caller_section}</body></html>"
    )
