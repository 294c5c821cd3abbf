"""Reading an Arrow IPC stream from an untrusted source in bounded memory.

An IPC stream may compress its buffers (LZ4 or ZSTD, per record batch). Each compressed buffer
starts with its decompressed length, and pyarrow allocates that much and decompresses it
without a limit: 33 KB of ZSTD can claim, and become, 1 GiB. A cap on the body's size bounds
nothing then. So before anything is read, `read_bounded` walks the stream's messages (pyarrow's
MessageReader hands them over still compressed), adds up from their metadata how many bytes
every buffer will take once decompressed, and refuses the stream past `max_bytes`. Only then
does pyarrow read it, and only the columns asked for.

The metadata is a FlatBuffers table (Arrow's format/Message.fbs); the few fields needed here
are read directly rather than through generated code:

    Message         { version: short, header_type: ubyte, header: table, bodyLength: long, ... }
    RecordBatch     { length: long, nodes: [FieldNode], buffers: [Buffer], compression: table, ... }
    DictionaryBatch { id: long, data: RecordBatch, isDelta: bool }
    Buffer          struct { offset: long, length: long }   (within the message body)

A compressed buffer's first 8 bytes are its decompressed length (little-endian int64), or -1
when that buffer was left uncompressed; an empty buffer has no prefix.
"""

from __future__ import annotations

import struct
from typing import Sequence

import pyarrow as pa

# Message.header_type values (the MessageHeader union)
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3
# Far more messages than any client writes for 100,000 points; each one costs a chunk object
# per column once read, so a stream of 100,000 tiny batches would cost memory on its own.
MAX_MESSAGES = 1024


class StreamRefused(ValueError):
    """The bytes are not an Arrow IPC stream, or reading it would take more than allowed."""


def read_bounded(data: bytes | memoryview, max_bytes: int, columns: Sequence[str] | None = None) -> pa.Table:
    """The stream's table, holding only `columns` (those present, in stream order) or all.

    Raises StreamRefused, saying why, if the stream is malformed, has more than MAX_MESSAGES
    messages, or its buffers (of every column, wanted or not) would take more than `max_bytes`
    once decompressed. Nothing is decompressed before that check.
    """
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(data))
        schema = pa.ipc.read_schema(reader.read_next_message())
        total, count = 0, 0
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            count += 1
            if count > MAX_MESSAGES:
                raise StreamRefused(f"the Arrow stream has more than {MAX_MESSAGES} messages")
            total += _decompressed_size(message)
            if total > max_bytes:
                raise StreamRefused(f"the Arrow stream's buffers take more than {max_bytes} bytes decompressed")
        fields = None
        if columns is not None:
            fields = [i for i, name in enumerate(schema.names) if name in columns]
            fields = [i for i in fields if schema.names.index(schema.names[i]) == i]  # first of a repeated name
        options = pa.ipc.IpcReadOptions(included_fields=fields)
        return pa.ipc.open_stream(pa.py_buffer(data), options=options).read_all()
    except StreamRefused:
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, StopIteration) as e:
        raise StreamRefused(f"not a readable Arrow IPC stream: {str(e) or 'it is empty'}") from None


def _decompressed_size(message: pa.ipc.Message) -> int:
    """Bytes the message's buffers take once read (0 for messages without buffers)."""
    root = _Table.root(message.metadata)
    kind, header = root.scalar(1, "B"), root.table(2)  # Message.header_type, Message.header
    if header is None or kind not in (_DICTIONARY_BATCH, _RECORD_BATCH):
        return 0
    batch = header.table(1) if kind == _DICTIONARY_BATCH else header  # DictionaryBatch.data
    return 0 if batch is None else _batch_size(batch, message.body)


def _batch_size(batch: "_Table", body: pa.Buffer | None) -> int:
    compressed = batch.table(3) is not None  # RecordBatch.compression
    size = body.size if body is not None else 0
    view = memoryview(body) if body is not None else memoryview(b"")
    total = 0
    start, n = batch.vector(2)  # RecordBatch.buffers: 16-byte structs
    for i in range(n):
        offset, length = batch.unpack("<qq", start + 16 * i)
        if offset < 0 or length < 0 or offset + length > size:
            raise StreamRefused("an Arrow buffer lies outside its message body")
        if not compressed or length == 0:
            total += length
            continue
        if length < 8:
            raise StreamRefused("a compressed Arrow buffer is shorter than its length prefix")
        (decompressed,) = struct.unpack_from("<q", view, offset)
        total += length - 8 if decompressed == -1 else max(decompressed, 0)
    return total


class _Table:
    """A FlatBuffers table in `buf` at `pos`: fields by index through its vtable."""

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos
        (rel,) = self.unpack("<i", pos)
        self.vtable = pos - rel
        (self.vtable_size,) = self.unpack("<H", self.vtable)

    @classmethod
    def root(cls, meta: pa.Buffer) -> "_Table":
        buf = memoryview(meta)
        table = cls.__new__(cls)
        table.buf = buf
        (root,) = table.unpack("<I", 0)
        return cls(buf, root)

    def unpack(self, fmt: str, pos: int) -> tuple[int, ...]:
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.buf):
            raise StreamRefused("malformed Arrow message metadata")
        return struct.unpack_from(fmt, self.buf, pos)

    def _field(self, index: int) -> int:
        """Absolute position of field `index`, or 0 if absent."""
        slot = 4 + 2 * index
        if slot + 2 > self.vtable_size:
            return 0
        (rel,) = self.unpack("<H", self.vtable + slot)
        return self.pos + rel if rel else 0

    def scalar(self, index: int, fmt: str) -> int:
        pos = self._field(index)
        return self.unpack("<" + fmt, pos)[0] if pos else 0

    def table(self, index: int) -> "_Table | None":
        pos = self._field(index)
        if not pos:
            return None
        (rel,) = self.unpack("<I", pos)
        return _Table(self.buf, pos + rel)

    def vector(self, index: int) -> tuple[int, int]:
        """(position of the first element, element count); (0, 0) if absent."""
        pos = self._field(index)
        if not pos:
            return 0, 0
        (rel,) = self.unpack("<I", pos)
        (count,) = self.unpack("<I", pos + rel)
        return pos + rel + 4, count
