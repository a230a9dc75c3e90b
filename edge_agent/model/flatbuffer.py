"""A bounds check of a .tflite file's structure, before any runtime sees it.

tflite-runtime 2.14 does not verify the flatbuffer it is given: a truncated model
makes it read past the end of the buffer and crash the process (seen in this
project's tests). This walks the parts of the TFLite schema a runtime reads
first (the model table, its buffers, subgraphs, tensors and operators) and
checks every offset and length against the file's size. It is not a full
verifier; it turns truncation and garbage into an error instead of a crash.
"""

from __future__ import annotations

import struct

IDENTIFIER = b"TFL3"
# Field numbers in the TFLite schema (schema.fbs).
MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_BUFFERS = 1, 2, 4
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2
SUBGRAPH_TENSORS, SUBGRAPH_OPERATORS = 0, 3
MODEL_METADATA, METADATA_NAME = 6, 0
TENSOR_VECTORS = {0: 4, 3: 1}  # shape [int], name string
OPERATOR_VECTORS = {1: 4, 2: 4}  # inputs [int], outputs [int]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def u32(self, pos: int) -> int:
        self._need(pos, 4)
        return int(struct.unpack_from("<I", self.data, pos)[0])

    def _need(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > len(self.data):
            raise ValueError(f"offset {pos}+{size} is past the end of the file ({len(self.data)})")

    def table(self, pos: int) -> dict[int, int]:
        """Field number -> absolute position of the field, for a table at `pos`."""
        self._need(pos, 4)
        vtable = pos - struct.unpack_from("<i", self.data, pos)[0]
        self._need(vtable, 4)
        vtable_size, table_size = struct.unpack_from("<HH", self.data, vtable)
        self._need(vtable, vtable_size)
        self._need(pos, table_size)
        fields = {}
        for number in range((vtable_size - 4) // 2):
            (offset,) = struct.unpack_from("<H", self.data, vtable + 4 + 2 * number)
            if offset:
                fields[number] = pos + offset
        return fields

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, pos: int, element_size: int) -> tuple[int, int]:
        """(start of elements, count) of the vector referenced from `pos`."""
        start = self.indirect(pos)
        count = self.u32(start)
        self._need(start + 4, count * element_size)
        return start + 4, count

    def vectors(self, fields: dict[int, int], sizes: dict[int, int]) -> None:
        for number, element_size in sizes.items():
            if number in fields:
                self.vector(fields[number], element_size)

    def tables(self, fields: dict[int, int], number: int) -> list[dict[int, int]]:
        if number not in fields:
            return []
        start, count = self.vector(fields[number], 4)
        return [self.table(self.indirect(start + 4 * i)) for i in range(count)]


def check_tflite(data: bytes) -> str | None:
    """Why `data` cannot be a whole TFLite model, or None when it looks intact."""
    if len(data) < 8:
        return f"{len(data)} bytes is too short for a TFLite model"
    if data[4:8] != IDENTIFIER:
        return "no TFLite file identifier (TFL3): not a TFLite model"
    reader = _Reader(data)
    try:
        model = reader.table(reader.u32(0))
        for required in (MODEL_SUBGRAPHS, MODEL_BUFFERS):
            if required not in model:
                return "the model has no subgraphs or no buffers"
        if MODEL_OPERATOR_CODES in model:
            reader.tables(model, MODEL_OPERATOR_CODES)
        for buffer in reader.tables(model, MODEL_BUFFERS):
            _check_buffer(reader, buffer)
        for subgraph in reader.tables(model, MODEL_SUBGRAPHS):
            for tensor in reader.tables(subgraph, SUBGRAPH_TENSORS):
                reader.vectors(tensor, TENSOR_VECTORS)
            for operator in reader.tables(subgraph, SUBGRAPH_OPERATORS):
                reader.vectors(operator, OPERATOR_VECTORS)
        for metadata in reader.tables(model, MODEL_METADATA):
            reader.vectors(metadata, {METADATA_NAME: 1})
    except (ValueError, struct.error) as exc:
        return f"truncated or corrupt: {exc}"
    return None


def _check_buffer(reader: _Reader, buffer: dict[int, int]) -> None:
    if BUFFER_DATA in buffer:
        reader.vector(buffer[BUFFER_DATA], 1)
    if BUFFER_OFFSET in buffer and BUFFER_SIZE in buffer:
        (offset,) = struct.unpack_from("<Q", reader.data, buffer[BUFFER_OFFSET])
        (size,) = struct.unpack_from("<Q", reader.data, buffer[BUFFER_SIZE])
        if offset > 1:  # 0 and 1 mean "no external data"
            reader._need(offset, size)
