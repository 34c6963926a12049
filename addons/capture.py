"""Capture: mitmproxy hooks → plain records, handed to ingest.

Runs on mitmproxy's event loop, so every hook only reads attributes and queues a record; hashing,
decompression, decoding and writing happen in ingest. No exception may escape into mitmproxy: a hook
that fails logs the error and the traffic goes on.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, ctx, dns, http, tcp, tls, udp
from mitmproxy.net.http import url as mitmproxy_url
from mitmproxy.proxy.layers.tls import parse_client_hello

from .records import (
    Body,
    CaptureFailure,
    ConnectionRecord,
    DnsRecord,
    HttpFlowRecord,
    Record,
    WebSocketMessageRecord,
)

log = logging.getLogger("teletap")

Submit = Callable[[Record], None]


def guarded(hook: Callable[..., None]) -> Callable[..., None]:
    """Never let an exception from a teletap hook reach mitmproxy (it would disturb the flow).

    The failure is logged and also queued, so ingest counts the lost item as unrecorded: nothing goes
    missing silently, even through a bug of ours.
    """

    @functools.wraps(hook)
    def wrapper(self: Any, *args: Any) -> None:
        try:
            hook(self, *args)
        except Exception as e:
            log.exception("teletap: %s hook failed; traffic continues, this item is not recorded", hook.__name__)
            with contextlib.suppress(Exception):
                self.submit(CaptureFailure(hook=hook.__name__, error=f"{type(e).__name__}: {e}"[:300]))

    return wrapper


class BodyTap:
    """A ``stream`` callable for large bodies: hashes and counts every chunk, keeps only a prefix.

    mitmproxy then forwards the body without buffering it, so a multi-gigabyte upload costs bounded memory.
    """

    def __init__(self, keep: int):
        self.keep = keep
        self.sha = hashlib.sha256()
        self.size = 0
        self.prefix = bytearray()

    def __call__(self, chunk: bytes) -> bytes:
        self.sha.update(chunk)
        self.size += len(chunk)
        room = self.keep - len(self.prefix)
        if room > 0:
            self.prefix += chunk[:room]
        return chunk

    def body(self) -> Body:
        return Body(raw=bytes(self.prefix), size_wire=self.size, sha256=self.sha.hexdigest(), streamed=True)


def _addr(address: Any) -> tuple[str | None, int | None]:
    if not address:
        return None, None
    return str(address[0]), int(address[1])


def _body(message: http.Message | None, tap: BodyTap | None) -> Body | None:
    if message is None:
        return None
    if tap is not None:
        return tap.body()
    raw = message.raw_content
    return Body(raw=raw, size_wire=len(raw) if raw else 0)


def _content_length(message: http.Message) -> int | None:
    # The raw fields, not headers.get: that decodes every header name on every call (3 µs a flow). As
    # with headers.get, repeated fields count as their joined value ("12, 12"), which is no length.
    values = [value for name, value in message.headers.fields
              if len(name) == 14 and name.lower() == b"content-length"]
    if len(values) != 1 or not values[0].strip().isdigit():
        return None
    return int(values[0])


# Host header → mitmproxy's parse of it. Clients send the same few hosts over and over, and parsing and
# validating one costs ≈ 7 µs; bounded, because a hostile client can send endless names.
_AUTHORITIES: dict[str, tuple[str, int | None]] = {}
_AUTHORITIES_MAX = 4096


def _parse_authority(value: str) -> tuple[str, int | None]:
    found = _AUTHORITIES.get(value)
    if found is None:
        if len(_AUTHORITIES) >= _AUTHORITIES_MAX:
            _AUTHORITIES.clear()
        found = _AUTHORITIES[value] = mitmproxy_url.parse_authority(value, check=False)
    return found


def _host_header(req: http.Request) -> str | None:
    if req.is_http2 or req.is_http3:
        return req.host_header
    # As headers.get("Host"), from the raw fields (headers.get decodes every header name).
    values = [value for name, value in req.headers.fields if len(name) == 4 and name.lower() == b"host"]
    if not values:
        return None
    return ", ".join(v.decode("utf-8", "surrogateescape") for v in values)


def pretty_host_and_url(req: http.Request) -> tuple[str, str]:
    """``req.pretty_host`` and ``req.pretty_url``, with one cached parse of the Host header.

    Each property parses and validates it again, together half of the record's cost. Same logic as
    mitmproxy's properties; a test holds the two to the same results.
    """
    if req.first_line_format == "authority":
        return req.pretty_host, req.pretty_url
    host_header = _host_header(req)
    if not host_header:
        return req.host, req.url
    host, port = _parse_authority(host_header)
    port = port or mitmproxy_url.default_port(req.scheme) or 443
    return host, mitmproxy_url.unparse(req.scheme, host, port, req.path)


def _sni_from_client_bytes(data: bytes) -> str | None:
    try:
        hello = parse_client_hello(data)
    except ValueError:
        return None
    return hello.sni if hello else None


STREAM_THRESHOLD = 32 * 1024 * 1024
MAX_BODY = 1024 * 1024


class Capture:
    """Turns mitmproxy's hooks into records for every flow and connection; nothing is silently missing."""

    def __init__(self, submit: Submit):
        self.submit = submit
        # Copies of the options, refreshed in configure: ctx.options deep-copies a value on every read.
        self.stream_threshold = STREAM_THRESHOLD
        self.max_body = MAX_BODY

    def load(self, loader: Any) -> None:
        loader.add_option(
            "teletap_stream_threshold", int, STREAM_THRESHOLD,
            "Bodies larger than this many bytes (by Content-Length) are streamed through: hashed and counted, "
            "with only the first teletap_max_body bytes kept, instead of being buffered in memory.",
        )
        loader.add_option("teletap_max_body", int, MAX_BODY,
                          "Store at most this many bytes of each request body (the rest is hashed; "
                          "request_body_truncated says so).")

    def configure(self, updated: set[str]) -> None:
        if "teletap_stream_threshold" in updated or "teletap_max_body" in updated:
            self.stream_threshold = ctx.options.teletap_stream_threshold
            self.max_body = ctx.options.teletap_max_body

    # -- HTTP -----------------------------------------------------------------------------------------
    @guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if "teletap_sinkholed" in flow.metadata:
            return  # answered locally: streaming would send the body upstream before the sinkhole answers
        length = _content_length(flow.request)
        if length is not None and length > self.stream_threshold:
            tap = BodyTap(self.max_body)
            flow.request.stream = tap
            flow.metadata["teletap_request_tap"] = tap

    @guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        length = _content_length(flow.response)
        if length is not None and length > self.stream_threshold:
            tap = BodyTap(self.max_body)
            flow.response.stream = tap
            flow.metadata["teletap_response_tap"] = tap

    @guarded
    def response(self, flow: http.HTTPFlow) -> None:
        self.submit(self.http_record(flow))

    @guarded
    def error(self, flow: http.HTTPFlow) -> None:
        self.submit(self.http_record(flow))

    @staticmethod
    def http_record(flow: http.HTTPFlow) -> HttpFlowRecord:
        req, resp = flow.request, flow.response
        client_address, client_port = _addr(flow.client_conn.peername)
        server_address, server_port = _addr(flow.server_conn.peername)
        if server_address is None and flow.server_conn.via is not None and flow.server_conn.timestamp_start:
            # upstream mode: the request went to the next proxy, not to the server itself
            server_address, server_port = _addr(flow.server_conn.via[1])  # via is (scheme, address)
        path, _, query = req.path.partition("?")
        host, pretty_url = pretty_host_and_url(req)
        sni = flow.client_conn.sni
        if sni and host.replace(".", "").replace(":", "").isdigit():
            host = sni  # transparent mode without a Host header: the SNI names the destination
        if resp is not None and resp.timestamp_end is not None:
            ended: float | None = resp.timestamp_end
        elif flow.error is not None:
            ended = flow.error.timestamp
        else:
            ended = None
        return HttpFlowRecord(
            id=flow.id, request_time=req.timestamp_start, response_time=ended,
            client_address=client_address, client_port=client_port,
            server_address=server_address, server_port=server_port,
            scheme=req.scheme, host=host, port=req.port, method=req.method, path=path, query=query,
            url=pretty_url, http_version=req.http_version,
            status=resp.status_code if resp is not None else None,
            request_headers=list(req.headers.items(multi=True)),
            response_headers=list(resp.headers.items(multi=True)) if resp is not None else None,
            request_body=_body(req, flow.metadata.get("teletap_request_tap")) or Body(None, 0),
            response_body=_body(resp, flow.metadata.get("teletap_response_tap")),
            error=flow.error.msg if flow.error else None,
            sinkhole_rule=flow.metadata.get("teletap_sinkholed"),
            tls_version=flow.client_conn.tls_version, sni=sni,
        )

    # -- TLS that could not be intercepted ------------------------------------------------------------
    @guarded
    def tls_failed_client(self, data: tls.TlsData) -> None:
        client = data.conn
        server = data.context.server
        self.submit(self._tls_failure("tls-failed-client", data, client, server, client.sni,
                                      client.error or "the client refused the proxy's certificate"))

    @guarded
    def tls_failed_server(self, data: tls.TlsData) -> None:
        client = data.context.client
        server = data.conn
        self.submit(self._tls_failure("tls-failed-server", data, client, server, server.sni or client.sni,
                                      server.error or "TLS handshake with the server failed"))

    @staticmethod
    def _tls_failure(kind: str, data: tls.TlsData, client: connection.Client, server: connection.Server,
                     sni: str | None, reason: str) -> ConnectionRecord:
        client_address, client_port = _addr(client.peername)
        server_address, server_port = _addr(server.peername or server.address)
        return ConnectionRecord(
            id=data.conn.id, kind=kind, started=client.timestamp_start or time.time(), ended=time.time(),
            client_address=client_address, client_port=client_port, server_address=server_address,
            server_port=server_port, sni=sni,
            alpn=[a.decode("ascii", "replace") for a in (client.alpn_offers or [])],
            tls_version=data.conn.tls_version, observable=False, reason=reason,
        )

    # -- WebSocket ------------------------------------------------------------------------------------
    @guarded
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        self.submit(WebSocketMessageRecord(
            flow_id=flow.id, time=message.timestamp, from_client=message.from_client,
            is_text=message.is_text, size=len(message.content), content=message.content,
        ))

    # -- TCP / UDP (including hosts passed through without interception) ------------------------------
    def _count_message(self, flow: tcp.TCPFlow | udp.UDPFlow) -> None:
        message = flow.messages[-1]
        meta = flow.metadata
        if "teletap_first_bytes" not in meta and message.from_client:
            meta["teletap_first_bytes"] = message.content[:16384]
        key = "teletap_bytes_client" if message.from_client else "teletap_bytes_server"
        meta[key] = meta.get(key, 0) + len(message.content)
        # mitmproxy keeps every message of a TCP flow; a long passthrough connection would grow without
        # bound. teletap records byte counts, not content, so it drops the messages it has counted.
        flow.messages.clear()

    @guarded
    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        self._count_message(flow)

    @guarded
    def udp_message(self, flow: udp.UDPFlow) -> None:
        self._count_message(flow)

    @guarded
    def tcp_end(self, flow: tcp.TCPFlow) -> None:
        self.submit(self._stream_record(flow, "tcp"))

    @guarded
    def tcp_error(self, flow: tcp.TCPFlow) -> None:
        self.submit(self._stream_record(flow, "tcp"))

    @guarded
    def udp_end(self, flow: udp.UDPFlow) -> None:
        self.submit(self._stream_record(flow, "udp"))

    @guarded
    def udp_error(self, flow: udp.UDPFlow) -> None:
        self.submit(self._stream_record(flow, "udp"))

    @staticmethod
    def _stream_record(flow: tcp.TCPFlow | udp.UDPFlow, transport: str) -> ConnectionRecord:
        meta = flow.metadata
        first = meta.get("teletap_first_bytes", b"")
        parsed = _sni_from_client_bytes(first) if transport == "tcp" and first else None
        sni = parsed or flow.client_conn.sni  # the ClientHello that passed through is the best witness
        looks_like_tls = transport == "tcp" and first[:1] == b"\x16"
        client_address, client_port = _addr(flow.client_conn.peername)
        server_address, server_port = _addr(flow.server_conn.peername or flow.server_conn.address)
        if looks_like_tls:
            kind, observable = "passthrough", False
            reason = "TLS passed through without interception (ignore_hosts or a learned pinned host)"
        else:
            kind, observable, reason = transport, True, None
        if flow.error is not None:
            reason = f"{reason}; {flow.error.msg}" if reason else flow.error.msg
        return ConnectionRecord(
            id=flow.id, kind=kind, started=flow.client_conn.timestamp_start or flow.timestamp_created,
            ended=time.time(), client_address=client_address, client_port=client_port,
            server_address=server_address, server_port=server_port, sni=sni, observable=observable,
            reason=reason, bytes_from_client=meta.get("teletap_bytes_client", 0),
            bytes_from_server=meta.get("teletap_bytes_server", 0),
        )

    # -- DNS (mitmproxy's dns mode on a gateway) --------------------------------------------------------
    @guarded
    def dns_response(self, flow: dns.DNSFlow) -> None:
        self.submit(self._dns_record(flow))

    @guarded
    def dns_error(self, flow: dns.DNSFlow) -> None:
        self.submit(self._dns_record(flow))

    @staticmethod
    def _dns_record(flow: dns.DNSFlow) -> DnsRecord:
        question = flow.request.questions[0] if flow.request.questions else None
        answers: list[str] = []
        code = None
        if flow.response is not None:
            answers = [f"{a.to_json()['type']} {a}" for a in flow.response.answers]
            code = flow.response.to_json().get("response_code")
        return DnsRecord(
            id=flow.id, time=flow.request.timestamp or flow.timestamp_created,
            client_address=_addr(flow.client_conn.peername)[0],
            question=question.name if question else None,
            question_type=question.to_json()["type"] if question else None,
            answers=answers, response_code=code, error=flow.error.msg if flow.error else None,
        )
