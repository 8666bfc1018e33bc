"""A large upload is not copied more than needed: the Python memory alive at the peak of a 10 MB
transcription through edge and core, as a multiple of the file.

With the edge calling the core in process, the peak holds the joined body and the file's bytes
(2x): the core's one read of the audio comes after the edge's body is gone. Over gRPC the serialized
message is alive too. A change that keeps one more copy alive fails here.
"""

from __future__ import annotations

import os
import tracemalloc

import aiohttp

from tests.conftest import GatewayFactory
from tests.fakes.forms import cd, raw_body

SIZE = 10 * 1024 * 1024
BOUNDARY = b"copies-boundary"


def body_of(audio: bytes) -> bytes:
    return raw_body(BOUNDARY, [([cd("model")], b"mock-transcription"),
                               ([cd("file", "a.wav"), b"Content-Type: audio/wav"], audio)])


async def test_a_10mb_upload_peaks_at_two_copies(gateway_factory: GatewayFactory,
                                                 core_transport: str) -> None:
    gw = await gateway_factory({
        "auth": {"enabled": False},
        "limits": {"max_upload_bytes": 12 * 1024 * 1024},
        "models": [{"id": "mock-transcription", "task": "transcription", "provider": "mock"}],
    })
    body = body_of(b"RIFF" + os.urandom(SIZE - 4))  # not a WAV header: the mock counts bytes
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}
    async with aiohttp.ClientSession() as s:

        async def upload() -> str:
            async with s.post(f"{gw.http}/v1/audio/transcriptions", data=body,
                              headers=headers) as r:
                assert r.status == 200, await r.text()
                text: str = (await r.json())["text"]
                return text

        await upload()  # warm: connections, caches, lazily built handlers
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            text = await upload()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert f"{SIZE} bytes" in text  # the whole file reached the core
    copies = (peak - baseline) / SIZE
    limit = 2.2 if core_transport == "local" else 3.2
    assert copies <= limit, f"{copies:.2f} copies of the file alive at the peak"
