"""Reading a multipart upload (an audio file and a few form fields), bounded in size.

The body is read whole (it is bounded: the file limit plus a little for the form) as the list of
chunks the connection delivered, joined once, and parsed in one pass (``http_edge/multipart.py``);
the file is a view into the body until the message to the core is built. The body stops being read
as soon as it passes the bound (413). A request that is not ``multipart/form-data`` is 415; a
missing or empty file part is 400; a malformed body is 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from http_edge import multipart
from http_edge.body import read_body
from http_edge.errors import EdgeError

# Form overhead allowed beyond the file itself.
_FORM_SLACK = 64 * 1024
_MAX_FIELD_BYTES = 64 * 1024
_MAX_PARTS = 32


@dataclass
class Upload:
    """A multipart form as read: its text fields and its file."""

    fields: dict[str, str] = field(default_factory=dict)
    # Repeated fields (``timestamp_granularities[]``): every value.
    lists: dict[str, list[str]] = field(default_factory=dict)
    file: memoryview = field(default_factory=lambda: memoryview(b""))
    filename: str = ""
    content_type: str = ""
    has_file: bool = False

    @property
    def size(self) -> int:
        return len(self.file)

    def file_bytes(self) -> bytes:
        """The file's bytes (the one copy made of them at the edge), releasing the body."""
        data = bytes(self.file)
        self.file.release()
        self.file = memoryview(b"")
        return data


async def read_upload(request: web.Request, limit: int, file_field: str = "file") -> Upload:
    """The form's text fields and its ``file_field`` part, the file bounded to ``limit``."""
    content_type = request.headers.get("Content-Type", "")
    # aiohttp's request.content_type runs the email package's header parser, and its cache
    # never hits here (each upload has its own boundary): about 0.3 ms per upload.
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise EdgeError.http(415, f"the request must be multipart/form-data with a"
                                  f" '{file_field}' part")
    try:
        boundary = multipart.boundary_of(content_type)
        try:
            body = await read_body(request, limit + _FORM_SLACK, "the upload", limit)
        except EdgeError as err:
            if err.status == 413:
                err.param = file_field
            raise
        parts = multipart.parse(body, boundary, _MAX_PARTS)
    except multipart.MultipartError as exc:
        raise EdgeError.bad_request(f"the multipart body is malformed: {exc}") from None
    up = Upload()
    for part in parts:
        if part.content_type.lower().startswith("multipart/"):
            raise EdgeError.bad_request("nested multipart bodies are not accepted")
        if part.name == file_field:
            if up.has_file:
                raise EdgeError.bad_request(f"send one '{file_field}' part only",
                                            param=file_field)
            up.has_file, up.file = True, part.data
            up.filename, up.content_type = part.filename or "", part.content_type
            if up.size > limit:
                raise EdgeError.http(413, f"'{file_field}' is larger than the limit of {limit}"
                                          " bytes", param=file_field)
            continue
        if len(part.data) > _MAX_FIELD_BYTES:
            raise EdgeError.bad_request(f"form field '{part.name[:40]}' is too long",
                                        param=part.name[:40])
        value = str(part.data, "utf-8", errors="replace")
        if part.name.endswith("[]"):
            up.lists.setdefault(part.name, []).append(value)
        else:
            up.fields[part.name] = value
    if not up.has_file:
        raise EdgeError.bad_request(f"'{file_field}' is required (a file part)", param=file_field)
    if up.size == 0:
        raise EdgeError.bad_request(f"'{file_field}' is empty", param=file_field)
    return up
