"""The external-data files an ONNX graph refers to, read straight from its protobuf bytes.

The runtime checks these against the artifact's hashed files before ONNX Runtime opens the
graph (an artifact is untrusted input). Reading them needs only the wire format, so the runtime
does not depend on the `onnx` package: a ModelProto's graph (field 7) holds initializers (5),
sparse initializers (15) and nodes (1) whose attributes (5) carry tensors (t 5, tensors 10) and
subgraphs (g 6, graphs 11), as do the local functions' nodes (25 -> 7) and the training graphs
(20 -> 1, 2); a TensorProto names its external file in external_data (13) entries
{key 1, value 2} with key "location". Everything else (weights included) is skipped by length.
"""

from __future__ import annotations

import mmap
from pathlib import Path

# (message, field number) -> the message type of that length-delimited field we descend into
_CHILDREN = {
    ("model", 7): "graph",
    # local functions (25: FunctionProto, nodes 7, attribute defaults 11) and training info (20:
    # TrainingInfoProto, graphs 1 and 2) hold tensors too: ONNX Runtime reads the external data of a
    # Constant inside a function body, so a reference there must be seen as well
    ("model", 25): "function", ("function", 7): "node", ("function", 11): "attribute",
    ("model", 20): "training", ("training", 1): "graph", ("training", 2): "graph",
    ("graph", 1): "node", ("graph", 5): "tensor", ("graph", 15): "sparse",
    ("node", 5): "attribute",
    ("attribute", 5): "tensor", ("attribute", 6): "graph", ("attribute", 10): "tensor", ("attribute", 11): "graph",
    ("attribute", 22): "sparse", ("attribute", 23): "sparse",
    ("sparse", 1): "tensor", ("sparse", 2): "tensor",
    ("tensor", 13): "entry",
}


class ProtobufError(ValueError):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise ProtobufError("truncated or malformed varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _walk(buf, pos: int, end: int, kind: str, found: list, depth: int = 0):
    if depth > 64:
        raise ProtobufError("nesting too deep")
    entry = {}
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise ProtobufError("a field runs past the end of its message")
            child = _CHILDREN.get((kind, field))
            if child == "entry":
                sub = {}
                _walk_entry(buf, pos, pos + n, sub)
                if sub.get(1) == b"location":
                    found.append(bytes(sub.get(2, b"")).decode("utf-8", "replace"))
            elif child is not None:
                _walk(buf, pos, pos + n, child, found, depth + 1)
            pos += n
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    if pos != end:
        raise ProtobufError("a message runs past its end")
    return entry


def _walk_entry(buf, pos, end, out):
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire != 2:
            raise ProtobufError("malformed external_data entry")
        n, pos = _varint(buf, pos, end)
        out[field] = buf[pos:pos + n]
        pos += n


def external_data_locations(path) -> list[str]:
    """Every external-data `location` the ONNX file at `path` names (in order, repeats kept)."""
    path = Path(path)
    found: list[str] = []
    if path.stat().st_size == 0:
        raise ProtobufError("empty file")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        _walk(buf, 0, len(buf), "model", found)
    return found
