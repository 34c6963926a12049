"""Content-encoding removal with bounded output: gzip, deflate (raw and zlib), br, zstd, base64.

Every decompressor is driven incrementally with an output cap, so a decompression bomb is detected after
at most ``cap`` bytes of output rather than after it has filled memory. The cap for a body is
``min(max_output_bytes, max_ratio * len(wire_body))``.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field

import brotli
import zstandard

from .model import Limits

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Brotli 1.1.0 (pinned by mitmproxy 11.0) has no output limit per call. Feeding the compressed stream in
# small slices bounds how far one call can overshoot the cap (measured: about 8-16 MiB at this size).
_BROTLI_SLICE = 32


class Bomb(Exception):
    pass


class Truncated(Exception):
    """The compressed stream ended early; ``partial`` holds what was decoded before the end."""

    def __init__(self, message: str, partial: bytes) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass
class Decoded:
    data: bytes | None
    notes: list[str] = field(default_factory=list)
    bomb: bool = False
    error: str | None = None


def output_cap(wire_len: int, limits: Limits) -> int:
    return max(0, min(limits.max_output_bytes, limits.max_ratio * max(wire_len, 1)))


def is_zlib_header(data: bytes) -> bool:
    # RFC 1950: CM = 8 (deflate), CINFO <= 7, and the 16-bit header is a multiple of 31.
    return (
        len(data) >= 2 and data[0] & 0x0F == 8 and data[0] >> 4 <= 7 and ((data[0] << 8) | data[1]) % 31 == 0
    )


def _inflate(data: bytes, wbits: int, cap: int, what: str) -> bytes:
    out: list[bytes] = []
    total = 0
    d = zlib.decompressobj(wbits)
    pending = data
    while True:
        # max_length = 0 would mean "unlimited", hence the +1 (which also lets us see that the cap is exceeded).
        chunk = d.decompress(pending, cap - total + 1)
        total += len(chunk)
        if total > cap:
            raise Bomb(f"{what} output exceeds {cap} bytes")
        out.append(chunk)
        pending = d.unconsumed_tail
        if d.eof:
            rest = d.unused_data
            if wbits > 16 and rest.startswith(GZIP_MAGIC):
                # Concatenated gzip members decode as one stream (RFC 1952 §2.2).
                d = zlib.decompressobj(wbits)
                pending = rest
                continue
            break
        if not pending:
            tail = d.flush()
            total += len(tail)
            if total > cap:
                raise Bomb(f"{what} output exceeds {cap} bytes")
            out.append(tail)
            raise Truncated(f"{what} stream truncated", b"".join(out))
    return b"".join(out)


def _unbrotli(data: bytes, cap: int) -> bytes:
    d = brotli.Decompressor()
    out: list[bytes] = []
    total = 0
    for i in range(0, len(data), _BROTLI_SLICE):
        chunk = d.process(data[i : i + _BROTLI_SLICE])
        total += len(chunk)
        if total > cap:
            raise Bomb(f"br output exceeds {cap} bytes")
        out.append(chunk)
        if d.is_finished():
            break
    if not d.is_finished():
        raise Truncated("br stream truncated", b"".join(out))
    return b"".join(out)


def _unzstd(data: bytes, cap: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    out: list[bytes] = []
    total = 0
    while True:
        chunk = reader.read(min(1 << 20, cap - total + 1))
        if not chunk:
            break
        total += len(chunk)
        if total > cap:
            raise Bomb(f"zstd output exceeds {cap} bytes")
        out.append(chunk)
    return b"".join(out)


def _unbase64(data: bytes) -> bytes:
    text = b"".join(data.split())  # tolerate line breaks
    if b"-" in text or b"_" in text:
        text = text.replace(b"-", b"+").replace(b"_", b"/")
    text += b"=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


def looks_plain(data: bytes) -> bool:
    """Uncompressed payloads teletap knows: JSON/NDJSON text or a CsProtocol Bond record."""
    head = data[:5].lstrip()
    return (
        not data
        or head[:1] in (b"{", b"[")
        or (len(data) >= 5 and data[0] == 0x29 and data[1] == 0x03 and data[3] == 0x2E)
    )


def _one(data: bytes, enc: str, cap: int, notes: list[str]) -> bytes:
    """Remove one encoding layer, trusting the bytes over the label."""
    if enc in ("gzip", "x-gzip", "deflate", "zlib"):
        if data.startswith(GZIP_MAGIC):
            if enc in ("deflate", "zlib"):
                notes.append(f"gzip data labelled {enc}")
            return _inflate(data, 31, cap, "gzip")
        if is_zlib_header(data):
            try:
                return _inflate(data, 15, cap, "zlib")
            except zlib.error:
                pass  # a raw deflate stream can start with bytes that look like a zlib header
        if data.startswith(ZSTD_MAGIC):
            notes.append(f"zstd data labelled {enc}")
            return _unzstd(data, cap)
        try:
            out = _inflate(data, -15, cap, "raw deflate")
            if enc != "deflate":
                notes.append(f"raw deflate data labelled {enc}")
            return out
        except zlib.error:
            if looks_plain(data):
                notes.append(f"uncompressed data labelled {enc}")
                return data
            raise
    if enc == "br":
        if data.startswith(GZIP_MAGIC):
            notes.append("gzip data labelled br")
            return _inflate(data, 31, cap, "gzip")
        try:
            return _unbrotli(data, cap)
        except brotli.error:
            if looks_plain(data):
                notes.append("uncompressed data labelled br")
                return data
            raise
    if enc == "zstd":
        if not data.startswith(ZSTD_MAGIC) and data.startswith(GZIP_MAGIC):
            notes.append("gzip data labelled zstd")
            return _inflate(data, 31, cap, "gzip")
        return _unzstd(data, cap)
    if enc == "base64":
        return _unbase64(data)
    if enc in ("", "identity", "none"):
        return data
    raise ValueError(f"unknown content-encoding {enc!r}")


def split_encodings(value: str | None) -> list[str]:
    if not value:
        return []
    return [p.strip().lower() for p in value.split(",") if p.strip()]


def decode_body(
    body: bytes, encodings: list[str], limits: Limits, *, sniff: bool = True, wire_len: int | None = None
) -> Decoded:
    """Undo ``encodings`` (in the order they are listed in Content-Encoding, i.e. decode in reverse)."""
    cap = output_cap(len(body) if wire_len is None else wire_len, limits)
    notes: list[str] = []
    data = body
    try:
        for enc in reversed(encodings):
            data = _one(data, enc, cap, notes)
        if sniff and not encodings and len(data) > 2:
            # Unlabelled compression: only magic numbers that plain text and Bond never start with.
            if data.startswith(GZIP_MAGIC):
                notes.append("gzip data without Content-Encoding")
                data = _inflate(data, 31, cap, "gzip")
            elif data.startswith(ZSTD_MAGIC):
                notes.append("zstd data without Content-Encoding")
                data = _unzstd(data, cap)
    except Bomb as e:
        return Decoded(None, [*notes, f"decompression bomb: {e}"], bomb=True, error=str(e))
    except Truncated as e:
        return Decoded(e.partial, [*notes, str(e)], error=str(e))
    except (zlib.error, brotli.error, zstandard.ZstdError, binascii.Error, ValueError) as e:
        return Decoded(None, notes, error=f"content-encoding {','.join(encodings) or '(sniffed)'}: {e}")
    return Decoded(data, notes)
