"""Classical-ML model signatures and the check of predict inputs against them, before any upstream.

A signature is MLflow's: a list of input entries and a list of output entries, each either a tensor
(``{"type": "tensor", "tensor-spec": {"dtype", "shape"}, "name"?}``) or a column
(``{"type": "double", "name": "age", "required": true}``). ``check_input`` turns any accepted form
of a ``PredictRequest`` (typed tensors, tabular rows, or JSON in MLflow's ``inputs`` / ``instances``
/ ``dataframe_split`` / ``dataframe_records`` shapes, or a bare list) into the body MLflow's
``/invocations`` takes, and raises ``InvalidRequest`` naming the column, the shape or the dtype that
does not fit. Pure code: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format

from gateway_common.json_text import json_kind, shown
from gateway_core.errors import InvalidRequest
from inference_gateway.v1 import inference_pb2 as pb

FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "double", "float"})
INT_DTYPES = frozenset({"int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8",
                        "long", "integer"})
BOOL_DTYPES = frozenset({"bool", "boolean"})
STR_DTYPES = frozenset({"str", "string", "object", "binary", "bytes", "datetime"})
_MAX_SHOWN = 40


def _kind(value: Any) -> str:
    return json_kind(value, integers=True)  # a dtype error tells integers from other numbers


def _shown(value: Any) -> str:
    return shown(value, _MAX_SHOWN)


@dataclass(frozen=True)
class Signature:
    """A model's input and output schema (either may be empty: unknown)."""

    inputs: list[pb.SchemaEntry] = field(default_factory=list)
    outputs: list[pb.SchemaEntry] = field(default_factory=list)

    @property
    def is_tensor(self) -> bool:
        return bool(self.inputs) and all(e.type == "tensor" for e in self.inputs)

    @property
    def is_columns(self) -> bool:
        return bool(self.inputs) and not self.is_tensor


def _entries(value: Any, where: str) -> list[pb.SchemaEntry]:
    if isinstance(value, str):  # the MLmodel file stores each side as a JSON string
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: must be a list of schema entries")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ValueError(f"{where}[{i}]: must be an object with a 'type'")
        entry = pb.SchemaEntry(type=item["type"], name=str(item.get("name") or ""))
        if entry.type == "tensor":
            spec = item.get("tensor-spec")
            if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str):
                raise ValueError(f"{where}[{i}]: a tensor needs 'tensor-spec' with a 'dtype'")
            shape = spec.get("shape") or []
            if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
                raise ValueError(f"{where}[{i}]: 'tensor-spec.shape' must be a list of integers")
            entry.dtype = spec["dtype"]
            entry.shape.extend(shape)
            entry.required = True
        else:
            entry.required = bool(item.get("required", True))
        out.append(entry)
    return out


def parse_signature(data: Any) -> Signature:
    """A signature from MLflow's JSON (``{"inputs": [...], "outputs": [...]}``); ValueError if bad."""
    if not isinstance(data, dict):
        raise ValueError("a signature must be a mapping with 'inputs' and 'outputs'")
    return Signature(_entries(data.get("inputs"), "inputs"),
                     _entries(data.get("outputs"), "outputs"))


# ---------------------------------------------------------------------------------------------
# Checking values


def fits_dtype(value: Any, dtype: str) -> bool:
    if dtype in FLOAT_DTYPES:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in INT_DTYPES:
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if dtype in BOOL_DTYPES:
        return isinstance(value, bool)
    if dtype in STR_DTYPES:
        return isinstance(value, str)
    return True  # types the gateway does not know (array, map, ...): the upstream checks them


def shape_of(value: Any, where: str) -> list[int]:
    """The shape of nested lists; InvalidRequest when ragged."""
    if not isinstance(value, list):
        return []
    if not value:
        return [0]
    inner = [shape_of(v, f"{where}[{i}]") for i, v in enumerate(value)]
    first = inner[0]
    for i, s in enumerate(inner):
        if s != first:
            raise InvalidRequest(
                f"{where} is ragged: element [{i}] has shape {s}, element [0] has shape {first}")
    return [len(value), *first]


def _as_int(value: Any) -> Any:
    # JSON numbers cross gRPC as doubles (google.protobuf.Value): give integer dtypes ints back.
    return int(value) if isinstance(value, float) else value


def _check_leaves(value: Any, dtype: str, where: str, path: str = "") -> Any:
    if isinstance(value, list):
        return [_check_leaves(v, dtype, where, f"{path}[{i}]") for i, v in enumerate(value)]
    if not fits_dtype(value, dtype):
        raise InvalidRequest(
            f"{where} element {path or '[]'} is {_kind(value)} {_shown(value)}; the model expects"
            f" dtype {dtype}")
    return _as_int(value) if dtype in INT_DTYPES else value


def _check_tensor(value: Any, entry: pb.SchemaEntry, where: str) -> Any:
    """Check one tensor against its spec; a flat list against a 2-D spec is taken as one row."""
    expected = list(entry.shape)
    shape = shape_of(value, where)
    if (len(expected) == 2 and len(shape) == 1 and shape[0] > 0
            and not isinstance(value[0], list)):
        value, shape = [value], [1, *shape]
    if expected and len(shape) != len(expected):
        raise InvalidRequest(
            f"{where} has shape {shape} ({len(shape)} dimensions); the model expects shape"
            f" {expected} ({len(expected)} dimensions)")
    for axis, (got, want) in enumerate(zip(shape, expected, strict=False)):
        if want != -1 and got != want:
            raise InvalidRequest(
                f"{where} has shape {shape}; the model expects shape {expected} (dimension"
                f" {axis} must be {want}, got {got})")
    return _check_leaves(value, entry.dtype, where)


def _tensor_inputs(data: Any, sig: Signature) -> Any:
    """Check MLflow ``inputs`` (one tensor, or a mapping name → tensor) against tensor specs."""
    if len(sig.inputs) == 1 and not isinstance(data, dict):
        e = sig.inputs[0]
        return _check_tensor(data, e, f"input tensor '{e.name}'" if e.name else "the input tensor")
    if not isinstance(data, dict):
        names = ", ".join(e.name or f"#{i}" for i, e in enumerate(sig.inputs))
        raise InvalidRequest(
            f"the model takes {len(sig.inputs)} named tensors ({names}); send an object mapping"
            f" each name to its values, got {_kind(data)}")
    by_name = {e.name: e for e in sig.inputs}
    for name in data:
        if name not in by_name:
            raise InvalidRequest(
                f"unknown input tensor '{_short(name)}' (the model takes: {', '.join(by_name)})")
    out = {}
    for name, e in by_name.items():
        if name not in data:
            raise InvalidRequest(f"missing input tensor '{name}' (the model takes:"
                                 f" {', '.join(by_name)})")
        out[name] = _check_tensor(data[name], e, f"input tensor '{name}'")
    return out


def _short(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _check_columns(columns: Sequence[Any], rows: Sequence[Any], sig: Signature) -> None:
    for i, c in enumerate(columns):
        if not isinstance(c, str):
            raise InvalidRequest(f"column {i} name must be a string; got {_kind(c)}")
    index = {c: i for i, c in enumerate(columns)}
    expected = ", ".join(e.name for e in sig.inputs)
    for e in sig.inputs:
        if e.required and e.name not in index:
            raise InvalidRequest(f"missing column '{e.name}' (the model expects: {expected})")
    for r, row in enumerate(rows):
        if not isinstance(row, list):
            raise InvalidRequest(f"row {r} must be an array of values; got {_kind(row)}")
        if len(row) != len(columns):
            raise InvalidRequest(
                f"row {r} has {len(row)} values for {len(columns)} columns")
        for e in sig.inputs:
            col = index.get(e.name)
            if col is None:
                continue
            value = row[col]
            if value is None:
                if e.required:
                    raise InvalidRequest(f"column '{e.name}' row {r} is null; the column is"
                                         " required")
                continue
            if not fits_dtype(value, e.type):
                raise InvalidRequest(
                    f"column '{e.name}' row {r} is {_kind(value)} {_shown(value)}; the model"
                    f" expects {e.type}")
            if e.type in INT_DTYPES:
                row[col] = _as_int(value)


def _records_to_split(records: list[Any], where: str) -> tuple[list[str], list[list[Any]]]:
    columns: list[str] = []
    seen: set[str] = set()
    for r, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InvalidRequest(f"{where}[{r}] must be an object of column values; got"
                                 f" {_kind(rec)}")
        for k in rec:
            if k not in seen:
                seen.add(k)
                columns.append(k)
    return columns, [[rec.get(c) for c in columns] for rec in records]


def _split(data: Any) -> tuple[list[Any], list[Any]]:
    if not isinstance(data, dict):
        raise InvalidRequest(f"'dataframe_split' must be an object with 'columns' and 'data';"
                             f" got {_kind(data)}")
    columns, rows = data.get("columns"), data.get("data")
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise InvalidRequest("'dataframe_split' must hold a 'columns' array and a 'data' array")
    return columns, rows


def _tabular(columns: list[Any], rows: list[Any], sig: Signature) -> dict[str, Any]:
    if sig.is_columns:
        _check_columns(columns, rows, sig)
    elif sig.is_tensor:
        raise InvalidRequest("the model takes tensors, not a table; send 'inputs' or"
                             f" 'instances' with shape {list(sig.inputs[0].shape)}")
    return {"dataframe_split": {"columns": columns, "data": rows}}


_FORMS = ("inputs", "instances", "dataframe_split", "dataframe_records")


def _from_json(data: Any, sig: Signature) -> dict[str, Any]:
    if isinstance(data, dict):
        keys = [k for k in _FORMS if k in data]
        if len(keys) > 1:
            raise InvalidRequest(f"send only one of {', '.join(_FORMS)}; got {', '.join(keys)}")
        if not keys:
            if sig.is_columns:  # one record as an object
                columns, rows = _records_to_split([data], "the input")
                return _tabular(columns, rows, sig)
            raise InvalidRequest(f"the input must hold one of {', '.join(_FORMS)}, or be an"
                                 " array")
        key = keys[0]
        value = data[key]
        if key == "dataframe_split":
            return _tabular(*_split(value), sig)
        if key == "dataframe_records":
            if not isinstance(value, list):
                raise InvalidRequest("'dataframe_records' must be an array of objects")
            return _tabular(*_records_to_split(value, "dataframe_records"), sig)
        data = value
        if key == "instances" and not sig.is_columns:
            return {"instances": _tensor_inputs(data, sig) if sig.is_tensor else data}
    if isinstance(data, list) and sig.is_columns:
        if data and all(isinstance(r, dict) for r in data):
            return _tabular(*_records_to_split(data, "the input"), sig)
        raise InvalidRequest("the model takes a table (columns "
                             f"{', '.join(e.name for e in sig.inputs)}): send"
                             " 'dataframe_split', 'dataframe_records' or an array of objects")
    if sig.is_tensor:
        return {"inputs": _tensor_inputs(data, sig)}
    if data is None or isinstance(data, bool | int | float | str):
        raise InvalidRequest(f"the input must be an array or an object; got {_kind(data)}")
    return {"inputs": data}


def _tensor_value(t: pb.Tensor, where: str) -> Any:
    kinds = [v for v in (t.double_values, t.int64_values, t.string_values, t.bool_values) if v]
    if len(kinds) > 1:
        raise InvalidRequest(f"{where} sets values of more than one type")
    flat: list[Any] = list(kinds[0]) if kinds else []
    if any(isinstance(v, float) and not math.isfinite(v) for v in flat):
        raise InvalidRequest(f"{where} holds a value that is not finite (NaN or infinity)")
    shape = list(t.shape) or [len(flat)]
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"{where} has shape {shape}; dimensions must be concrete (>= 0)")
    if math.prod(shape) != len(flat):
        raise InvalidRequest(f"{where} has {len(flat)} values for shape {shape}"
                             f" ({math.prod(shape)} values)")

    def build(offset: int, dims: list[int]) -> tuple[Any, int]:
        if not dims:
            return flat[offset], offset + 1
        out = []
        for _ in range(dims[0]):
            item, offset = build(offset, dims[1:])
            out.append(item)
        return out, offset

    return build(0, shape)[0]


def _from_tensors(tensors: Sequence[pb.Tensor], sig: Signature) -> dict[str, Any]:
    if not tensors:
        raise InvalidRequest("'tensors' must hold at least one tensor")
    values = {t.name: _tensor_value(t, f"tensor '{t.name}'" if t.name else "the tensor")
              for t in tensors}
    if sig.is_columns:
        raise InvalidRequest("the model takes a table, not tensors; send tabular input")
    if len(tensors) == 1 and (not sig.inputs or len(sig.inputs) == 1):
        data: Any = next(iter(values.values()))
    else:
        data = values
    if sig.is_tensor:
        data = _tensor_inputs(data, sig)
    return {"inputs": data}


def check_input(req: pb.PredictRequest, sig: Signature) -> dict[str, Any]:
    """The MLflow ``/invocations`` body for ``req``, checked against ``sig`` (InvalidRequest)."""
    which = req.WhichOneof("input")
    if which == "tensors":
        return _from_tensors(req.tensors.tensors, sig)
    if which == "tabular":
        rows = [json_format.MessageToDict(r) for r in req.tabular.rows]
        return _tabular(list(req.tabular.columns), rows, sig)
    if which == "json":
        return _from_json(json_format.MessageToDict(req.json), sig)
    raise InvalidRequest("the predict request carries no input (set tensors, tabular or json)")


def rows_of(body: dict[str, Any]) -> list[Any]:
    """The rows of a checked body (for models that answer one prediction per row)."""
    if "dataframe_split" in body:
        return list(body["dataframe_split"]["data"])
    data = body.get("inputs", body.get("instances"))
    if isinstance(data, dict):
        data = next(iter(data.values()), [])
    if isinstance(data, list):
        return data
    return [data]
