"""Plain records that capture (in the proxy) hands to ingest (off the proxy's event loop).

Capture only copies references out of mitmproxy's objects into these; anything that costs CPU (hashing,
decompression, decoding, matching, detection) happens in ingest. Offline import builds the same records,
so live capture and import share one pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class Body:
    """A message body as it crossed the wire (content-encoding NOT removed, unless ``decoded``)."""

    raw: bytes | None  # None: there was no body, or it was streamed and only hashed
    size_wire: int  # full size as sent, even when raw holds only a prefix
    sha256: str | None = None  # precomputed when the body was streamed (raw is then a prefix)
    streamed: bool = False  # True: streamed through a tap, raw is only the first part; not decoded
    truncated: bool = False  # True: raw is only the first part (e.g. a stored body read back for redecode)
    decoded: bool = False  # True: raw already has its content-encoding removed (a body read back from the store)


@dataclass(slots=True)
class HttpFlowRecord:
    id: str
    request_time: float  # UNIX seconds
    response_time: float | None
    client_address: str | None
    client_port: int | None
    server_address: str | None
    server_port: int | None
    scheme: str
    host: str
    port: int
    method: str
    path: str
    query: str
    url: str
    http_version: str
    status: int | None
    request_headers: Headers
    response_headers: Headers | None
    request_body: Body
    response_body: Body | None
    error: str | None = None
    sinkhole_rule: str | None = None
    tls_version: str | None = None
    sni: str | None = None
    source: str = "live"
    # A flow read back from the store (redecode, deferred analysis) keeps its recorded duration: the stored
    # times are whole milliseconds, and recomputing from them would rewrite the evidence.
    duration_ms: float | None = None


@dataclass(slots=True)
class ConnectionRecord:
    id: str
    kind: str  # tls-failed-client | tls-failed-server | passthrough | tcp | udp
    started: float
    ended: float | None
    client_address: str | None
    client_port: int | None
    server_address: str | None
    server_port: int | None
    sni: str | None
    alpn: list[str] = field(default_factory=list)
    tls_version: str | None = None
    observable: bool = False
    reason: str | None = None
    bytes_from_client: int | None = None
    bytes_from_server: int | None = None


@dataclass(slots=True)
class WebSocketMessageRecord:
    flow_id: str
    time: float
    from_client: bool
    is_text: bool
    size: int
    content: bytes


@dataclass(slots=True)
class DnsRecord:
    id: str
    time: float
    client_address: str | None
    question: str | None
    question_type: str | None
    answers: list[str]
    response_code: str | None
    error: str | None = None


@dataclass(slots=True)
class CaptureFailure:
    """A hook failed to build its record: ingest counts the item as unrecorded, with this reason."""

    hook: str
    error: str


Record = HttpFlowRecord | ConnectionRecord | WebSocketMessageRecord | DnsRecord | CaptureFailure
