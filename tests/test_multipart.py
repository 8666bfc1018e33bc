"""``http_edge/multipart.py`` against bodies from real encoders (aiohttp, httpx, urllib3), hand-made
edge cases of RFC 2046 §5.1.1 / RFC 7578, a seeded fuzz (round trips must be exact; mutations
either parse or raise MultipartError, nothing else), and uploads through the running gateway
(malformed bodies are 400 in OpenAI's error shape, never 500; bounds are 413).

"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import pytest

from gateway_core.providers.mock_media import tone_wav
from http_edge import multipart, upload
from http_edge.multipart import MAX_HEADER_BYTES, MultipartError, Part, boundary_of, disposition
from tests.conftest import Gateway, GatewayFactory
from tests.fakes.forms import cd, raw_body
from tests.fakes.openai_media import FakeOpenAIMedia

Parsed = list[tuple[str, str | None, str, bytes]]


def flat(parts: list[Part]) -> Parsed:
    return [(p.name, p.filename, p.content_type, bytes(p.data)) for p in parts]


def near_misses(boundary: bytes) -> bytes:
    """Binary file bytes full of things that look like, but are not, a delimiter of ``boundary``
    (which must not start with '-')."""
    data = (b"RIFF\x00\xff\r\n--\r\n--\r\n\r\nx"
            + b"--" + boundary + b"\r\n"  # a delimiter not preceded by CRLF
            + b"x--" + boundary + b"--"  # a close delimiter mid-line
            + b"\n--" + boundary + b"\r\n"  # LF only before it
            + b"\r--" + boundary + b"\r\n"  # CR only before it
            + b"\r\n--" + boundary[:-1]  # CRLF and the boundary less its last character
            + b"\r\n-" + boundary  # one dash short
            + b"\r\n--" + boundary[:-1] + bytes([boundary[-1] ^ 1])  # last character differs
            + b"\r\n--\r\n" + bytes(range(256)) + b"\r\n\r\n")  # ends in CRLF CRLF
    assert b"\r\n--" + boundary not in b"\r\n" + data  # a true delimiter would end the part
    return data


# --- real encoders --------------------------------------------------------------------------

async def test_aiohttp_formdata_round_trip() -> None:
    form = aiohttp.FormData(quote_fields=False)
    boundary = form._writer.boundary  # random, chosen when the form is made
    file_bytes = near_misses(boundary.encode())
    form.add_field("model", "mock-transcription")
    form.add_field("language", "")  # an empty value
    form.add_field("prompt", "héllo \"wörld\" ; a=b\r\nsecond line")
    form.add_field("file", file_bytes, filename='spé "cial"; x=1.wav', content_type="audio/wav")
    form.add_field("empty", b"", filename="empty.bin", content_type="application/octet-stream")
    writer = form()
    assert isinstance(writer, aiohttp.MultipartWriter) and writer.boundary == boundary
    body = await writer.as_bytes()
    got = flat(multipart.parse(body, boundary_of(writer.content_type), 32))
    text = "text/plain; charset=utf-8"
    assert got == [
        ("model", None, text, b"mock-transcription"),
        ("language", None, text, b""),
        ("prompt", None, text, "héllo \"wörld\" ; a=b\r\nsecond line".encode()),
        ("file", 'spé "cial"; x=1.wav', "audio/wav", file_bytes),
        ("empty", "empty.bin", "application/octet-stream", b""),
    ]


async def test_aiohttp_multipart_writer_round_trip() -> None:
    """MultipartWriter with a boundary that needs quoting (spaces, specials) and its own
    Content-Disposition; the parts are views into the body, not copies."""
    boundary = "a b'()+_,-./:=?z"
    data = near_misses(boundary.encode())
    with aiohttp.MultipartWriter("form-data", boundary=boundary) as writer:
        p = writer.append(data, {"Content-Type": "audio/mpeg"})
        p.set_content_disposition("form-data", name="file", filename="x.mp3")
        q = writer.append("v")
        q.set_content_disposition("form-data", name="model")
    body = await writer.as_bytes()
    assert '"' in writer.content_type  # aiohttp quoted it
    assert boundary_of(writer.content_type) == boundary.encode()
    parts = multipart.parse(body, boundary.encode(), 32)
    assert flat(parts) == [("file", "x.mp3", "audio/mpeg", data),
                           ("model", None, "text/plain; charset=utf-8", b"v")]
    assert all(p.data.obj is body for p in parts)


def test_httpx_round_trip() -> None:
    boundary = "httpx0123456789abcdef"
    file_bytes = near_misses(boundary.encode())
    request = httpx.Request(
        "POST", "http://127.0.0.1/v1/audio/transcriptions",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        data={"model": "m", "language": "", "temperature": "0.5"},
        files={"file": ("audio file.wav", file_bytes, "audio/wav"),
               "extra": ("é\\x.bin", b"\r\n", "application/octet-stream")})
    body = request.read()
    got = flat(multipart.parse(body, boundary_of(request.headers["content-type"]), 32))
    assert got == [
        ("model", None, "", b"m"),
        ("language", None, "", b""),
        ("temperature", None, "", b"0.5"),
        ("file", "audio file.wav", "audio/wav", file_bytes),
        ("extra", "é\\x.bin", "application/octet-stream", b"\r\n"),
    ]


def test_httpx_random_boundary() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/", data={"a": "1"},
                            files={"f": ("f.bin", bytes(range(256)) * 4, "application/x-y")})
    got = flat(multipart.parse(request.read(), boundary_of(request.headers["content-type"]), 4))
    assert got == [("a", None, "", b"1"), ("f", "f.bin", "application/x-y", bytes(range(256)) * 4)]


def test_urllib3_round_trip() -> None:
    urllib3 = pytest.importorskip("urllib3")
    boundary = "urllib3-boundary-0f0f"
    data = near_misses(boundary.encode())
    body, content_type = urllib3.encode_multipart_formdata(
        [("model", "m"), ("empty", ""), ("file", ("été.wav", data, "audio/wav")),
         ("raw", ("r.bin", b"x--" + boundary.encode()))], boundary=boundary)
    assert isinstance(body, bytes) and isinstance(content_type, str)
    got = flat(multipart.parse(body, boundary_of(content_type), 32))
    assert got == [("model", None, "", b"m"), ("empty", None, "", b""),
                   ("file", "été.wav", "audio/wav", data),
                   ("raw", "r.bin", "application/octet-stream", b"x--" + boundary.encode())]


# --- boundary_of, disposition -----------------------------------------------------------------

@pytest.mark.parametrize(("content_type", "boundary"), [
    ("multipart/form-data; boundary=abc", b"abc"),
    ('multipart/form-data; boundary="a b"', b"a b"),
    ("multipart/form-data;boundary=abc;charset=utf-8", b"abc"),
    ("Multipart/Form-Data; charset=utf-8; BOUNDARY = x-y.z", b"x-y.z"),
    ('multipart/form-data; boundary="' + "b" * 70 + '"', b"b" * 70),
    ("multipart/form-data; boundary=\"'()+_,-./:=? z\"", b"'()+_,-./:=? z"),
])
def test_boundary_of(content_type: str, boundary: bytes) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize("content_type", [
    "multipart/form-data",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary=""',
    "multipart/form-data; boundary=" + "b" * 71,  # over 70 characters
    'multipart/form-data; boundary="ab "',  # a space last
    'multipart/form-data; boundary="a@b"',  # not a boundary character
    'multipart/form-data; boundary="é"',
    "multipart/form-data; notboundary=abc",
    "boundary=abc",  # the parameters follow a ';'
])
def test_boundary_of_rejects(content_type: str) -> None:
    with pytest.raises(MultipartError, match="no valid boundary"):
        boundary_of(content_type)


def test_boundary_with_final_newline_is_rejected() -> None:
    with pytest.raises(MultipartError):
        boundary_of('multipart/form-data; boundary="abc\n"')


@pytest.mark.parametrize(("header", "expected"), [
    ('form-data; name="file"; filename="a b.wav"', ("file", "a b.wav")),
    ("form-data; name=file; filename=a.mp3", ("file", "a.mp3")),
    ('form-data; NAME="n"; FileName="f"', ("n", "f")),
    ('form-data; name="a\\\\b\\"c"', ('a\\b"c', None)),
    ('form-data; name=""; filename=""', ("", "")),
    ("form-data; name=x; filename*=UTF-8''%E2%82%AC.wav", ("x", "€.wav")),
    ("form-data; name=x; filename*=iso-8859-1'en'%E9.wav; filename=e.wav", ("x", "é.wav")),
    ("form-data; name=x; filename=ok.wav; filename*=bogus''%E9", ("x", "ok.wav")),
    ("form-data; name=x; filename=ok.wav; filename*=utf-8''%FF", ("x", "ok.wav")),
    ("form-data; name=x; filename=ok.wav; filename*=no-quotes", ("x", "ok.wav")),
    ("form-data", ("", None)),
    ('form-data; name="file"; filename="speech.wav"', ("file", "speech.wav")),
    ('form-data; name="x;y"; filename="b;c \\"q\\".wav"', ("x;y", 'b;c "q".wav')),
    ("form-data; name=\"file\"; filename=\"x.wav\"; filename*=UTF-8''%C3%A9t%C3%A9.wav",
     ("file", "été.wav")),
    ('form-data; name="model"', ("model", None)),
    ("", ("", None)),
])
def test_disposition(header: str, expected: tuple[str, str | None]) -> None:
    assert disposition(header) == expected


# A filename* charset that Python's codec machinery rejects with something other than
# LookupError/UnicodeDecodeError: 'undefined' is a real codec that always raises UnicodeError,
# and a NUL in the name raises ValueError("embedded null character").
BAD_CHARSETS = ["undefined", "utf-8\x00"]


@pytest.mark.parametrize("charset", BAD_CHARSETS)
def test_bad_filename_star_charset_is_clean(charset: str) -> None:
    header = f"Content-Disposition: form-data; name=file; filename=a.wav; filename*={charset}''%41"
    body = raw_body(b"b", [([header.encode()], b"data")])
    try:
        parts = multipart.parse(body, b"b", 32)
    except MultipartError:
        return
    assert flat(parts) == [("file", "a.wav", "", b"data")]


# --- hand-made bodies ---------------------------------------------------------------------

def test_preamble_epilogue_and_transport_padding() -> None:
    body = raw_body(b"a b", [([cd("model")], b"m"), ([cd("f", "x.bin"), b"Content-Type: a/b"], b"")],
                    preamble=b"This is a preamble.\r\n--a\r\n-a b\r\n --a b\r\n",
                    epilogue=b"this is an epilogue\r\n--a b\r\n", padding=b" \t ")
    assert b"--a b \t \r\n" in body
    assert flat(multipart.parse(body, b"a b", 32)) == [("model", None, "", b"m"),
                                                        ("f", "x.bin", "a/b", b"")]


def test_header_names_and_values_are_lenient_about_case_and_space() -> None:
    body = raw_body(b"z", [([b"content-TYPE:  text/csv  ", b"X-Other: 1",
                             b"CONTENT-DISPOSITION :FORM-DATA;name=f;filename=f.csv"], b"1,2")])
    assert flat(multipart.parse(body, b"z", 32)) == [("f", "f.csv", "text/csv", b"1,2")]


def test_close_delimiter_without_line_break_and_zero_parts() -> None:
    assert multipart.parse(b"--b--", b"b", 32) == []
    assert multipart.parse(b"--b--\r\n", b"b", 32) == []
    assert multipart.parse(b"preamble\r\n--b--epilogue", b"b", 32) == []
    assert flat(multipart.parse(raw_body(b"b", [([cd("a")], b"x")])[:-2], b"b", 32)) == [
        ("a", None, "", b"x")]


def test_non_utf8_header_bytes() -> None:
    header = b'Content-Disposition: form-data; name="n\xff"; filename="f\xc3\x28.wav"'
    body = raw_body(b"b", [([header, b"Content-Type: audio/\xe9"], b"\xff")])
    assert flat(multipart.parse(body, b"b", 32)) == [
        ("n\ufffd", "f\ufffd(.wav", "audio/é", b"\xff")]


def test_part_data_is_exact_around_crlf() -> None:
    datas = [b"", b"\r\n", b"\r\n\r\n", b"--", b"\r\n--", b"\r\n--b-", b"-", b"\n--b", b"\r--b"]
    body = raw_body(b"bb", [([cd(str(i))], d) for i, d in enumerate(datas)])
    assert [bytes(p.data) for p in multipart.parse(body, b"bb", 32)] == datas


def test_max_parts() -> None:
    body = raw_body(b"b", [([cd(str(i))], b"v") for i in range(5)])
    assert len(multipart.parse(body, b"b", 5)) == 5
    with pytest.raises(MultipartError, match="more than 4 parts"):
        multipart.parse(body, b"b", 4)
    with pytest.raises(MultipartError, match="more than 0 parts"):
        multipart.parse(body, b"b", 0)
    assert multipart.parse(b"--b--\r\n", b"b", 0) == []


def test_header_size_limit() -> None:
    def body_with_headers(size: int) -> bytes:
        base = cd("f") + b"\r\nX-Pad: "
        header = base + b"p" * (size - len(base))
        assert len(header) == size
        return raw_body(b"b", [([header], b"data")])

    assert flat(multipart.parse(body_with_headers(MAX_HEADER_BYTES), b"b", 32)) == [
        ("f", None, "", b"data")]
    with pytest.raises(MultipartError, match="headers"):
        multipart.parse(body_with_headers(MAX_HEADER_BYTES + 1), b"b", 32)
    with pytest.raises(MultipartError, match="headers"):
        multipart.parse(body_with_headers(10 * MAX_HEADER_BYTES), b"b", 32)


GOOD = raw_body(b"b", [([cd("model")], b"m"), ([cd("file", "a.wav")], b"RIFF")])


@pytest.mark.parametrize(("body", "message"), [
    pytest.param(b"", "no boundary delimiter", id="empty"),
    pytest.param(b"hello", "no boundary delimiter", id="no-delimiter"),
    pytest.param(GOOD.replace(b"--b", b"--c"), "no boundary delimiter", id="other-boundary"),
    pytest.param(GOOD[:-len(b"--\r\n")], "not followed by a line break",
                 id="ends-after-last-delimiter"),
    pytest.param(GOOD[:-len(b"\r\n--b--\r\n")], "ends before its closing boundary",
                 id="no-close-delimiter"),
    pytest.param(GOOD[:GOOD.index(b"RIFF")], "ends before its closing boundary",
                 id="ends-in-data"),
    pytest.param(GOOD[:GOOD.index(b"\r\n\r\nm")], "ends before its closing boundary",
                 id="ends-in-headers"),
    pytest.param(b"--b", "not followed by a line break", id="only-delimiter"),
    pytest.param(b"--bx\r\n" + GOOD[3:], "not followed by a line break",
                 id="longer-boundary-first"),
    pytest.param(GOOD.replace(b"--b\r\n", b"--b junk\r\n", 1), "not followed by a line break",
                 id="junk-after-delimiter"),
    pytest.param(GOOD.replace(b"\r\n", b"\n"), "not followed by a line break", id="lf-only"),
    pytest.param(GOOD.replace(b"\r\n\r\n", b"\n\n"), "headers do not end",
                 id="lf-only-blank-line"),
    pytest.param(raw_body(b"b", [([b"Content-Type: text/plain"], b"x")]),
                 "no 'Content-Disposition", id="no-content-disposition"),
    pytest.param(raw_body(b"b", [([], b"x")]), "no 'Content-Disposition", id="no-headers"),
    pytest.param(raw_body(b"b", [([b"Content-Disposition: attachment; name=a"], b"x")]),
                 "no 'Content-Disposition", id="not-form-data"),
    pytest.param(raw_body(b"b", [([cd("a"), b"no colon here"], b"x")]), "without a colon",
                 id="header-without-colon"),
    pytest.param(raw_body(b"b", [([cd("a")[:30], b" folded=continuation"], b"x")]),
                 "without a colon", id="folded-header"),
])
def test_malformed(body: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=re.escape(message)):
        multipart.parse(body, b"b", 32)


def test_lf_inside_a_header_line() -> None:
    """A bare LF inside a header line: rejected, or the part still has its name and data."""
    body = raw_body(b"b", [([cd("a") + b"\nContent-Type: x/y"], b"v")])
    try:
        parts = multipart.parse(body, b"b", 32)
    except MultipartError:
        return
    assert [(p.name, bytes(p.data)) for p in parts] == [("a", b"v")]


def test_empty_preamble_line() -> None:
    body = b"\r\n" + raw_body(b"xyz", [([cd("a")], b"hello")])
    assert flat(multipart.parse(body, b"xyz", 32)) == [("a", None, "", b"hello")]


def test_part_without_body_does_not_swallow_the_next() -> None:
    body = (b"--xyz\r\n" + cd("a") + b"\r\n\r\n--xyz\r\n" + cd("b") + b"\r\n\r\nB\r\n--xyz--\r\n")
    try:
        parts = multipart.parse(body, b"xyz", 32)
    except MultipartError:
        return  # rejecting it would do too; merging the parts would not
    assert flat(parts) == [("a", None, "", b""), ("b", None, "", b"B")]


def _best_seconds(work: Callable[[], object], runs: int = 15) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def test_long_header_parameters_are_linear() -> None:
    """Four times the parameter text costs about four times as long, not sixteen (the regex this
    replaced was quadratic: 0.6 s for 8 KiB). The best of several runs, as a ratio: a busy
    machine slows both sizes alike."""
    def parse(n: int) -> Callable[[], object]:
        body = raw_body(b"b", [([b"Content-Disposition: form-data; name=f; " + b"a" * n], b"x")])
        return lambda: multipart.parse(body, b"b", 32)

    def boundary(n: int) -> Callable[[], object]:
        return lambda: boundary_of("multipart/form-data; boundary=x; " + "a" * n)

    assert len(multipart.parse(raw_body(b"b", [([b"Content-Disposition: form-data; name=f; "
                                                 + b"a" * 8000], b"x")]), b"b", 32)) == 1
    assert boundary(30_000)() == b"x"
    for make, small in ((parse, 2000), (boundary, 7500)):
        ratio = _best_seconds(make(small * 4)) / _best_seconds(make(small))
        assert ratio < 9, (make.__name__, ratio)


# --- fuzz ---------------------------------------------------------------------------------

NAME_CHARS = "abcXYZ019_-.[] ;=\\'é€/"
FRAGMENTS = [b"\r\n", b"--", b"\r", b"\n", b"\r\n\r\n", b"\x00", b" ", b"\t"]


def random_data(rng: random.Random, boundary: bytes) -> bytes:
    """Random binary with delimiter-like fragments, never a true delimiter."""
    while True:
        out = bytearray(rng.randbytes(rng.randint(0, 120)))
        for _ in range(rng.randint(0, 6)):
            frag = rng.choice([*FRAGMENTS, b"--" + boundary, b"\r\n--" + boundary[:-1],
                               b"\r\n-" + boundary])
            at = rng.randint(0, len(out))
            out[at:at] = frag
        data = bytes(out)
        if b"\r\n--" + boundary not in b"\r\n" + data:
            return data


def random_parts(rng: random.Random, boundary: bytes, quote_ok: bool) -> list[
        tuple[str, str | None, str, bytes]]:
    chars = NAME_CHARS + ('"' if quote_ok else "")
    parts: list[tuple[str, str | None, str, bytes]] = []
    for i in range(rng.randint(0, 6)):
        name = f"{i}" + "".join(rng.choice(chars) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.5:
            filename = "".join(rng.choice(chars) for _ in range(rng.randint(1, 10)))
            parts.append((name, filename, rng.choice(["audio/wav", "application/octet-stream"]),
                          random_data(rng, boundary)))
        else:
            text = "".join(rng.choice(NAME_CHARS + "\r\n") for _ in range(rng.randint(0, 10)))
            parts.append((name, None, "", text.encode()))
    return parts


def random_boundary(rng: random.Random) -> str:
    chars = "0123456789abcdefXYZ'()+_,-./:=?"
    return "q" + "".join(rng.choice(chars) for _ in range(rng.randint(0, 40)))


def encode_httpx(boundary: str, parts: list[tuple[str, str | None, str, bytes]]) -> bytes:
    """httpx's encoding of ``parts`` (all passed as ``files``, to keep their order; a plain field
    is a file without a filename). httpx sends no multipart body for no parts: add one."""
    if not parts:
        parts.append(("only", None, "", b""))
    files = [(n, (f, d, t) if f is not None else (None, d)) for n, f, t, d in parts]
    request = httpx.Request("POST", "http://127.0.0.1/", files=files,
                            headers={"Content-Type": f'multipart/form-data; boundary="{boundary}"'})
    return request.read()


async def encode_aiohttp(boundary: str, parts: list[tuple[str, str | None, str, bytes]]) -> bytes:
    writer = aiohttp.MultipartWriter("form-data", boundary=boundary)
    for name, filename, content_type, data in parts:
        if filename is None:
            part = writer.append(data.decode(), {"Content-Type": ""})
            part.set_content_disposition("form-data", quote_fields=False, name=name)
        else:
            part = writer.append(data, {"Content-Type": content_type})
            part.set_content_disposition("form-data", quote_fields=False, name=name,
                                         filename=filename)
    return await writer.as_bytes()


async def test_fuzz_round_trips_are_exact() -> None:
    rng = random.Random(7578)
    for case in range(1200):
        boundary = random_boundary(rng)
        use_httpx = case % 2 == 0
        parts = random_parts(rng, boundary.encode(), quote_ok=not use_httpx)
        if use_httpx:
            body = encode_httpx(boundary, parts)
        else:
            body = await encode_aiohttp(boundary, parts)
        content_type = f'multipart/form-data; boundary="{boundary}"'
        got = flat(multipart.parse(body, boundary_of(content_type), 8))
        assert [(n, f, d) for n, f, _, d in got] == [(n, f, d) for n, f, _, d in parts], (
            case, body)
        assert [t for _, f, t, _ in got if f is not None] == [
            t for _, f, t, _ in parts if f is not None]


def mutate(rng: random.Random, body: bytes, boundary: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        at = rng.randint(0, len(b))
        if kind == 0:
            del b[at:]
        elif kind == 1 and b:
            b[min(at, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 2:
            b[at:at] = rng.choice([b"\r", b"\n", b"--", b"\r\n", b"\r\n\r\n", b" ", b":",
                                   b"\r\n--" + boundary, b"--" + boundary + b"--", b'"', b";"])
        elif kind == 3:
            del b[at:at + rng.randint(1, 8)]
        elif kind == 4:
            b[at:at] = b[max(0, at - 20):at]
        else:
            b[at:at] = rng.randbytes(rng.randint(1, 4))
    return bytes(b)


def test_fuzz_mutations_parse_or_raise_multipart_error() -> None:
    rng = random.Random(2046)
    seeds: list[tuple[bytes, bytes]] = []
    for _ in range(40):
        boundary = random_boundary(rng)
        body = encode_httpx(boundary, random_parts(rng, boundary.encode(), quote_ok=False))
        seeds.append((boundary.encode(), body))
    failures: list[tuple[bytes, bytes, BaseException]] = []
    counts = {"parsed": 0, "rejected": 0}

    def check(boundary: bytes, mutated: bytes, max_parts: int) -> None:
        try:
            parts = multipart.parse(mutated, boundary, max_parts)
        except MultipartError:
            counts["rejected"] += 1
            return
        counts["parsed"] += 1
        assert len(parts) <= max_parts
        for p in parts:
            assert p.data.obj is mutated  # a view into the body
            assert b"\r\n--" + boundary not in bytes(p.data)  # cut at the first delimiter
            assert isinstance(p.name, str) and isinstance(p.content_type, str)

    def run() -> None:
        for _ in range(4000):
            boundary, body = rng.choice(seeds)
            mutated = mutate(rng, body, boundary)
            try:
                check(boundary, mutated, rng.randint(0, 8))
            except BaseException as exc:  # anything but MultipartError, or a broken invariant
                failures.append((boundary, mutated, exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the parser hangs on a mutated body"
    assert not failures, failures[:3]
    assert counts["parsed"] > 100 and counts["rejected"] > 100, counts


# --- through the gateway --------------------------------------------------------------------

LIMIT = 100_000
SLACK: int = upload._FORM_SLACK
TRANSCRIBE = "/v1/audio/transcriptions"
OICM = "/models/mock-transcription/proxy/v1/transcript"


@pytest.fixture
async def gw(media: FakeOpenAIMedia, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory({
        "auth": {"enabled": False},
        "limits": {"max_upload_bytes": LIMIT},
        "models": [
            {"id": "mock-transcription", "task": "transcription", "provider": "mock"},
            {"id": "up-whisper", "task": "transcription", "provider": "openai",
             "upstream_url": media.base_url, "upstream_model": "whisper-1"},
        ],
    })


async def post_raw(gw: Gateway, path: str, body: bytes | AsyncIterator[bytes],
                   content_type: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(
            f"{gw.http}{path}", data=body, headers={"Content-Type": content_type}) as r:
        return r.status, await r.json(content_type=None)


def form(boundary: bytes, *parts: tuple[list[bytes], bytes]) -> bytes:
    return raw_body(boundary, list(parts))


MODEL = ([cd("model")], b"mock-transcription")
FILE = ([cd("file", "a.mp3"), b"Content-Type: audio/mpeg"], b"ID3 not really mp3")
CT = "multipart/form-data; boundary=b"


def assert_openai_400(status: int, payload: Any, fragment: str, case: str) -> None:
    assert status == 400, (case, status, payload)
    assert set(payload) == {"error"}, case
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, (case, error)
    assert error["type"] == "invalid_request_error", case
    assert fragment in error["message"], (case, error["message"])


MALFORMED: list[tuple[str, str, bytes, str]] = [
    ("no boundary parameter", "multipart/form-data", form(b"b", MODEL, FILE),
     "malformed: the Content-Type has no valid boundary parameter"),
    ("invalid boundary", 'multipart/form-data; boundary="b@d"', form(b"b@d", MODEL, FILE),
     "malformed: the Content-Type has no valid boundary parameter"),
    ("boundary too long", "multipart/form-data; boundary=" + "b" * 71,
     form(b"b" * 71, MODEL, FILE), "malformed: the Content-Type has no valid boundary"),
    ("no delimiter", CT, b"just some bytes", "malformed: the body has no boundary delimiter"),
    ("empty body", CT, b"", "malformed: the body has no boundary delimiter"),
    ("no close delimiter", CT, form(b"b", MODEL, FILE)[:-len(b"\r\n--b--\r\n")],
     "malformed: the body ends before its closing boundary"),
    ("LF-only line breaks", CT, form(b"b", MODEL, FILE).replace(b"\r\n", b"\n"), "malformed: "),
    ("no Content-Disposition", CT,
     form(b"b", MODEL, ([b"Content-Type: audio/mpeg"], b"ID3")),
     "malformed: a part has no 'Content-Disposition: form-data' header"),
    ("header without colon", CT, form(b"b", MODEL, ([cd("file", "a.mp3"), b"oops"], b"ID3")),
     "malformed: a part has a header line without a colon"),
    ("headers too long", CT,
     form(b"b", MODEL, ([cd("file", "a.mp3"), b"X: " + b"x" * MAX_HEADER_BYTES], b"ID3")),
     "malformed: a part's headers"),
    ("nested multipart/mixed", CT,
     form(b"b", MODEL, ([cd("file"), b"Content-Type: multipart/mixed; boundary=c"],
                        raw_body(b"c", [([b"Content-Disposition: attachment; filename=a.mp3"],
                                         b"ID3")]))),
     "nested multipart bodies are not accepted"),
    ("33 parts", CT, form(b"b", MODEL, FILE, *[([cd(f"f{i}")], b"v") for i in range(31)]),
     "malformed: the form has more than 32 parts"),
    ("duplicate file part", CT, form(b"b", MODEL, FILE, FILE), "send one 'file' part only"),
    ("zero parts", CT, b"--b--\r\n", "'file' is required"),
    ("file as a plain field", CT, form(b"b", MODEL, ([cd("file")], b"")), "'file' is empty"),
    ("field too long", CT, form(b"b", MODEL, ([cd("prompt")], b"p" * (64 * 1024 + 1)), FILE),
     "form field 'prompt' is too long"),
]


async def test_malformed_uploads_are_400_in_openai_shape(gw: Gateway) -> None:
    assert upload._MAX_PARTS == 32
    for case, content_type, body, fragment in MALFORMED:
        status, payload = await post_raw(gw, TRANSCRIBE, body, content_type)
        assert_openai_400(status, payload, fragment, case)
    # 32 parts are accepted (the limit is on the 33rd)
    body = form(b"b", MODEL, FILE, *[([cd(f"f{i}")], b"v") for i in range(30)])
    status, payload = await post_raw(gw, TRANSCRIBE, body, CT)
    assert status == 200, payload


async def test_oicm_transcript_malformed_is_400(gw: Gateway) -> None:
    status, payload = await post_raw(gw, OICM, form(b"b", FILE)[:-4], CT)
    assert status == 400, payload
    assert "malformed" in payload["error"]["message"]


async def test_near_miss_bytes_reach_the_model_exactly(gw: Gateway,
                                                       media: FakeOpenAIMedia) -> None:
    boundary = b"near miss'()+_,-./:=?"
    content_type = f'multipart/form-data; boundary="{boundary.decode()}"'
    audio = tone_wav("hello") + near_misses(boundary)
    body = raw_body(boundary, [
        ([cd("model")], b"up-whisper"),
        ([cd("language")], b""),  # empty value: the default
        ([cd("file", "a.wav"), b"Content-Type: audio/wav"], audio),
        ([cd("response_format")], b"json"),
    ], preamble=b"preamble\r\n", epilogue=b"\r\nepilogue", padding=b"\t ")
    status, payload = await post_raw(gw, TRANSCRIBE, body, content_type)
    assert status == 200, payload
    assert payload == {"text": f"heard {len(audio)} bytes"}
    assert media.requests[-1].files["file"] == ("a.wav", "audio/wav", audio)

    # The mock model reports the byte count and type of audio it cannot read as WAV.
    mp3 = b"ID3" + near_misses(boundary)
    for path, model_part in ((TRANSCRIBE, [MODEL]), (OICM, [])):
        body = raw_body(boundary, [*model_part, ([cd("file", "a.mp3"),
                                                  b"Content-Type: audio/mpeg"], mp3)])
        status, payload = await post_raw(gw, path, body, content_type)
        assert status == 200, (path, payload)
        assert payload["text"] == (f"This is a mock transcription of {len(mp3)} bytes of"
                                   " audio/mpeg."), path


async def test_real_clients_through_the_gateway(gw: Gateway, media: FakeOpenAIMedia) -> None:
    """aiohttp's FormData and httpx, each with its own random boundary."""
    data = bytes(range(256)) * 8 + b"\r\n--\r\n"
    fd = aiohttp.FormData()
    fd.add_field("model", "up-whisper")
    fd.add_field("prompt", "")
    fd.add_field("file", data, filename="x.wav", content_type="audio/wav")
    async with aiohttp.ClientSession() as s, s.post(f"{gw.http}{TRANSCRIBE}", data=fd) as r:
        assert r.status == 200, await r.text()
    assert media.requests[-1].files["file"] == ("x.wav", "audio/wav", data)
    async with httpx.AsyncClient() as c:
        r2 = await c.post(f"{gw.http}{TRANSCRIBE}", data={"model": "up-whisper"},
                          files={"file": ("y.wav", data[::-1], "audio/wav")})
    assert r2.status_code == 200, r2.text
    assert media.requests[-1].files["file"] == ("y.wav", "audio/wav", data[::-1])


async def test_upload_bounds(gw: Gateway) -> None:
    # A file of exactly the limit is accepted.
    at_limit = b"ID3" + bytes(LIMIT - 3)
    status, payload = await post_raw(
        gw, TRANSCRIBE, form(b"b", MODEL, ([cd("file", "a.mp3")], at_limit)), CT)
    assert status == 200, payload
    assert f"of {LIMIT} bytes" in payload["text"]

    # One byte over: the Content-Length is within limit + slack, the file part is not.
    body = form(b"b", MODEL, ([cd("file", "a.mp3")], at_limit + b"\x00"))
    assert len(body) <= LIMIT + SLACK
    status, payload = await post_raw(gw, TRANSCRIBE, body, CT)
    assert status == 413, payload
    assert payload["error"]["param"] == "file"
    assert f"larger than the limit of {LIMIT} bytes" in payload["error"]["message"]

    # Chunked (no Content-Length), over limit + slack: stopped while reading.
    head = form(b"b", MODEL)[:-len(b"--\r\n")] + b"\r\n" + cd("file", "a.mp3") + b"\r\n\r\nID3"
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head
        while sent < LIMIT + SLACK + 1:
            sent += 16 * 1024
            yield bytes(16 * 1024)
            await asyncio.sleep(0)

    status, payload = await post_raw(gw, TRANSCRIBE, chunks(), CT)
    assert status == 413, payload
    assert f"larger than the limit of {LIMIT} bytes" in payload["error"]["message"]

    # Content-Length over limit + slack: refused before reading.
    big = form(b"b", MODEL, ([cd("file", "a.mp3")], bytes(LIMIT + SLACK)))
    status, payload = await post_raw(gw, TRANSCRIBE, big, CT)
    assert status == 413, payload
    assert f"the upload is {len(big)} bytes" in payload["error"]["message"]


async def test_bad_filename_star_charset_is_not_500(gw: Gateway) -> None:
    for charset in BAD_CHARSETS:
        header = (f"Content-Disposition: form-data; name=file; filename=a.mp3;"
                  f" filename*={charset}''%41").encode()
        body = form(b"b", MODEL, ([header, b"Content-Type: audio/mpeg"], b"ID3"))
        status, payload = await post_raw(gw, TRANSCRIBE, body, CT)
        assert status in (200, 400), (charset, status, payload)


async def test_leading_crlf_upload_is_accepted(gw: Gateway) -> None:
    body = b"\r\n" + form(b"b", MODEL, FILE)
    status, payload = await post_raw(gw, TRANSCRIBE, body, CT)
    assert status == 200, payload


def test_unknown_filename_charsets_are_not_remembered() -> None:
    """Only RFC 8187's charsets are decoded: a client-chosen name never reaches the codec
    registry, whose cache keeps every unknown name for the life of the process."""
    import encodings

    name = "x-not-a-charset-" + "q" * 4000
    _, filename = disposition(f"form-data; name=file; filename=a.wav; filename*={name}''%41")
    assert filename == "a.wav"  # the plain filename stands
    assert not any(str(key).startswith("x_not_a_charset") for key in encodings._cache)
    assert disposition("form-data; name=f; filename*=ISO-8859-1''%E9t%E9")[1] == "été"
