"""One module per workload; each exposes `run(ctx) -> list[Row]` (see bench/context.py)."""
