"""The capture addon, driven by mitmproxy's own test helpers (tflow, taddons)."""

from __future__ import annotations

import contextlib
import hashlib
import ssl

from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import http, tls
from mitmproxy.test import taddons, tflow

from teletap.capture import Capture, _content_length, pretty_host_and_url
from teletap.records import CaptureFailure, ConnectionRecord, DnsRecord, HttpFlowRecord, WebSocketMessageRecord


def make() -> tuple[Capture, list]:
    records: list = []
    return Capture(records.append), records


def test_response_becomes_a_flow_record():
    capture, records = make()
    with taddons.context(capture):
        f = tflow.tflow(resp=True)
        f.request.content = b"payload"
        f.request.headers["content-type"] = "text/plain"
        f.request.path = "/collect/v1?client=abc&n=2"
        capture.response(f)
    (r,) = records
    assert isinstance(r, HttpFlowRecord)
    assert r.id == f.id and r.method == "GET" and r.path == "/collect/v1" and r.query == "client=abc&n=2"
    assert r.host == "address" and r.port == 22 and r.status == 200
    assert r.request_body.raw == b"payload" and r.request_body.size_wire == 7 and not r.request_body.streamed
    assert ("content-type", "text/plain") in r.request_headers
    assert r.response_body is not None and r.response_body.raw == b"message"
    assert r.client_address == "127.0.0.1" and r.error is None and r.sinkhole_rule is None


def test_error_flow_keeps_the_error_and_no_response():
    capture, records = make()
    with taddons.context(capture):
        f = tflow.tflow(err=True)
        capture.error(f)
    (r,) = records
    assert r.error == "error" and r.status is None and r.response_body is None
    assert r.response_time == f.error.timestamp


def test_sinkholed_flow_is_flagged():
    capture, records = make()
    with taddons.context(capture):
        f = tflow.tflow(resp=True)
        f.metadata["teletap_sinkholed"] = "category:diagnostic-data"
        capture.response(f)
    assert records[0].sinkhole_rule == "category:diagnostic-data"


def test_large_bodies_are_streamed_through_a_hashing_tap():
    capture, records = make()
    with taddons.context(capture) as tctx:
        tctx.configure(capture, teletap_stream_threshold=100, teletap_max_body=10)
        f = tflow.tflow(resp=True)
        f.request.headers["content-length"] = "300"
        capture.requestheaders(f)
        assert callable(f.request.stream)
        chunks = [b"a" * 120, b"b" * 180, b""]
        assert [f.request.stream(c) for c in chunks] == chunks  # forwarded unchanged
        f.request.raw_content = None
        capture.response(f)
    body = records[0].request_body
    assert body.streamed and body.size_wire == 300 and body.raw == b"a" * 10
    assert body.sha256 == hashlib.sha256(b"a" * 120 + b"b" * 180).hexdigest()


def test_sinkholed_requests_are_never_streamed_upstream():
    capture, _ = make()
    with taddons.context(capture) as tctx:
        tctx.configure(capture, teletap_stream_threshold=100)
        f = tflow.tflow(resp=True)
        f.request.headers["content-length"] = "300"
        f.metadata["teletap_sinkholed"] = "all"  # the sinkhole decided in its own requestheaders hook
        capture.requestheaders(f)
        assert not f.request.stream


def test_small_bodies_are_not_streamed():
    capture, _ = make()
    with taddons.context(capture):
        f = tflow.tflow(resp=True)
        f.request.headers["content-length"] = "5"
        capture.requestheaders(f)
        assert not f.request.stream


def test_tls_refused_by_client_is_a_not_observable_connection():
    capture, records = make()
    with taddons.context(capture):
        client = tflow.tclient_conn()
        client.sni = "pinned.example.invalid"
        client.error = "The client does not trust the proxy's certificate for pinned.example.invalid"
        capture.tls_failed_client(tls.TlsData(conn=client, context=_context(client)))
    (r,) = records
    assert isinstance(r, ConnectionRecord)
    assert r.kind == "tls-failed-client" and r.sni == "pinned.example.invalid" and not r.observable
    assert "does not trust" in r.reason and r.client_address == "127.0.0.1"


def _context(client):
    from mitmproxy.proxy.context import Context

    return Context(client, taddons.context().options)


def test_tls_failure_toward_server():
    capture, records = make()
    with taddons.context(capture) as tctx:
        client, server = tflow.tclient_conn(), tflow.tserver_conn()
        server.sni = "bad-cert.example.invalid"
        server.error = "Certificate verify failed: self-signed certificate"
        from mitmproxy.proxy.context import Context

        context = Context(client, tctx.options)
        context.server = server
        capture.tls_failed_server(tls.TlsData(conn=server, context=context))
    (r,) = records
    assert r.kind == "tls-failed-server" and r.sni == "bad-cert.example.invalid"
    assert "self-signed" in r.reason and r.server_address == "192.168.0.1"


def test_websocket_messages():
    capture, records = make()
    with taddons.context(capture):
        f = tflow.twebsocketflow()
        capture.websocket_message(f)
    (r,) = records
    last = f.websocket.messages[-1]
    assert isinstance(r, WebSocketMessageRecord)
    assert r.flow_id == f.id and r.content == last.content and r.from_client == last.from_client


def test_tcp_passthrough_counts_bytes_finds_sni_and_keeps_no_content():
    from mitmproxy import tcp

    capture, records = make()
    with taddons.context(capture):
        f = tflow.ttcpflow()
        f.messages = []
        hello = client_hello("example.invalid")
        for from_client, content in [(True, hello), (False, b"x" * 500), (True, b"y" * 7)]:
            f.messages.append(tcp.TCPMessage(from_client, content))
            capture.tcp_message(f)
        assert f.messages == []  # bounded memory on long connections
        capture.tcp_end(f)
    (r,) = records
    assert r.kind == "passthrough" and r.sni == "example.invalid" and not r.observable
    assert r.bytes_from_client == len(hello) + 7 and r.bytes_from_server == 500


def test_plain_tcp_is_observable():
    from mitmproxy import tcp

    capture, records = make()
    with taddons.context(capture):
        f = tflow.ttcpflow()
        f.messages = []
        f.messages.append(tcp.TCPMessage(True, b"HELO mail.example.invalid\r\n"))
        capture.tcp_message(f)
        capture.tcp_end(f)
    assert records[0].kind == "tcp" and records[0].observable and records[0].bytes_from_client == 27


def test_dns_query_and_answer():
    capture, records = make()
    with taddons.context(capture):
        f = tflow.tdnsflow(resp=True)
        capture.dns_response(f)
    (r,) = records
    assert isinstance(r, DnsRecord)
    assert r.question == "dns.google" and r.question_type == "A" and r.answers and r.response_code == "NOERROR"


def test_a_record_that_cannot_be_built_is_reported_as_a_failure(caplog, monkeypatch):
    capture, records = make()
    monkeypatch.setattr(Capture, "http_record", staticmethod(lambda flow: 1 / 0))
    with taddons.context(capture):
        capture.response(tflow.tflow(resp=True))  # must not raise
    (failure,) = records
    assert isinstance(failure, CaptureFailure)
    assert failure.hook == "response" and "ZeroDivisionError" in failure.error
    assert "this item is not recorded" in caplog.text


def test_a_failing_sink_never_reaches_mitmproxy(caplog):
    def explode(record):
        raise RuntimeError("disk on fire")

    capture = Capture(explode)
    with taddons.context(capture):
        capture.response(tflow.tflow(resp=True))  # must not raise
    assert "response hook failed" in caplog.text


def client_hello(sni: str) -> bytes:
    """A real ClientHello, produced by Python's TLS stack into memory (no socket involved)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls_client.do_handshake()
    return outgoing.read()


HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1:8080", "a.example.invalid", "A.Example.Invalid:443", "[::1]:8443", "[::1]",
                     "xn--bcher-kva.example.invalid", "bücher.example.invalid", "bad host", ":80", "a:99999",
                     "a.example.invalid:", "10.0.0.1:80", ""]),
    st.text(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(hosts=st.lists(HOSTS, max_size=2), scheme=st.sampled_from(["http", "https"]),
       port=st.sampled_from([80, 443, 8080]), version=st.sampled_from(["HTTP/1.1", "HTTP/2.0"]),
       authority=st.sampled_from(["", "b.example.invalid:444"]), name=st.sampled_from([b"Host", b"host", b"HOST"]))
def test_pretty_host_and_url_are_mitmproxys_properties(hosts, scheme, port, version, authority, name):
    """One (cached) parse of the Host header gives what Request.pretty_host and Request.pretty_url give."""
    req = http.Request("10.0.0.9", port, b"POST", scheme.encode(), authority.encode(), b"/p?q=1", version.encode(),
                       http.Headers([(b"Accept", b"*/*")] + [(name, h.encode("utf-8", "surrogateescape"))
                                                              for h in hosts]),
                       b"", None, 0.0, 0.0)
    expected = (req.pretty_host, req.pretty_url)
    assert pretty_host_and_url(req) == expected
    assert pretty_host_and_url(req) == expected  # again, from the cache


def test_pretty_host_and_url_of_a_connect_request():
    req = http.Request("a.example.invalid", 443, b"CONNECT", b"", b"a.example.invalid:443", b"", b"HTTP/1.1",
                       http.Headers([(b"Host", b"a.example.invalid:443")]), b"", None, 0.0, 0.0)
    assert req.first_line_format == "authority"
    assert pretty_host_and_url(req) == (req.pretty_host, req.pretty_url) == ("a.example.invalid",
                                                                            "a.example.invalid:443")


@given(st.lists(st.tuples(st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Content-Type",
                                          b"X-Content-Length"]),
                          st.sampled_from([b"12", b" 12 ", b"", b"-1", b"1e3", b"0", b"99999999999"])), max_size=4))
def test_content_length_reads_the_first_header_like_headers_get(fields):
    message = http.Response.make(200, b"")
    message.headers = http.Headers(fields)
    value = message.headers.get("content-length")
    expected = int(value) if value and value.strip().isdigit() else None
    assert _content_length(message) == expected


def test_the_host_cache_stays_bounded_under_endless_names():
    from teletap import capture as module

    for i in range(module._AUTHORITIES_MAX + 10):
        req = http.Request.make("GET", "http://a.example.invalid/")
        req.headers["Host"] = f"h{i}.example.invalid"
        assert pretty_host_and_url(req)[0] == f"h{i}.example.invalid"
    assert 0 < len(module._AUTHORITIES) <= module._AUTHORITIES_MAX
