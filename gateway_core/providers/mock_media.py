"""Deterministic stand-ins for model outputs, for the ``mock`` provider: vectors from a text's hash,
label scores, a short WAV tone and a solid-colour PNG. Pure functions, standard library only.
"""

from __future__ import annotations

import array
import hashlib
import io
import math
import struct
import sys
import wave
import zlib

_MAX_SIDE = 1024


def _digest(text: str, salt: str = "") -> bytes:
    return hashlib.blake2b(f"{salt}\x00{text}".encode(), digest_size=64).digest()


def hash_vector(text: str, dimensions: int) -> list[float]:
    """A unit-length vector that depends only on ``text`` (equal texts, equal vectors)."""
    raw = bytearray()
    counter = 0
    while len(raw) < 2 * dimensions:
        raw += _digest(text, str(counter))
        counter += 1
    ints = struct.unpack(f"<{dimensions}H", bytes(raw[: 2 * dimensions]))
    values = [v / 32767.5 - 1.0 for v in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def unit_score(*parts: str) -> float:
    """A score in [0, 1) that depends only on ``parts``."""
    return int.from_bytes(_digest("\x1f".join(parts))[:8], "big") / 2**64


def words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in text.split()} - {""}


def overlap_score(query: str, text: str) -> float:
    """Relevance in (0, 1): the share of the query's words found in ``text``, hash-tie-broken."""
    q = words(query)
    shared = len(q & words(text)) / len(q) if q else 0.0
    return round(0.05 + 0.9 * shared + 0.04 * unit_score(query, text), 6)


def softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def tone_wav(text: str, *, rate: int = 16_000, seconds: float | None = None) -> bytes:
    """A mono 16-bit WAV: a sine tone whose pitch comes from ``text`` (0.05 s per word, ≤ 2 s)."""
    if seconds is None:
        seconds = min(2.0, 0.2 + 0.05 * len(text.split()))
    freq = 220.0 + 440.0 * unit_score(text)
    n = int(rate * seconds)
    step = 2 * math.pi * freq / rate
    samples = array.array("h", (int(12000 * math.sin(step * i)) for i in range(n)))
    if sys.byteorder == "big":  # pragma: no cover - WAV is little-endian
        samples.byteswap()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def wav_seconds(data: bytes) -> float | None:
    """The duration of WAV audio, or None when ``data`` is not a readable WAV file."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            rate = w.getframerate()
            return w.getnframes() / rate if rate else None
    except (wave.Error, EOFError, struct.error):
        return None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def solid_png(text: str, width: int = 64, height: int = 64) -> bytes:
    """A valid RGB PNG of one colour chosen by ``text`` (sides capped at 1024)."""
    width, height = max(1, min(width, _MAX_SIDE)), max(1, min(height, _MAX_SIDE))
    rgb = _digest(text, "png")[:3]
    row = b"\x00" + rgb * width  # filter byte 0 (None), then the pixels
    pixels = zlib.compress(row * height, 6)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels)
            + _png_chunk(b"IEND", b""))


def parse_size(size: str, default: tuple[int, int] = (64, 64)) -> tuple[int, int] | None:
    """``"512x512"`` → (512, 512); ``""`` → default; None when malformed."""
    if not size:
        return default
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    w, h = int(parts[0]), int(parts[1])
    return (w, h) if w > 0 and h > 0 else None
