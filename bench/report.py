"""The plain-text table."""

from __future__ import annotations

from typing import Any

from context import Row


def fmt(v: Any, unit: str) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, dict):
        return f"{_num(v['p50_ms'])} / {_num(v['p95_ms'])}"
    if isinstance(v, str):
        return v
    return _num(v)


def _num(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def ratio_cell(row: Row) -> str:
    r = row.ratio
    if r is None:
        return "-"
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def table(rows: list[Row]) -> str:
    head = ["workload", "case", "unit", "MLflow", "Runledger", "RL better by", "target", "met?"]
    body = []
    for r in rows:
        unit = r.unit + (f" {r.stats}" if isinstance(r.runledger, dict) or isinstance(r.mlflow, dict) else "")
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        body.append([r.workload, r.case, unit, fmt(r.mlflow, r.unit), fmt(r.runledger, r.unit), ratio_cell(r),
                     r.target or "-", met])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    right = {3, 4, 5}

    def line(cells: list[str]) -> str:
        return " | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "-+-".join("-" * w for w in widths)]
    last = None
    for r, cells in zip(rows, body):
        if last is not None and r.workload != last:
            out.append("-+-".join("-" * w for w in widths))
        last = r.workload
        out.append(line(cells))
    return "\n".join(out)


def sizes_and_notes(rows: list[Row]) -> str:
    out, seen = [], set()
    for r in rows:
        key = (r.workload, r.size)
        if r.size and key not in seen:
            seen.add(key)
            out.append(f"  {r.workload} / {r.case}: {r.size}")
    notes = [f"  {r.workload} / {r.case}: {r.note}" for r in rows if r.note]
    text = "Sizes:\n" + "\n".join(out)
    if notes:
        text += "\n\nNotes:\n" + "\n".join(notes)
    return text
