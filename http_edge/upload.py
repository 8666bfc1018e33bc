"""Reading a multipart upload (an audio file and a few form fields), bounded in size.

The file is kept as the list of chunks the multipart reader produced, joined once when the message
to the core is built. Reading stops as soon as the file passes the limit (413). A request that is not
``multipart/form-data`` is 415; a missing or empty file part is 400.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from aiohttp.web_protocol import RequestPayloadError

from http_edge.errors import EdgeError

CHUNK_BYTES = 512 * 1024
# Form overhead allowed beyond the file itself before Content-Length alone proves a 413.
_FORM_SLACK = 64 * 1024
_MAX_FIELD_BYTES = 64 * 1024
_MAX_PARTS = 32
_PARAM = re.compile(r'([\w.-]+\*?)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_ESCAPE = re.compile(r"\\(.)")


@dataclass
class Upload:
    """A multipart form as read: its text fields and its file, as chunks."""

    fields: dict[str, str] = field(default_factory=dict)
    # Repeated fields (``timestamp_granularities[]``): every value.
    lists: dict[str, list[str]] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    filename: str = ""
    content_type: str = ""
    has_file: bool = False


def disposition(header: str) -> tuple[str, str]:
    """(name, filename) of a part's Content-Disposition (``filename*`` in RFC 5987 form wins).

    Parsed here, once per part: aiohttp's parser rebuilds a regex on every call, and a part's
    ``name`` and ``filename`` each parse again (about a millisecond per upload).
    """
    params: dict[str, str] = {}
    for key, raw in _PARAM.findall(header):
        value = raw.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _ESCAPE.sub(r"\1", value[1:-1])
        params[key.lower()] = value
    filename = params.get("filename", "")
    extended = params.get("filename*", "")
    if extended.count("'") == 2:
        charset, _, encoded = extended.split("'", 2)
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            filename = unquote(encoded, encoding=charset or "utf-8", errors="strict")
    return params.get("name", ""), filename


async def read_upload(request: web.Request, limit: int, file_field: str = "file") -> Upload:
    """The form's text fields and its ``file_field`` part (as chunks), bounded to ``limit``."""
    if request.content_type != "multipart/form-data":
        raise EdgeError.http(415, f"the request must be multipart/form-data with a"
                                  f" '{file_field}' part; got '{request.content_type[:60]}'")
    length = request.content_length
    if length is not None and length > limit + _FORM_SLACK:
        raise EdgeError.http(413, f"the upload is {length} bytes; the limit is {limit}")
    try:
        reader = await request.multipart()
        up = Upload()
        for _ in range(_MAX_PARTS):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise EdgeError.bad_request("nested multipart bodies are not accepted")
            name, filename = disposition(part.headers.get("Content-Disposition", ""))
            if name == file_field:
                await _read_file(part, up, limit, file_field, filename)
            else:
                value = (await _read_field(part, name)).decode("utf-8", errors="replace")
                if name.endswith("[]"):
                    up.lists.setdefault(name, []).append(value)
                else:
                    up.fields[name] = value
        else:
            raise EdgeError.bad_request(f"the form has more than {_MAX_PARTS} parts")
    except ValueError as exc:  # the multipart body is malformed
        raise EdgeError.bad_request(f"the multipart body is malformed: {exc}") from None
    except RequestPayloadError as exc:  # e.g. a Content-Encoding its bytes do not match
        raise EdgeError.bad_request(f"the request body cannot be decoded: {exc}") from None
    if not up.has_file:
        raise EdgeError.bad_request(f"'{file_field}' is required (a file part)", param=file_field)
    if up.size == 0:
        raise EdgeError.bad_request(f"'{file_field}' is empty", param=file_field)
    return up


async def _read_field(part: BodyPartReader, name: str) -> bytes:
    raw = b""
    while not part.at_eof():  # a value may arrive in several pieces
        raw += await part.read_chunk(_MAX_FIELD_BYTES)
        if len(raw) > _MAX_FIELD_BYTES:
            raise EdgeError.bad_request(f"form field '{name[:40]}' is too long", param=name[:40])
    return raw


async def _read_file(part: BodyPartReader, up: Upload, limit: int, file_field: str,
                     filename: str) -> None:
    if up.has_file:
        raise EdgeError.bad_request(f"send one '{file_field}' part only", param=file_field)
    up.has_file = True
    up.filename = filename
    up.content_type = part.headers.get("Content-Type", "")
    while True:
        chunk = await part.read_chunk(CHUNK_BYTES)
        if not chunk:
            break
        up.size += len(chunk)
        if up.size > limit:
            raise EdgeError.http(413, f"'{file_field}' is larger than the limit of {limit} bytes",
                                 param=file_field)
        up.chunks.append(chunk)
