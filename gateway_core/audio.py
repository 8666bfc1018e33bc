"""Which audio the gateway accepts for transcription, and how big: checked once in the core, before
any upstream is called, for HTTP and gRPC callers alike.

A declared type that is generic (``application/octet-stream``, or none, as SDKs send for raw bytes)
is resolved from the file name's extension, then from the first bytes of the audio. Anything else
that is not a known audio container is 415; audio over ``limits.max_upload_bytes`` is 413.
"""

from __future__ import annotations

from gateway_core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

# Accepted types → the canonical one sent upstream.
AUDIO_TYPES: dict[str, str] = {
    "audio/wav": "audio/wav", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mpeg": "audio/mpeg", "audio/mp3": "audio/mpeg", "audio/mpga": "audio/mpeg",
    "audio/mp4": "audio/mp4", "audio/m4a": "audio/mp4", "audio/x-m4a": "audio/mp4",
    "video/mp4": "audio/mp4", "audio/aac": "audio/aac",
    "audio/flac": "audio/flac", "audio/x-flac": "audio/flac",
    "audio/ogg": "audio/ogg", "audio/opus": "audio/ogg", "application/ogg": "audio/ogg",
    "audio/webm": "audio/webm", "video/webm": "audio/webm",
}
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_EXTENSIONS = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "mpga": "audio/mpeg", "mpeg": "audio/mpeg",
    "m4a": "audio/mp4", "mp4": "audio/mp4", "aac": "audio/aac", "flac": "audio/flac",
    "ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg", "webm": "audio/webm",
}
# File extension each canonical type is uploaded with (upstreams often look at the name).
EXTENSION_OF = {"audio/wav": "wav", "audio/mpeg": "mp3", "audio/mp4": "m4a", "audio/aac": "aac",
                "audio/flac": "flac", "audio/ogg": "ogg", "audio/webm": "webm"}
SUPPORTED = "wav, mp3, m4a/mp4, aac, flac, ogg/opus, webm"


def sniff(head: bytes) -> str | None:
    """The audio container of a file from its first bytes, when recognisable."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "audio/webm"
    if head[4:8] == b"ftyp":
        return "audio/mp4"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        # MPEG audio frame sync (ADTS AAC uses the same sync with layer bits 00).
        return "audio/aac" if head[1] & 0x06 == 0 else "audio/mpeg"
    return None


def media_type(declared: str) -> str:
    """The bare, lower-case media type of a Content-Type value."""
    return declared.split(";", 1)[0].strip().lower()


def check_type(declared: str, filename: str) -> str | None:
    """The canonical type of a declared one; None when it is generic (decided by the bytes);
    UnsupportedMediaType when it is not audio the gateway accepts."""
    kind = media_type(declared)
    if kind in AUDIO_TYPES:
        return AUDIO_TYPES[kind]
    if kind not in GENERIC_TYPES:
        raise UnsupportedMediaType(
            f"unsupported audio type '{kind[:60]}'; send one of: {SUPPORTED}")
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return _EXTENSIONS.get(ext)


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(f"the audio is larger than the limit of {limit} bytes")


def check_audio(declared: str, filename: str, audio: bytes, limit: int) -> str:
    """The canonical type of ``audio`` (raises 400 if empty, 413 if too big, 415 if not audio)."""
    if not audio:
        raise InvalidRequest("the audio is empty")
    check_size(len(audio), limit)
    kind = check_type(declared, filename) or sniff(audio[:16])
    if kind is None:
        raise UnsupportedMediaType(
            "the audio's type is not declared and its bytes are not a known audio format;"
            f" send one of: {SUPPORTED}")
    return kind
