"""Find ONNX tensors whose data lives in another file, without the onnx package.

An ONNX tensor may point at "external data" by a relative path: onnxruntime then reads
that file. onnxruntime only refuses paths that escape the model's folder since 1.24
(microsoft/onnxruntime#26776), and the runtime supports older ones, so it checks itself:
edgepack writes every ONNX artifact as one file, so any external reference in a bundle is
refused before onnxruntime sees it. A few fields of the protobuf wire format are enough.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Iterator, Optional, Union

__all__ = ["external_data_reference"]

# Which length-delimited fields of each message can hold tensors (field numbers from onnx.proto).
_CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},  # attribute_proto: defaults of the function's attributes
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 8, 13, 14, 1
_MAX_DEPTH = 64  # subgraphs nest (If inside Loop ...); deeper than this is not a real model


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Union[int, memoryview]]]:
    """(field number, wire type, value) of one message: varints as int, the rest as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: Union[int, memoryview]
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise _Malformed  # groups: never in onnx.proto
        if pos > len(buf):
            raise _Malformed
        yield number, wire, value


def _find(buf: memoryview, kind: str, depth: int) -> Optional[str]:
    if depth > _MAX_DEPTH:
        raise _Malformed
    name = None
    for number, wire, value in _fields(buf):
        if kind == "tensor":
            # Wire type 2 carries bytes, wire type 0 a varint (_fields): the isinstance checks say so to mypy.
            if number == _TENSOR_NAME and wire == 2 and isinstance(value, memoryview):
                name = bytes(value).decode("utf-8", "replace")
            elif number == _TENSOR_EXTERNAL_DATA or (number == _TENSOR_DATA_LOCATION and wire == 0
                                                     and isinstance(value, int)
                                                     and value & 0xFFFFFFFF == _EXTERNAL):  # an int32 enum
                return name or "a tensor"
        elif wire == 2 and isinstance(value, memoryview) and number in _CHILDREN[kind]:
            found = _find(value, _CHILDREN[kind][number], depth + 1)
            if found:
                return found
    return None


def external_data_reference(path: Path) -> Optional[str]:
    """The name of a tensor in the ONNX file at `path` that keeps its data in another file,
    or None. Raises ValueError when the file is not a protobuf this walk can read."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return None  # nothing to point anywhere; onnxruntime says what is wrong
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                found, malformed = _find(memoryview(data), "model", 0), False
            except _Malformed:
                found, malformed = None, True
            # Here the walk's views of the map are gone (a traceback would keep them alive and
            # make closing the map fail), so the map can close.
    if malformed:
        raise ValueError("not a readable ONNX protobuf")
    return found
