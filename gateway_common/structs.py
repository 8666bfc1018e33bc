"""JSON objects in ``google.protobuf.Struct`` fields, both ways (shared by the edge and the core).

The passthrough fields (``extra``) carry what the typed API does not know. Struct numbers are
doubles: whole numbers come back as ints (``top_k: 40``, not ``40.0``), so a value makes the round
trip as JSON text would.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

_EXACT = 2**53


def to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def _value(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        n = v.number_value
        return int(n) if n.is_integer() and abs(n) < _EXACT else n
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [_value(x) for x in v.list_value.values]
    return None


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    return {k: _value(v) for k, v in s.fields.items()}


def ints(value: Any) -> Any:
    """A double that holds a whole number, as an int (other values as they are)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT:
        return int(value)
    return value
