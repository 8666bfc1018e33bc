"""Raw-socket HTTP for tests that send what no client library would."""

from __future__ import annotations

import asyncio

import orjson


async def exchange(port: int, data: bytes, within: float = 10.0) -> bytes:
    """Send ``data`` to the loopback ``port`` and read until it closes (or ``within`` s pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunks: list[bytes] = []
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    except ConnectionResetError:
        return b"".join(chunks)
    finally:
        writer.close()


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one raw HTTP response."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def error_message(body: bytes) -> str:
    message: str = orjson.loads(body)["error"]["message"]
    return message


def complete(answer: bytes) -> bool:
    """Whether ``answer`` holds one whole response framed by Content-Length (after any 1xx)."""
    while answer.startswith(b"HTTP/1.1 1"):
        answer = answer.partition(b"\r\n\r\n")[2]
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return False


async def first_answer(port: int, data: bytes, within: float = 10.0) -> bytes:
    """Send ``data`` and read until one whole response has come or the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            while not complete(answer) and (chunk := await reader.read(65536)):
                answer += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return answer
