"""Sinkhole addon: selectors, local answers per protocol, lazy connection strategy (tflow/taddons)."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow, tutils

from teletap.signatures import Matcher, SignatureSet
from teletap.sinkhole import Sinkhole, parse_selector

from . import bond_encoder as be

SIGS = """\
schema_version: 1
signatures:
  - id: test.collector
    name: Test collector
    vendor: Example Corp
    category: diagnostic-data
    data_flow: first-party
    match: {hosts: ["*.events.example.invalid"]}
    expect: {protocol: onecollector}
    documentation: {urls: ["https://docs.example.invalid/a"], checked: 2026-01-01}
    examples: {match: [a.events.example.invalid]}
  - id: test.insights
    name: Test insights
    vendor: Other Vendor
    category: analytics
    data_flow: third-party
    match: {hosts: [dc.example.invalid]}
    expect: {protocol: app-insights}
    documentation: {urls: ["https://docs.example.invalid/b"], checked: 2026-01-01}
    examples: {match: [dc.example.invalid]}
"""


@pytest.fixture
def matcher(tmp_path: Path) -> Matcher:
    f = tmp_path / "s.yaml"
    f.write_text(SIGS)
    return Matcher(SignatureSet.load([f]))


def flow(host: str, path: str = "/", method: str = "POST", body: bytes = b"",
         headers: dict[str, str] | None = None) -> http.HTTPFlow:
    f = tflow.tflow()
    f.request = tutils.treq(host=host, port=443, scheme=b"https", method=method.encode(), path=path.encode(),
                            headers=http.Headers([(k.encode(), v.encode()) for k, v in (headers or {}).items()]),
                            content=body)
    return f


def run(addon: Sinkhole, selectors: list[str], f: http.HTTPFlow) -> http.HTTPFlow:
    with taddons.context(addon) as tctx:
        tctx.configure(addon, teletap_sinkhole=selectors)
        addon.request(f)
    return f


def test_parse_selector_accepts_every_kind() -> None:
    assert parse_selector("all").kind == "all"
    assert parse_selector("undocumented").kind == "undocumented"
    assert parse_selector("category:diagnostic-data").value == "diagnostic-data"
    assert parse_selector("signature:ms.windows.cuet").value == "ms.windows.cuet"
    assert parse_selector("vendor:Microsoft").value == "Microsoft"


@pytest.mark.parametrize("bad, message", [
    ("everything", "expected one of: all, category:C, signature:ID, vendor:V, undocumented"),
    ("category:telemetry", "unknown category; expected one of: diagnostic-data"),
    ("vendor:", "expected a value after 'vendor:'"),
    ("signature:Bad Id", "expected a signature id"),
])
def test_invalid_selector_is_an_options_error(matcher: Matcher, bad: str, message: str) -> None:
    addon = Sinkhole(lambda: matcher)
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError, match=message):
        tctx.configure(addon, teletap_sinkhole=[bad])


def test_onecollector_json_stream_is_acknowledged_with_event_count(matcher: Matcher) -> None:
    lines = b'{"name":"A"}\n{"name":"B"}\n{"name":"C"}'
    f = run(Sinkhole(lambda: matcher), ["category:diagnostic-data"],
            flow("x.events.example.invalid", "/OneCollector/1.0/", body=gzip.compress(lines),
                 headers={"content-type": "application/x-json-stream", "content-encoding": "gzip"}))
    assert f.response is not None and f.response.status_code == 200
    assert json.loads(f.response.content) == {"acc": 3}
    assert f.metadata["teletap_sinkholed"] == "category:diagnostic-data"


def test_query_string_and_jwt_events_are_not_acknowledged_as_telemetry(matcher: Matcher) -> None:
    # The beacon form: collector parameters in the query, a bearer token in a header. Both decode to
    # events of their own, but the collector acknowledges only the two telemetry events.
    lines = b'{"name":"A"}\n{"name":"B"}'
    token = "eyJhbGciOiJub25lIn0.eyJ0aWQiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDEifQ."
    f = run(Sinkhole(lambda: matcher), ["category:diagnostic-data"],
            flow("x.events.example.invalid", "/OneCollector/1.0/?cors=true&content-type=application/x-json-stream"
                 "&client-id=NO_AUTH", body=lines,
                 headers={"content-type": "text/plain", "authorization": f"Bearer {token}"}))
    assert json.loads(f.response.content) == {"acc": 2}


def test_onecollector_bond_is_counted_by_the_decoders(matcher: Matcher) -> None:
    body = b"".join(be.encode(be.record(name=f"Test.Event{i}", ikey="o:00000000000000000000000000000000"))
                    for i in range(2))
    f = run(Sinkhole(lambda: matcher), ["signature:test.collector"],
            flow("x.events.example.invalid", "/OneCollector/1.0/", body=zlib.compress(body)[2:-4],
                 headers={"content-type": "application/bond-compact-binary", "content-encoding": "deflate"}))
    assert json.loads(f.response.content) == {"acc": 2}
    assert f.metadata["teletap_sinkholed"] == "signature:test.collector"


def test_undecodable_bond_falls_back_to_one(matcher: Matcher) -> None:
    f = run(Sinkhole(lambda: matcher), ["all"],
            flow("x.events.example.invalid", "/OneCollector/1.0/", body=b"\xff\xfe not bond",
                 headers={"content-type": "application/bond-compact-binary"}))
    assert json.loads(f.response.content) == {"acc": 1}


def test_application_insights_answer(matcher: Matcher) -> None:
    body = json.dumps([{"name": "a"}, {"name": "b"}]).encode()
    f = run(Sinkhole(lambda: matcher), ["vendor:other vendor"],
            flow("dc.example.invalid", "/v2/track", body=body, headers={"content-type": "application/json"}))
    assert json.loads(f.response.content) == {"itemsReceived": 2, "itemsAccepted": 2, "errors": []}
    assert f.metadata["teletap_sinkholed"] == "vendor:other vendor"


def test_other_requests_get_204(matcher: Matcher) -> None:
    f = run(Sinkhole(lambda: matcher), ["undocumented"], flow("unknown.example.invalid", "/x", method="GET"))
    assert f.response is not None and f.response.status_code == 204
    assert f.metadata["teletap_sinkholed"] == "undocumented"


def test_non_matching_request_is_left_alone(matcher: Matcher) -> None:
    f = run(Sinkhole(lambda: matcher), ["category:analytics", "undocumented"],
            flow("x.events.example.invalid", "/OneCollector/1.0/"))
    assert f.response is None
    assert "teletap_sinkholed" not in f.metadata


def test_first_matching_selector_is_recorded(matcher: Matcher) -> None:
    f = run(Sinkhole(lambda: matcher), ["vendor:Example Corp", "all"], flow("a.events.example.invalid"))
    assert f.metadata["teletap_sinkholed"] == "vendor:Example Corp"


def test_all_sets_lazy_connection_strategy_and_restores_it(matcher: Matcher) -> None:
    addon = Sinkhole(lambda: matcher)
    with taddons.context(addon, proxyserver.Proxyserver()) as tctx:
        assert tctx.options.connection_strategy == "eager"
        tctx.configure(addon, teletap_sinkhole=["all"])
        assert tctx.options.connection_strategy == "lazy"
        tctx.configure(addon, teletap_sinkhole=["undocumented"])
        assert tctx.options.connection_strategy == "eager"


def test_all_refuses_every_upstream_connection(matcher: Matcher) -> None:
    from mitmproxy.proxy import server_hooks
    from mitmproxy.test import tflow as tf

    addon = Sinkhole(lambda: matcher)
    with taddons.context(addon) as tctx:
        tctx.configure(addon, teletap_sinkhole=["category:analytics"])
        data = server_hooks.ServerConnectionHookData(server=tf.tserver_conn(), client=tf.tclient_conn())
        addon.server_connect(data)
        assert data.server.error is None  # selective sinkholing leaves other traffic alone
        tctx.configure(addon, teletap_sinkhole=["all"])
        addon.server_connect(data)
        assert data.server.error == "teletap sinkhole 'all': upstream connections are disabled (lab mode)"


def test_without_a_matcher_only_all_and_undocumented_apply() -> None:
    addon = Sinkhole(lambda: None)
    f = run(addon, ["category:diagnostic-data"], flow("a.events.example.invalid"))
    assert f.response is None
    f = run(Sinkhole(lambda: None), ["all"], flow("a.events.example.invalid", "/OneCollector/1.0/", body=b"{}\n",
                                                  headers={"content-type": "application/x-json-stream"}))
    assert json.loads(f.response.content) == {"acc": 1}


def test_shipped_set_sinkholes_a_real_collector_host() -> None:
    m = Matcher(SignatureSet.load())
    f = run(Sinkhole(lambda: m), ["signature:ms.m365.mobile-events"],
            flow("mobile.events.data.microsoft.com", "/OneCollector/1.0/", body=b'{"a":1}\n{"b":2}\n',
                 headers={"content-type": "application/x-json-stream"}))
    assert json.loads(f.response.content) == {"acc": 2}


def test_requestheaders_flags_the_flow_before_the_body_arrives(matcher: Matcher) -> None:
    addon = Sinkhole(lambda: matcher)
    with taddons.context(addon) as tctx:
        tctx.configure(addon, teletap_sinkhole=["category:diagnostic-data"])
        f = flow("a.events.example.invalid", "/OneCollector/1.0/")
        addon.requestheaders(f)
        assert f.metadata["teletap_sinkholed"] == "category:diagnostic-data"
        assert f.response is None  # answered in the request hook, once the body is there to count
        other = flow("dc.example.invalid", "/v2/track")
        addon.requestheaders(other)
        assert "teletap_sinkholed" not in other.metadata


def test_matcher_failure_still_sinkholes_with_all() -> None:
    class Broken:
        def match(self, *args: object) -> None:
            raise RuntimeError("boom")

    f = run(Sinkhole(lambda: Broken()), ["undocumented"], flow("a.events.example.invalid", "/x", method="GET"))
    assert f.response is not None and f.response.status_code == 204
    f = run(Sinkhole(lambda: Broken()), ["all"], flow("a.events.example.invalid", "/x", method="GET"))
    assert f.metadata["teletap_sinkholed"] == "all"


# -- end to end: a real `teletap run --sinkhole all` ---------------------------------------------------------

E2E_SIGS = """\
schema_version: 1
signatures:
  - id: test.e2e.collector
    name: Loopback stand-in for a OneCollector endpoint
    vendor: Example Corp
    category: diagnostic-data
    data_flow: first-party
    match: {hosts: [127.0.0.1], path_prefix: [/OneCollector/1.0]}
    expect: {protocol: onecollector}
    documentation: {urls: ["https://docs.example.invalid/collector"], checked: 2026-01-01}
    examples: {match: ["POST http://127.0.0.1/OneCollector/1.0/"]}
  - id: test.e2e.pinned
    name: Loopback stand-in for a pinned endpoint
    vendor: Example Corp
    category: diagnostic-data
    data_flow: first-party
    match: {hosts: [localhost]}
    expect: {tls_pinned: true}
    documentation: {urls: ["https://docs.example.invalid/pinned"], checked: 2026-01-01}
    examples: {match: [localhost]}
"""


@pytest.mark.e2e
def test_sinkhole_all_end_to_end(tmp_path: Path) -> None:
    import socket
    import ssl

    import httpx

    from .support import LOOPBACK, rows, running_teletap

    sigs = tmp_path / "e2e.yaml"
    sigs.write_text(E2E_SIGS)
    # A listener standing where the collector would be: it must never see a connection.
    upstream = socket.socket()
    upstream.bind((LOOPBACK, 0))
    upstream.listen(8)
    upstream.settimeout(0.5)
    port = upstream.getsockname()[1]
    events = [{"ver": "4.0", "name": "Office.Identity.SignOutEvent", "time": "2026-01-01T00:00:00Z",
               "iKey": "o:00000000000000000000000000000000", "data": {"k": 1}},
              {"ver": "4.0", "name": "Teletap.Invented.Event", "time": "2026-01-01T00:00:01Z",
               "iKey": "o:00000000000000000000000000000000", "data": {"k": 2}}]
    body = "\n".join(json.dumps(e) for e in events).encode()
    try:
        with running_teletap(tmp_path, "--sinkhole", "all", "--signatures", str(sigs)) as tt:
            with httpx.Client(proxy=tt.proxy, timeout=10) as client:
                r = client.post(f"http://{LOOPBACK}:{port}/OneCollector/1.0/?cors=true", content=body,
                                headers={"content-type": "application/x-json-stream"})
            # The same over TLS, from a client that trusts teletap's CA: answered without any upstream.
            with httpx.Client(proxy=tt.proxy, verify=ssl.create_default_context(cafile=str(tt.ca)),
                              timeout=10) as client:
                r_tls = client.post(f"https://localhost:{port}/OneCollector/1.0/", content=body,
                                    headers={"content-type": "application/x-json-stream"})
            # A client that pins its certificate: the handshake with teletap's certificate fails.
            with httpx.Client(proxy=tt.proxy, verify=True, timeout=10) as client, \
                    pytest.raises(httpx.ConnectError):
                client.get(f"https://localhost:{port}/pinned")
            assert tt.stop() == 0, tt.output()
        with pytest.raises(TimeoutError):
            upstream.accept()  # nothing was forwarded, not even a connection attempt
    finally:
        upstream.close()
    assert r.status_code == 200 and r.json() == {"acc": 2}
    assert r.headers["x-teletap-sinkhole"] == "1"
    assert r_tls.status_code == 200 and r_tls.json() == {"acc": 2}
    (tls_flow,) = rows(tt.db, "select * from flows where path like '/OneCollector/%' and scheme = 'https'")
    assert tls_flow["sni"] == "localhost" and tls_flow["sinkhole_rule"] == "all"
    (flow,) = rows(tt.db, "select * from flows where path like '/OneCollector/%' and scheme = 'http'")
    assert flow["answered_by_teletap"] == 1 and flow["sinkhole_rule"] == "all"
    assert flow["signature_id"] == "test.e2e.collector" and flow["category"] == "diagnostic-data"
    # Only the body's events (the decoders also record the query string as an event of its own).
    decoded = rows(tt.db, "select name, documented_level from events where flow_id = ? and format = '1ds-json' "
                   "order by position",
                   (flow["id"],))
    assert decoded == [{"name": "Office.Identity.SignOutEvent", "documented_level": "office-essential-service"},
                       {"name": "Teletap.Invented.Event", "documented_level": "undocumented"}]
    failed = rows(tt.db, "select * from connections where kind = 'tls-failed-client'")
    assert [(c["sni"], c["signature_id"], c["category"]) for c in failed] == [
        ("localhost", "test.e2e.pinned", "diagnostic-data")]
    (stored,) = rows(tt.db, "select signature_set_hash from sessions")
    assert stored["signature_set_hash"] == SignatureSet.load([sigs]).hash
    assert {r["id"] for r in rows(tt.db, "select id from signatures")} == {"test.e2e.collector", "test.e2e.pinned"}
