"""`runledger sql "SELECT ..."`: ask a running server (docs/sql.md) from a shell.

On a terminal the answer is an aligned table (up to --max-rows rows, 100 by default); piped,
or with --format, it is the server's own csv/json/ndjson/parquet/arrow body, streamed to stdout
or to -o FILE (whose extension picks the format when --format is not given).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

import orjson

from runledger.client import SqlQueryError, default_url, sql_stream

FORMATS = ("table", "csv", "json", "ndjson", "parquet", "arrow")
_BY_SUFFIX = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".parquet": "parquet",
              ".arrow": "arrow", ".arrows": "arrow"}
TABLE_ROWS = 100
MAX_CELL = 60


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sql", help="run a read-only SQL query on a running server (docs/sql.md)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", help="one SELECT over the public views, e.g. \"SELECT * FROM runs\"")
    p.add_argument("--format", "-f", choices=FORMATS, help="default: table on a terminal, csv otherwise")
    p.add_argument("-o", "--output", type=Path, help="write the answer to this file")
    p.add_argument("--max-rows", type=int, help=f"at most this many rows (table: {TABLE_ROWS})")
    p.add_argument("--url", help="the server (default: RUNLEDGER_URL, MLFLOW_TRACKING_URI or http://RUNLEDGER_HOST:RUNLEDGER_PORT)")


def pick_format(fmt: str | None, output: Path | None, tty: bool) -> str:
    if fmt is not None:
        return fmt
    if output is not None:
        return _BY_SUFFIX.get(output.suffix.lower(), "csv")
    return "table" if tty else "csv"


def run(args: argparse.Namespace, stdout: IO[bytes] | None = None) -> int:
    out_bin = stdout if stdout is not None else sys.stdout.buffer
    fmt = pick_format(args.format, args.output, sys.stdout.isatty() if stdout is None else False)
    url = args.url or default_url()
    try:
        if fmt == "table":
            text = render_table(args.query, url, args.max_rows or TABLE_ROWS)
            _write(args.output, out_bin, [text.encode()])
        else:
            _write(args.output, out_bin, sql_stream(args.query, url, format=fmt, max_rows=args.max_rows))
    except SqlQueryError as e:
        print(f"runledger sql: {e.error_code}: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"runledger sql: cannot reach {url}: {e}", file=sys.stderr)
        return 1
    return 0


def _write(output: Path | None, stdout: IO[bytes], chunks: Any) -> None:
    if output is None:
        for chunk in chunks:
            stdout.write(chunk)
        stdout.flush()
        return
    with open(output, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def render_table(query: str, url: str, max_rows: int) -> str:
    body = orjson.loads(b"".join(sql_stream(query, url, format="json", max_rows=max_rows)))
    names = [c["name"] for c in body["columns"]]
    cells = [[_cell(v) for v in row] for row in body["rows"]]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    numeric = [c["type"] in _NUMERIC for c in body["columns"]]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    more = " (truncated: more rows exist; use --max-rows or --format csv)" if body["truncated"] else ""
    out.append(f"({body['row_count']} row{'s' if body['row_count'] != 1 else ''}, {body['elapsed_ms']:.0f} ms){more}")
    return "\n".join(out) + "\n"


_NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "FLOAT", "DOUBLE"}


def _cell(value: Any) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, str):
        text = value
    else:
        text = orjson.dumps(value).decode()
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"
