"""Runledger's Python client (distribution `runledger-client`): stream metrics to a Runledger
server. It depends on httpx and orjson only, and imports nothing from the server.

    from runledger.client import MetricStream
"""

from runledger.client.stream import MetricStream, StreamError

__all__ = ["MetricStream", "StreamError"]
