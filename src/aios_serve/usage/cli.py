"""`aios-serve usage`: the aggregates of /v1/usage as a table, from the store file or a server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import httpx

from aios_serve.config import load_config
from aios_serve.errors import ApiError
from aios_serve.usage.queries import build_query
from aios_serve.usage.store import aggregate_file, default_store_path

NUMBER_COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")


def add_usage_parser(commands: Any) -> None:
    usage = commands.add_parser("usage", help="print usage aggregates as a table")
    usage.add_argument("--config", type=Path, default=None, help="server config (its data_dir)")
    usage.add_argument("--data-dir", default=None, help="read the store in this folder instead")
    usage.add_argument("--url", default=None, help="ask a running server's /v1/usage instead")
    usage.add_argument("--api-key", default=None, help="API key for --url")
    usage.add_argument("--start", default=None, help="Unix seconds or ISO 8601")
    usage.add_argument("--end", default=None, help="Unix seconds or ISO 8601 (exclusive)")
    usage.add_argument("--group-by", default="caller,model,api", help="subset of caller,model,api")
    usage.add_argument("--bucket", default=None, choices=["hour", "day"])
    usage.add_argument("--caller", default=None, help="only this caller")


def fetch_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows from a server (as its key may see them) or straight from the local store file."""
    if args.url:
        params = {
            key: value
            for key, value in (
                ("start", args.start),
                ("end", args.end),
                ("group_by", args.group_by),
                ("bucket", args.bucket),
                ("caller", args.caller),
            )
            if value
        }
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        response = httpx.get(f"{args.url.rstrip('/')}/v1/usage", params=params, headers=headers, timeout=60)
        if response.status_code != 200:
            raise SystemExit(f"aios-serve usage: {response.status_code} {response.text}")
        rows: list[dict[str, Any]] = response.json()["data"]
        return rows
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = load_config(args.config).data_dir
    query = build_query(args.start, args.end, args.group_by, args.bucket, args.caller)
    return aggregate_file(default_store_path(data_dir), query)


def print_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    """Left-aligned key columns, right-aligned numbers, and a total line."""
    if not rows:
        print("No usage recorded.", file=out)
        return
    keys = [k for k in ("bucket", "caller", "model", "api") if k in rows[0]]
    columns = [*keys, *NUMBER_COLUMNS]
    total = {c: sum(int(r[c]) for r in rows) for c in NUMBER_COLUMNS}
    body = [[str(row[c]) for c in columns] for row in rows]
    footer = ["total", *([""] * (len(keys) - 1))] if keys else []
    footer += [str(total[c]) for c in NUMBER_COLUMNS]
    widths = [max(len(c), *(len(line[i]) for line in [*body, footer])) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i < len(keys) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(line(columns), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for cells in body:
        print(line(cells), file=out)
    print(line(footer), file=out)


def run_usage(args: argparse.Namespace) -> int:
    """The `usage` subcommand: 0 on success, 2 on a bad argument."""
    try:
        rows = fetch_rows(args)
    except ApiError as error:
        print(f"aios-serve usage: {error.message}", file=sys.stderr)
        return 2
    print_table(rows, sys.stdout)
    return 0
