"""Text-to-speech request fields: each TTS model declares its own (seed 000 §2.6), in config.

``parse_fields`` reads the declaration (``[{"name", "label", "desc", "type", "required"}]``);
``speech_values`` checks a ``SpeechRequest`` against it and returns the values to send upstream. The
request's ``input`` (OpenAI's text) fills the first required string field the caller left out, so
the OpenAI-style speech route works with any declared model. Pure code: no I/O.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from gateway_core.errors import InvalidRequest
from inference_gateway.v1 import inference_pb2 as pb

FIELD_TYPES = ("string", "number", "integer", "boolean")

DEFAULT_FIELDS: list[dict[str, Any]] = [
    {"name": "prompt", "label": "Prompt", "desc": "Hey, how are you doing today?",
     "type": "string", "required": True},
    {"name": "description", "label": "Speaker Description",
     "desc": "A female speaker with a slightly low-pitched voice", "type": "string",
     "required": False},
]


def parse_fields(items: list[dict[str, Any]], where: str) -> list[pb.SpeechField]:
    """The declared fields; ValueError naming the bad entry."""
    out = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}[{i}].name: is required (a string)")
        if name in seen:
            raise ValueError(f"{where}[{i}].name: {name!r} is declared twice")
        seen.add(name)
        kind = item.get("type", "string")
        if kind not in FIELD_TYPES:
            raise ValueError(f"{where}[{i}].type: must be one of {', '.join(FIELD_TYPES)}")
        unknown = set(item) - {"name", "label", "desc", "type", "required"}
        if unknown:
            raise ValueError(f"{where}[{i}]: unknown key {sorted(unknown)[0]!r}")
        out.append(pb.SpeechField(
            name=name, label=str(item.get("label") or name), desc=str(item.get("desc") or ""),
            type=kind, required=bool(item.get("required", False)),
        ))
    return out


def _fits(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind == "number" or float(value).is_integer()


def speech_values(req: pb.SpeechRequest, fields: list[pb.SpeechField]) -> dict[str, Any]:
    """The field values of ``req`` (InvalidRequest names a missing, unknown or mistyped field)."""
    values: dict[str, Any] = (
        json_format.MessageToDict(req.params) if req.HasField("params") else {})
    return field_values(values, req.input, fields, "speech model")


def field_values(values: dict[str, Any], text: str, fields: list[pb.SpeechField],
                 what: str) -> dict[str, Any]:
    """Check ``values`` against declared fields; ``text`` fills the first free text field."""
    by_name = {f.name: f for f in fields}
    for name in values:
        if name not in by_name:
            raise InvalidRequest(
                f"unknown field '{name[:60]}' for this {what} (its fields:"
                f" {', '.join(by_name)})")
    if text:
        target = next((f for f in fields if f.type == "string" and f.required
                       and f.name not in values), None)
        if target is None:
            target = next((f for f in fields if f.type == "string" and f.name not in values),
                          None)
        if target is None:
            raise InvalidRequest(f"the text has no field to go to: every text field of this"
                                 f" {what} is already set")
        values[target.name] = text
    for f in fields:
        value = values.get(f.name)
        if value is None:
            if f.required:
                raise InvalidRequest(f"'{f.name}' is required by this {what} ({f.label})")
            values.pop(f.name, None)
            continue
        if not _fits(value, f.type):
            article = "an" if f.type == "integer" else "a"
            raise InvalidRequest(f"'{f.name}' must be {article} {f.type}")
        if f.type == "integer":
            values[f.name] = int(value)
    return values
