"""multipart/form-data bodies built by hand, byte for byte (for the parser's tests and the
upload tests that need an exact body)."""

from __future__ import annotations


def raw_body(boundary: bytes, parts: list[tuple[list[bytes], bytes]], *, preamble: bytes = b"",
             epilogue: bytes = b"", padding: bytes = b"", close: bool = True) -> bytes:
    """A body built by hand: each part is (header lines, data)."""
    out = preamble + b"--" + boundary
    for headers, data in parts:
        out += padding + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + data
        out += b"\r\n--" + boundary
    if close:
        out += b"--" + padding + b"\r\n" + epilogue
    return out


def cd(name: str, filename: str | None = None) -> bytes:
    header = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        header += f'; filename="{filename}"'
    return header.encode()
