"""A ``multipart/form-data`` body (RFC 7578), parsed in one pass over its bytes.

aiohttp's streaming part reader copies every chunk three or four times to look for the boundary
(and its ``content_type`` runs the email package's parser on every upload); for a form of a few
fields and one file, already bounded in size, finding the delimiters in the whole body with
``bytes.find`` is one pass in C, and the parts are views into the body, not copies.

Only what a form needs is read from a part's headers: ``Content-Disposition`` (name, filename,
``filename*``) and ``Content-Type``. A part's ``Content-Transfer-Encoding`` is not applied (RFC 7578
deprecates it; clients do not send it), as aiohttp's reader did not either.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from urllib.parse import unquote

MAX_HEADER_BYTES = 8 * 1024  # the headers of one part
_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "latin-1"}

# A key starts where no key character precedes it: without the lookbehind, findall would retry a
# long run of key characters from each of its positions (quadratic: 8 KiB of them took 2 s).
_PARAM = re.compile(r'(?<![\w.*-])([\w.-]+\*?)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_ESCAPE = re.compile(r"\\(.)")
# RFC 2046 §5.1.1: 1 to 70 characters from this set (the space not last).
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


class MultipartError(ValueError):
    """The body is not the multipart form it says it is (a 400)."""


@dataclass
class Part:
    name: str
    filename: str | None  # None: a plain field (no filename parameter)
    content_type: str
    data: memoryview


def params(header: str) -> dict[str, str]:
    """The ``key=value`` parameters of a header (keys lower-cased, quotes and escapes removed)."""
    out: dict[str, str] = {}
    for key, raw in _PARAM.findall(header):
        value = raw.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _ESCAPE.sub(r"\1", value[1:-1])
        out[key.lower()] = value
    return out


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header."""
    boundary = params(content_type.partition(";")[2]).get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary):
        raise MultipartError("the Content-Type has no valid boundary parameter")
    return boundary.encode("ascii")


def disposition(header: str) -> tuple[str, str | None]:
    """(name, filename) of a part's Content-Disposition (``filename*`` in RFC 5987 form wins)."""
    p = params(header.partition(";")[2])
    filename = p.get("filename")
    extended = p.get("filename*", "")
    if extended.count("'") == 2:
        charset, _, encoded = extended.split("'", 2)
        # RFC 8187's two charsets only: any other name would go to the codec registry, which
        # remembers every name it could not find (client-chosen names, kept forever).
        charset = charset.strip().lower()
        if charset in _CHARSETS:
            with contextlib.suppress(ValueError):  # bytes that are not in that charset
                filename = unquote(encoded, encoding=_CHARSETS[charset], errors="strict")
    return p.get("name", ""), filename


def _headers(block: bytes) -> tuple[str, str | None, str]:
    """(name, filename, content type) from a part's header block."""
    if len(block) > MAX_HEADER_BYTES:
        raise MultipartError("a part's headers are too long")
    if b"\n" in block.replace(b"\r\n", b"") or b"\r" in block.replace(b"\r\n", b""):
        raise MultipartError("a part's headers do not end with CRLF CRLF (a bare CR or LF)")
    cd = ct = None
    for line in block.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        if not colon:
            raise MultipartError("a part has a header line without a colon")
        key = key.strip().lower()
        if key == b"content-disposition":
            cd = value.decode("utf-8", errors="replace").strip()
        elif key == b"content-type":
            ct = value.decode("latin-1").strip()
    if cd is None or cd.partition(";")[0].strip().lower() != "form-data":
        raise MultipartError("a part has no 'Content-Disposition: form-data' header")
    name, filename = disposition(cd)
    return name, filename, ct or ""


def parse(body: bytes, boundary: bytes, max_parts: int) -> list[Part]:
    """The parts of ``body``, in order. Raises MultipartError when it is malformed."""
    delimiter = b"--" + boundary
    view = memoryview(body)
    # The first delimiter starts the body or a line (anything before it is a preamble).
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        pos = body.find(b"\r\n" + delimiter)
        if pos < 0:
            raise MultipartError("the body has no boundary delimiter")
        pos += 2 + len(delimiter)
    parts: list[Part] = []
    separator = b"\r\n" + delimiter
    while True:
        if body.startswith(b"--", pos):  # the close delimiter: the rest is an epilogue
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):  # only transport padding may follow
            raise MultipartError("a boundary delimiter is not followed by a line break")
        if len(parts) == max_parts:
            raise MultipartError(f"the form has more than {max_parts} parts")
        if body.startswith(b"\r\n", eol + 2):  # a part without headers
            raise MultipartError("a part has no 'Content-Disposition: form-data' header")
        headers = eol + 2
        end = body.find(separator, headers)
        if end < 0:
            raise MultipartError("the body ends before its closing boundary")
        end_headers = body.find(b"\r\n\r\n", headers, min(end, headers + MAX_HEADER_BYTES + 4))
        if end_headers < 0:
            if end - headers > MAX_HEADER_BYTES:
                raise MultipartError("a part's headers are too long")
            # Headers and no body: RFC 2046 makes the CRLF and the content optional, and the CRLF
            # before a delimiter belongs to the delimiter (so "headers CRLF CRLF --b" is empty).
            end_headers = start = end
        else:
            start = end_headers + 4
        block = body[headers:end_headers]
        if block.endswith(b"\r\n"):  # the last header line's own CRLF, before the delimiter's
            block = block[:-2]
        name, filename, content_type = _headers(block)
        parts.append(Part(name, filename, content_type, view[start:end]))
        pos = end + len(separator)
