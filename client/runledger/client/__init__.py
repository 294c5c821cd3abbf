"""Runledger's Python client (distribution `runledger-client`): stream metrics to a Runledger
server, and ask it analytical SQL. It depends on httpx and orjson only (pyarrow for `sql()`,
the `arrow` extra), and imports nothing from the server.

    from runledger.client import MetricStream, sql
"""

from runledger.client.sql import SqlQueryError, default_url, sql, sql_stream
from runledger.client.stream import MetricStream, StreamError

__all__ = ["MetricStream", "SqlQueryError", "StreamError", "default_url", "sql", "sql_stream"]
