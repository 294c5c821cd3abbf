"""Is the DuckDB file whole? Checked on open, and recognised in errors at run time.

DuckDB stores a checksum with every block and verifies it whenever the block is read, but it
reads blocks lazily: a damaged block in the middle of the file goes unnoticed until a query
touches it, and then that query fails (a 500, or a streamed response cut off). So on open every
column of every table is read once (`verify`), which makes DuckDB check every data block; a
1M-point file takes about 0.15 s (docs/read-model.md). A file that fails, or that is
truncated or not a database at all, is moved aside as `<name>.corrupt-<UTC time>` (never
deleted: it is evidence) and a fresh one takes its place. The read model is derived from the
log and the consumer offsets live inside the file, so the fresh file is a replay from offset 0.

Not covered: index (ART) blocks are read only when an index is used, so a damaged index block
is found at run time, like any block damaged after the file was opened.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

# How DuckDB words a block whose checksum fails, a file cut short, and a header that is not
# DuckDB's. A lock held by another process is deliberately not among them: that file is fine.
_SIGNS = ("Corrupt database file", "Could not read enough bytes from file", "not a valid DuckDB database file")


def is_corruption(exc: BaseException) -> bool:
    """Whether `exc` says the database file itself is damaged."""
    return isinstance(exc, duckdb.Error) and any(sign in str(exc) for sign in _SIGNS)


# How the OS words a write refused for space (ENOSPC, EDQUOT), as DuckDB passes it on.
_FULL_SIGNS = ("No space left on device", "Disk quota exceeded")


def is_out_of_space(exc: BaseException) -> bool:
    """Whether `exc` says the data folder's disk is full: not damage, the file is intact (a
    DuckDB commit either lands whole or not at all) and writing can resume once space returns."""
    return any(sign in str(exc) for sign in _FULL_SIGNS)


def verify(con: duckdb.DuckDBPyConnection) -> None:
    """Read every column of every table once, so DuckDB checks every data block's checksum.

    A hash of each column is aggregated (not just counted: a count can be answered from
    metadata without reading the data). Raises DuckDB's error for the first damaged block.
    """
    tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                         "AND schema_name = 'main' ORDER BY table_name").fetchall()
    for (table,) in tables:
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = ? ORDER BY column_index", [table]).fetchall()]
        hashes = ", ".join(f'bit_xor(hash("{c}"))' for c in columns)
        con.execute(f'SELECT count(*), {hashes} FROM "{table}"').fetchall()


def move_aside(path: str, reason: BaseException) -> Path:
    """Rename the file (and its WAL, if any) to `<path>.corrupt-<UTC time>`; returns the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = Path(f"{path}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside, n = Path(f"{path}.corrupt-{stamp}-{n}"), n + 1
    Path(path).rename(aside)
    wal = Path(path + ".wal")
    if wal.exists():
        wal.rename(Path(f"{aside}.wal"))
    log.error("read model %s is damaged (%s); moved it aside to %s and rebuilding it from the log",
              path, str(reason).splitlines()[0], aside)
    return aside


def open_verified(path: str) -> duckdb.DuckDBPyConnection:
    """A connection to `path`, verified whole; a damaged file is moved aside for a fresh one."""
    try:
        con = duckdb.connect(path)
        try:
            started = time.monotonic()
            verify(con)
            log.info("read model %s verified in %.2f s", path, time.monotonic() - started)
            return con
        except BaseException:
            con.close()
            raise
    except duckdb.Error as e:
        if not is_corruption(e):
            raise
        move_aside(path, e)
        return duckdb.connect(path)
