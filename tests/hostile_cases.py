"""Generated hostile requests for every route and dialect (``test_hostile_inputs.py`` sends them).

Deterministic: the same seed gives the same cases. Each ``Case`` is either an HTTP request (method,
path, headers, body bytes) sent with a client library, or raw bytes written to a socket (framing a
client library would never produce). The credential is added by the sender, so that every case
carries a valid token that must never come back or reach the log.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fakes.forms import cd, raw_body

MESSAGES = [{"role": "user", "content": "hi"}]
OICM = "/models/{m}/proxy/v1"
EP = "/v2/mock/openai/v1"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: Any = None  # a valid JSON body; None for GET and multipart routes
    multipart: bool = False


ROUTES: list[Route] = [
    Route("POST", "/v1/chat/completions", {"model": "mock-chat", "messages": MESSAGES}),
    Route("POST", "/v1/chat/completions", {"model": "mock-chat", "messages": MESSAGES,
                                           "stream": True}),
    Route("POST", "/v1/completions", {"model": "mock-completion", "prompt": "hi"}),
    Route("POST", "/v1/embeddings", {"model": "mock-embedding", "input": "hi"}),
    Route("POST", "/v1/rerank", {"model": "mock-rerank", "query": "q", "documents": ["a"]}),
    Route("POST", "/v1/audio/speech", {"model": "mock-speech", "input": "hi", "voice": "a"}),
    Route("POST", "/v1/images/generations", {"model": "mock-image", "prompt": "x"}),
    Route("POST", "/v1/audio/transcriptions", multipart=True),
    Route("GET", "/v1/models"),
    Route("GET", "/v1/models/mock-chat"),
    Route("POST", OICM.format(m="mock-chat") + "/chat/completions", {"inputs": "hi"}),
    Route("POST", OICM.format(m="mock-chat") + "/chat/completions", {"messages": MESSAGES}),
    Route("POST", OICM.format(m="mock-classifier") + "/classify", {"inputs": "hi"}),
    Route("POST", OICM.format(m="mock-transcription") + "/transcript", multipart=True),
    Route("GET", OICM.format(m="mock-speech") + "/generate-speech/schema"),
    Route("POST", OICM.format(m="mock-speech") + "/generate-speech", {"prompt": "hi"}),
    Route("POST", OICM.format(m="mock-image") + "/generate-image", {"prompt": "x"}),
    Route("POST", OICM.format(m="mock-translation") + "/translate", {"text": "hi"}),
    Route("POST", OICM.format(m="mock-embedding") + "/embed", {"inputs": "hi"}),
    Route("POST", OICM.format(m="mock-rerank") + "/rerank", {"query": "q", "texts": ["a"]}),
    Route("POST", OICM.format(m="mock-predict") + "/predict", {"inputs": [[1, 2]]}),
    Route("GET", OICM.format(m="mock-chat") + "/models"),
    Route("POST", EP + "/chat/completions", {"model": "mock-chat", "messages": MESSAGES}),
    Route("POST", EP + "/completions", {"model": "mock-completion", "prompt": "hi"}),
    Route("GET", EP + "/models"),
    Route("POST", "/gateway/mock-chat/invocations", {"messages": MESSAGES}),
    Route("POST", "/endpoints/mock-embedding/invocations", {"input": "hi"}),
    Route("GET", "/api/2.0/endpoints/"),
    Route("GET", "/api/2.0/endpoints/mock-chat"),
    Route("POST", "/v1/inference/chat", {"model": "mock-chat", "messages": MESSAGES,
                                         "parameters": {"maxTokens": 4}}),
    Route("POST", "/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 4}}),
    Route("POST", "/generate_stream", {"inputs": "hi"}),
    Route("POST", "/", {"inputs": "hi", "stream": False}),
    Route("GET", "/info"),
    Route("POST", "/admin/tokens", {"name": "x"}),
    Route("GET", "/admin/tokens"),
    Route("GET", "/health"),
    Route("GET", "/metrics"),
    Route("GET", "/nowhere/../../etc/passwd"),
]

# Odd JSON values, put in place of a whole body and of each of its fields.
ODD: list[Any] = [
    None, True, False, 0, -1, 2**63, -(2**63) - 1, 2**200, 1e308, -0.0, 3.5, "", " ", "x",
    "\u0000", "\u202e\u200b", "ñ" * 3, "😀" * 4, "<script>alert(1)</script>", "${jndi:x}",
    "' OR 1=1 --", "../../etc/passwd", "%s%n%x", "a" * 3000, [], [None], [[[]]], [1, "a", {}],
    {}, {"": None}, {"$ref": "#"}, {"model": {"model": "x"}}, ["hi"] * 300,
]
# Bodies no JSON encoder produces.
RAW_BODIES: list[bytes] = [
    b"", b" ", b"{", b"}", b"[", b'{"model": "mock-chat"', b'{"a": 1}}', b"\xff\xfe\x00",
    b"\xef\xbb\xbf{}", b"NaN", b'{"x": NaN}', b'{"x": Infinity}', b"1e999999", b'{"x": 1e999}',
    b'{"model": "a", "model": "b"}', b'"\\ud800"', b'{"x": "\\ud800"}', b"\x00" * 64,
    b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000, b"null" + b" " * 100_000,
    "{\"x\": \"\u0000\"}".encode(), b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}',
]
CONTENT_TYPES = [None, "application/json", "application/json; charset=latin-1", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data", "application/xml",
                 "application/json; boundary=x", "*/*", ";;;", "application/problem+json"]
ENCODINGS = ["gzip", "deflate", "br", "zstd", "identity", "gzip, gzip", "x-unknown", "compress"]
TIMEOUTS = ["0", "-1", "nan", "inf", "1e999", "abc", "", "0.000001", "99999999999", "1" * 400]
REQUEST_IDS = ["", "a" * 500, "../x", "id with spaces", "\u00e9", "x\ty", "ok-id"]


@dataclass(frozen=True)
class Case:
    name: str
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    raw: bytes | None = None  # written to a socket as is ({token} replaced)
    # A 5xx this case may rightly get (a deadline the client set too short to meet).
    allowed: frozenset[int] = frozenset()


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers past 64 bits: the standard library writes them
        return json.dumps(value).encode()


def _multipart(audio: bytes, model: str = "mock-transcription") -> tuple[str, bytes]:
    boundary = b"hostile"
    body = raw_body(boundary, [([cd("model")], model.encode()),
                               ([cd("file", "a.wav"), b"Content-Type: audio/wav"], audio)])
    return "multipart/form-data; boundary=hostile", body


def body_cases(route: Route) -> list[Case]:
    """The route's valid body, with each odd value as the body and as each of its fields."""
    name = f"{route.method} {route.path}"
    json_ct = {"Content-Type": "application/json"}
    cases = [Case(f"{name} valid", route.method, route.path, json_ct, _json(route.body))]
    for i, value in enumerate(ODD):
        cases.append(Case(f"{name} body={i}", route.method, route.path, json_ct, _json(value)))
        for key in route.body:
            changed = {**route.body, key: value}
            cases.append(Case(f"{name} {key}={i}", route.method, route.path, json_ct,
                              _json(changed)))
    for i, raw in enumerate(RAW_BODIES):
        cases.append(Case(f"{name} raw={i}", route.method, route.path, json_ct, raw))
    for key in route.body:
        huge = {**route.body, key: "w" * 300_000}
        cases.append(Case(f"{name} huge {key}", route.method, route.path, json_ct, _json(huge)))
    return cases


def header_cases(route: Route) -> list[Case]:
    """The valid request with odd headers: types, encodings, deadlines, request ids."""
    name = f"{route.method} {route.path}"
    if route.multipart:
        ctype, body = _multipart(b"RIFF0000WAVEfmt ")
    else:
        ctype, body = "application/json", _json(route.body) if route.body is not None else b""
    cases: list[Case] = []
    for ct in CONTENT_TYPES:
        headers = {"Content-Type": ct} if ct else {}
        cases.append(Case(f"{name} ct={ct!r}", route.method, route.path, headers, body))
    for enc in ENCODINGS:
        good = gzip.compress(body) if enc == "gzip" else body
        for label, payload in (("good", good), ("bad", b"not " + enc.encode() + b" at all")):
            cases.append(Case(f"{name} enc={enc} {label}", route.method, route.path,
                              {"Content-Type": ctype, "Content-Encoding": enc}, payload))
    for value in TIMEOUTS:
        short = frozenset({504}) if value == "0.000001" else frozenset()
        cases.append(Case(f"{name} timeout={value[:10]!r}", route.method, route.path,
                          {"Content-Type": ctype, "OICM-Request-Timeout": value}, body,
                          allowed=short))
    for value in REQUEST_IDS:
        cases.append(Case(f"{name} rid={value[:10]!r}", route.method, route.path,
                          {"Content-Type": ctype, "X-Request-Id": value}, body))
    return cases


def multipart_cases(route: Route) -> list[Case]:
    name = f"{route.method} {route.path}"
    bodies = [b"", b"RIFF", b"\x00" * 1000, b"ID3" + b"\xff" * 100, b"not audio at all"]
    cases = []
    for i, audio in enumerate(bodies):
        ctype, body = _multipart(audio)
        cases.append(Case(f"{name} audio={i}", route.method, route.path,
                          {"Content-Type": ctype}, body))
    for i, raw in enumerate(RAW_BODIES[:12]):
        cases.append(Case(f"{name} raw={i}", route.method, route.path,
                          {"Content-Type": "multipart/form-data; boundary=hostile"}, raw))
    return cases


def framing_cases() -> list[Case]:
    """Raw bytes for the socket; ``{token}`` is the valid token."""
    t = b"{token}"
    auth = b"Authorization: Bearer " + t + b"\r\n"
    chat = _json(ROUTES[0].body)
    post = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n" + auth
    length = b"Content-Length: %d\r\n\r\n" % len(chat)
    raws = {
        "ctl in auth": post.replace(t, t + b"\x01") + length + chat,
        "nul in auth": post.replace(t, t + b"\x00") + length + chat,
        "del in auth": post.replace(t, t + b"\x7f") + length + chat,
        "bare cr": post.replace(t, t + b"\rx") + length + chat,
        "bare lf lines": post.replace(b"\r\n", b"\n") + length.replace(b"\r\n", b"\n") + chat,
        "long header": post.replace(t, t + b"a" * 9000) + length + chat,
        "long line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: gw\r\n" + auth + b"\r\n",
        "many headers": post + b"".join(b"X-%d: %s\r\n" % (i, t) for i in range(150)) + length,
        "no host": post.replace(b"Host: gw\r\n", b"") + length + chat,
        "two hosts": post + b"Host: other\r\n" + length + chat,
        "two lengths": post + b"Content-Length: 1\r\n" + length + chat,
        "negative length": post + b"Content-Length: -1\r\n\r\n",
        "huge length": post + b"Content-Length: 99999999999999999999\r\n\r\n",
        "cl and te": post + b"Transfer-Encoding: chunked\r\n" + length + chat,
        "te twice": post + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "te unknown": post + b"Transfer-Encoding: " + t + b"\r\n\r\n",
        "bad chunk": post + b"Transfer-Encoding: chunked\r\n\r\n" + t + b"\r\n",
        "chunk overflow": post + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        "chunk ext": post + b"Transfer-Encoding: chunked\r\n\r\n2;" + t + b"\r\n{}\r\n0\r\n\r\n",
        "short body": post + b"Content-Length: 500\r\n\r\n" + chat,
        "pipelined bad": post + length + chat + b"GARBAGE " + t + b"\r\n\r\n",
        "http09": b"GET /" + t + b"\r\n",
        "http2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "tls hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + t,
        "bad method": t + b" / HTTP/1.1\r\nHost: gw\r\n\r\n",
        "bad version": b"GET / HTTP/9." + t + b"\r\nHost: gw\r\n\r\n",
        "absolute uri": b"GET http://evil/" + t + b" HTTP/1.1\r\nHost: gw\r\n" + auth + b"\r\n",
        "nul in path": b"GET /v1/models\x00" + t + b" HTTP/1.1\r\nHost: gw\r\n\r\n",
        "space in name": post + b"Bad Name: " + t + b"\r\n" + length + chat,
        "obs fold": post + b"X-Fold: a\r\n " + t + b"\r\n" + length + chat,
        "bad gzip": post + b"Content-Encoding: gzip\r\n" + length + chat,
        "upgrade": b"GET /health HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\n"
                   b"Upgrade: websocket\r\n" + auth + b"\r\n",
        "expect": post + b"Expect: 100-continue\r\n" + length + chat,
        "expect odd": post + b"Expect: " + t + b"\r\n" + length + chat,
        "two auth": post + auth + length + chat,
        "empty": b"\r\n\r\n",
        "only cr": b"\r" * 100,
    }
    return [Case(f"raw {name}", raw=raw) for name, raw in raws.items()]


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for route in ROUTES:
        if route.body is not None:
            cases += body_cases(route)
        if route.multipart:
            cases += multipart_cases(route)
        cases += header_cases(route)
    return cases + framing_cases()


def quick_subset(cases: list[Case], size: int, seed: int = 17) -> list[Case]:
    """Every raw-socket case and a fixed sample of the others (each route at least once)."""
    raw = [c for c in cases if c.raw is not None]
    http = [c for c in cases if c.raw is None]
    first = {c.path: c for c in reversed(http)}  # one per route
    rest = [c for c in http if c not in first.values()]
    sample = random.Random(seed).sample(rest, max(0, size - len(raw) - len(first)))
    return list(itertools.chain(raw, first.values(), sample))
