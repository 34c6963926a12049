"""Plain data passed between teletap's decoders and the ingest worker (no mitmproxy, no SQLite)."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass
class Limits:
    max_output_bytes: int = 64 * 1024 * 1024  # per body after decompression
    max_ratio: int = 1000  # decompressed/compressed
    max_depth: int = 64  # nesting in Bond/JSON/protobuf
    max_events: int = 100_000


@dataclass
class Event:
    format: str
    position: int
    name: str | None = None
    time: str | None = None
    ikey: str | None = None
    tenant_id: str | None = None
    sdk_version: str | None = None
    app_id: str | None = None
    app_version: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    device_id: str | None = None
    user_id: str | None = None
    data: dict = field(default_factory=dict)
    pii: list[dict] = field(default_factory=list)


@dataclass
class DecodeResult:
    events: list[Event] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    format: str | None = None
    error: str | None = None
    error_offset: int | None = None
    bomb: bool = False
    body: bytes | None = None


class DecodeError(Exception):
    """A body (or part of it) cannot be decoded; ``offset`` is where decoding stopped."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class TooManyEvents(DecodeError):
    pass


def bytes_json(b: bytes) -> dict[str, str]:
    """The one JSON form of raw bytes in ``Event.data`` (documented in docs/decoders.md)."""
    return {"$bytes_b64": base64.b64encode(b).decode("ascii")}


def float_json(v: float) -> float | str:
    # JSON has no NaN/Infinity; keep them as strings rather than emit invalid JSON.
    if math.isfinite(v):
        return v
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000
_MAX_TICKS = 3_155_378_975_999_999_999  # 9999-12-31T23:59:59.9999999


_SECONDS: dict[int, str] = {}  # "YYYY-MM-DDTHH:MM:SS" by Unix second: events in a batch share seconds


def iso_from_unix_us(us: int) -> str | None:
    sec, frac = divmod(us, 1_000_000)
    head = _SECONDS.get(sec)
    if head is None:
        try:
            head = (_UNIX_EPOCH + timedelta(seconds=sec)).isoformat()[:19]
        except (OverflowError, ValueError):
            return None
        if len(_SECONDS) >= 8192:
            _SECONDS.clear()
        _SECONDS[sec] = head
    return f"{head}.{frac:06d}Z"


def iso_from_ticks(ticks: Any) -> str | None:
    """.NET ticks (100 ns since 0001-01-01 UTC) → ISO-8601 UTC; None when out of range."""
    if not isinstance(ticks, int) or isinstance(ticks, bool) or not 0 < ticks <= _MAX_TICKS:
        return None
    return iso_from_unix_us((ticks - TICKS_AT_UNIX_EPOCH) // 10)


def iso_from_unix_ms(ms: Any) -> str | None:
    if isinstance(ms, bool):
        return None
    if isinstance(ms, str):
        try:
            ms = int(ms)
        except ValueError:
            return None
    if isinstance(ms, float) and math.isfinite(ms):
        ms = int(ms)
    if not isinstance(ms, int) or not -62_135_596_800_000 <= ms <= 253_402_300_799_999:
        return None
    return iso_from_unix_us(ms * 1000)


def iso_from_unix_s(s: Any) -> str | None:
    if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s):
        return iso_from_unix_ms(int(s * 1000))
    return None


_SEEN_HEADS: set[str] = set()


def _valid_head(head: str) -> bool:
    try:
        datetime.fromisoformat(head)
    except ValueError:
        return False
    if len(_SEEN_HEADS) >= 8192:
        _SEEN_HEADS.clear()
    _SEEN_HEADS.add(head)
    return True


def normalise_iso(text: Any) -> str | None:
    """Client-supplied ISO-8601 time → teletap's one form (UTC, microseconds, 'Z'), so times sort as text."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        return None
    if len(text) == 24 and text[23] == "Z" and text[19] == "." and text[10] == "T" and text[:19].isascii():
        # The JS SDK's own form (toISOString): only the fraction needs widening. Validated by a parse
        # of the second only when not yet seen.
        head = text[:19]
        if head in _SEEN_HEADS or _valid_head(head):
            frac = text[20:23]
            if frac.isdigit():
                return f"{head}.{frac}000Z"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    except (OverflowError, ValueError):
        return None


def str_or_none(v: Any) -> str | None:
    if v is None or isinstance(v, (dict, list)):
        return None
    if isinstance(v, str):
        return v or None
    return str(v)
