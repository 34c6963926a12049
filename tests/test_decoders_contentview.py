"""The mitmweb content view "teletap decoded"."""

from __future__ import annotations

import gzip
import json

import pytest
from mitmproxy import contentviews, http
from mitmproxy.test import tflow, tutils

from teletap import contentview
from tests.bond_encoder import Prop, encode, record


def bond_flow(body: bytes, headers: list[tuple[bytes, bytes]]) -> http.HTTPFlow:
    req = tutils.treq(method=b"POST", scheme=b"https", host="mobile.events.data.microsoft.com", port=443,
                      path=b"/OneCollector/1.0/", headers=http.Headers(headers), content=b"")
    req.raw_content = body
    return tflow.tflow(req=req)


@pytest.fixture
def view():
    v = contentview.register()
    yield v
    contentview.unregister()


def render(view, f: http.HTTPFlow, message: http.Message) -> tuple[str, list[list[tuple[str, str]]]]:
    desc, lines = view(message.raw_content or b"", content_type=message.headers.get("content-type"),
                       flow=f, http_message=message)
    return desc, list(lines)


def test_register_and_unregister() -> None:
    v = contentview.register()
    try:
        assert contentviews.get("teletap decoded") is v
        assert contentview.register() is v  # idempotent
    finally:
        contentview.unregister()
    assert contentviews.get("teletap decoded") is None
    contentview.unregister()  # harmless when not registered


def test_bond_gzip_labelled_deflate_through_mitmproxy_pipeline(view) -> None:
    rec = encode(record(name="Office.View.Test", ikey="o:tenant",
                        data={"Mail": Prop("String", "someone@example.invalid", pii=["SmtpAddress"])}))
    f = bond_flow(gzip.compress(rec * 2), [(b"content-type", b"application/bond-compact-binary"),
                                           (b"content-encoding", b"deflate")])
    # mitmproxy itself cannot decode gzip labelled deflate; the view reads the raw body.
    desc, lines, _ = contentviews.get_message_content_view("teletap decoded", f.request, f)
    text = "\n".join("".join(t for _, t in line) for line in lines)
    assert "1ds-bond: 2 events" in desc
    assert "#0 1ds-bond Office.View.Test" in text and "#1 1ds-bond" in text
    assert "data.Mail = SmtpAddress" in text
    assert "gzip data labelled deflate" in text
    assert "ikey: o:tenant" in text


def test_priority_claims_only_telemetry(view) -> None:
    f = bond_flow(b"", [(b"content-type", b"application/bond-compact-binary")])
    assert view.render_priority(b"", content_type="application/bond-compact-binary") == 2
    assert view.render_priority(b"", content_type="text/plain", flow=f, http_message=f.request) == 2
    plain = tflow.tflow(req=tutils.treq(path=b"/index.html"))
    assert view.render_priority(b"{}", content_type="application/json", flow=plain, http_message=plain.request) == 0


def test_response_config_view(view) -> None:
    req = tutils.treq(method=b"GET", scheme=b"https", host="ecs.office.com", port=443,
                      path=b"/config/v1/Client/1.0?agents=A")
    resp = tutils.tresp(content=json.dumps({"A": {"x": 1}}).encode(),
                        headers=http.Headers([(b"content-type", b"application/json")]))
    f = tflow.tflow(req=req, resp=resp)
    desc, lines = render(view, f, f.response)
    assert "ecs: 1 event" in desc
    assert any("Client/A" in t for line in lines for _, t in line)


def test_without_flow_uses_content_type(view) -> None:
    body = b'{"name":"E","iKey":"o:t","ver":"4.0"}'
    desc, lines = view(body, content_type="application/x-json-stream")
    assert "1ds-json: 1 event" in desc
    desc, lines = view(b"\x00garbage", content_type="application/bond-compact-binary")
    out = list(lines)
    assert "1ds-bond" in desc and any(style == "error" for line in out for style, _ in line)


def test_aria_and_appinsights_flows(view) -> None:
    from tests.test_decoders_formats import ARIA_URL, aria_body, envelope

    req = tutils.treq(method=b"POST", scheme=b"https", host="browser.pipe.aria.microsoft.com", port=443,
                      path=ARIA_URL.split("microsoft.com", 1)[1].encode(), content=aria_body())
    f = tflow.tflow(req=req)
    assert view.render_priority(aria_body(), content_type=None, flow=f, http_message=f.request) == 2
    desc, lines = render(view, f, f.request)
    text = "\n".join("".join(t for _, t in line) for line in lines)
    assert "aria" in desc and "office_word_fileopen" in text and "PIIExtensions.UserEmail = SmtpAddress" in text

    body = json.dumps([envelope(0)]).encode()
    req = tutils.treq(method=b"POST", scheme=b"https", host="dc.services.visualstudio.com", port=443,
                      path=b"/v2/track", content=body,
                      headers=http.Headers([(b"content-type", b"application/json")]))
    f = tflow.tflow(req=req)
    assert view.render_priority(body, content_type="application/json", flow=f, http_message=f.request) == 2
    desc, lines = render(view, f, f.request)
    assert "appinsights: 1 event" in desc
