"""Decompression bombs in Arrow IPC streams, built the way an attacker would.

pyarrow compresses a buffer whole, so writing a real 1 GiB column would take 1 GiB here. Instead
a small ZSTD-compressed stream is written and one buffer of one column is swapped for a prefix
claiming `size` bytes followed by ZSTD frames of zeros (frames concatenate: 64 frames of 16 MiB
decompress to 1 GiB from about 30 KB). The Buffer entries and bodyLength in the message's
FlatBuffers metadata are rewritten in place to match the new body.
"""

from __future__ import annotations

import struct

import pyarrow as pa

from runledger.ingest.contract import arrow_ipc

_FRAME_ZEROS = 16 * 1024 * 1024
BOMB_COLUMNS = ("key", "value", "timestamp", "step", "extra")


def _zeros_frames(size: int) -> bytes:
    assert size % _FRAME_ZEROS == 0 or size < _FRAME_ZEROS
    if size < _FRAME_ZEROS:
        return pa.compress(bytes(size), codec="zstd", asbytes=True)
    frame = pa.compress(bytes(_FRAME_ZEROS), codec="zstd", asbytes=True)
    return frame * (size // _FRAME_ZEROS)


def small_table(schema: pa.Schema | None = None) -> pa.Table:
    n = 10
    table = pa.table({"key": ["loss"] * n, "value": [0.5] * n, "timestamp": list(range(n)),
                      "step": list(range(n)), "extra": [0] * n})
    return table.select(schema.names).cast(schema) if schema is not None else table


def bomb_stream(column: str, size: int, table: pa.Table | None = None) -> bytes:
    """An IPC stream of `table` (10 rows; default: key, value, timestamp, step, extra) whose
    `column`'s data buffer decompresses to `size` bytes of zeros."""
    table = table if table is not None else small_table()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    reader = pa.ipc.MessageReader.open_stream(sink.getvalue())
    schema_message = reader.read_next_message().serialize().to_pybytes()
    batch = reader.read_next_message()
    framed = bytearray(batch.serialize().to_pybytes())
    meta_len = struct.unpack_from("<i", framed, 4)[0]
    meta = memoryview(framed)[8:8 + meta_len]
    body = bytes(framed[8 + meta_len:])
    root = arrow_ipc._Table.root(pa.py_buffer(meta))
    header = root.table(2)
    assert header is not None
    start, count = header.vector(2)
    buffers = [struct.unpack_from("<qq", meta, start + 16 * i) for i in range(count)]
    target = _data_buffer_index(table.schema, column)
    pieces = []
    for i, (offset, length) in enumerate(buffers):
        piece = body[offset:offset + length]
        if i == target:
            piece = struct.pack("<q", size) + _zeros_frames(size)
        pieces.append(piece)
    new_body = bytearray()
    for i, piece in enumerate(pieces):
        struct.pack_into("<qq", meta, start + 16 * i, len(new_body), len(piece))
        new_body += piece + bytes(-len(piece) % 8)
    body_length_at = root._field(3)  # Message.bodyLength
    struct.pack_into("<q", meta, body_length_at, len(new_body))
    end = struct.pack("<II", 0xFFFFFFFF, 0)
    return schema_message + bytes(framed[:8 + meta_len]) + bytes(new_body) + end


def _data_buffer_index(schema: pa.Schema, column: str) -> int:
    """Index of `column`'s last buffer (its values) among the batch's buffers: a string column
    has validity, offsets and data; a primitive column validity and data."""
    index = -1
    for field in schema:
        index += 3 if pa.types.is_string(field.type) else 2
        if field.name == column:
            return index
    raise KeyError(column)
