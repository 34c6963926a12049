"""FindingsEngine behaviour: severity, redaction, hashing, dedupe, vendor annotations, blanking, limits."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from types import SimpleNamespace

import pytest

from teletap.findings import BASE_SEVERITY, Finding, FindingsEngine, Identifier, blank_body, resolve_path

KEY = b"k" * 32
URL = "https://collector.example.invalid/OneCollector/1.0/"


def scan(engine: FindingsEngine, **kw) -> list[Finding]:
    args = {"url": URL, "request_headers": [], "body": None, "content_type": None, "events": [], "data_flow": None}
    args.update(kw)
    return engine.scan(**args)


def ev(position: int, data, pii=None) -> SimpleNamespace:
    return SimpleNamespace(position=position, data=data, pii=pii or [])


@pytest.fixture
def engine() -> FindingsEngine:
    return FindingsEngine(key=KEY, identifiers=[Identifier("canary", "TT-CANARY-Q7Z"),
                                                Identifier("email", "jane.doe@example.invalid")],
                          org_hostnames=["corp.example.invalid"])


# -- severity -----------------------------------------------------------------------------------------
def test_third_party_destination_makes_every_finding_high(engine):
    body = b'{"ip":"10.1.2.3","email":"kim@example.invalid","path":"C:\\\\Users\\\\kim\\\\x"}'
    first = scan(engine, body=body, data_flow="first-party")
    third = scan(engine, body=body, data_flow="third-party")
    assert {f.kind: f.severity for f in first} == {"ipv4-private": "low", "email": "medium", "user-path": "medium"}
    assert {f.kind: f.severity for f in third} == {"ipv4-private": "high", "email": "high", "user-path": "high"}


def test_canary_is_high_anywhere_and_base_severity_is_documented(engine):
    found = scan(engine, url=URL + "?x=TT-CANARY-Q7Z", data_flow="first-party")
    assert [(f.kind, f.severity, f.location) for f in found] == [("canary", "high", "query:x")]
    assert BASE_SEVERITY["ipv4-private"] == "low" and BASE_SEVERITY["iban"] == "high"


def test_vendor_annotations_become_findings_with_the_vendors_kind(engine):
    data = {"data": {"baseData": {"properties": {"Data.Mail": "kim@example.invalid", "Subject": "Salary talk"}},
                     "Doc": {"Body": "private notes", "list": ["a", {"x": "10.0.0.7"}]}}}
    pii = [{"path": "data.baseData.properties.Data.Mail", "kind": 9},
           {"path": "Subject", "kind": "MailSubject"},  # relative to properties
           {"path": "/data/Doc/Body", "kind": 32},
           {"path": ["data", "Doc", "list", 1, "x"], "kind": "IPV4Address"},
           {"path": "data.gone", "kind": 6},
           {"path": "data.Doc.Body", "customer_content": True},
           {"path": "data.Doc.Body", "kind": 0},  # NotSet: says nothing
           "garbage", {"kind": None}]
    found = scan(engine, events=[ev(4, data, pii)])
    vendor = sorted((f.kind, f.location, f.preview) for f in found if f.detector == "vendor-annotation")
    assert vendor == [
        ("customer-content", "event:data.Doc.Body", "p***s"),
        ("vendor-pii:IPV4Address", "event:data.Doc.list[1].x", "10.*.*.7"),
        ("vendor-pii:MailSubject", "event:data.baseData.properties.Subject", "S***k"),
        ("vendor-pii:PhoneNumber", "event:data.gone", "(value not found)"),
        ("vendor-pii:SmtpAddress", "event:data.baseData.properties.Data.Mail", "k***@e***.invalid"),
    ]
    assert all(f.event_position == 4 and f.confidence == 1.0 for f in found if f.detector == "vendor-annotation")
    # The pattern detector still reports the same field with its own kind.
    assert ("email", "event:data.baseData.properties.Data.Mail") in {(f.kind, f.location) for f in found}
    by_kind = {f.kind: f.severity for f in found}
    assert by_kind["customer-content"] == "high" and by_kind["vendor-pii:SmtpAddress"] == "medium"


def test_value_in_body_and_decoded_event_is_reported_once_at_the_event_path(engine):
    # A 1DS body carries the event's strings verbatim; the decoded event says which field they are.
    body = b'\x0b\x00kim@example.invalid\x0breport.docx\x01'
    events = [ev(0, {"data": {"Data.Mail": "kim@example.invalid", "Data.File": "report.docx"}})]
    found = scan(engine, body=body, events=events)
    assert sorted((f.kind, f.location) for f in found) == [("document", "event:data.Data.File"),
                                                           ("email", "event:data.Data.Mail")]
    assert blank_body(body, found) == b"\x0b\x00*******************\x0b***********\x01"


def test_resolve_path_forms():
    data = {"a": {"b.c": [10, {"d": "x"}]}}
    assert resolve_path(data, "a.b.c[1].d") == (True, "x", "a.b.c[1].d")
    assert resolve_path(data, "/a/b.c/0") == (True, 10, "a.b.c[0]")
    assert resolve_path(data, ["a", "b.c", 5]) == (False, None, None)
    assert resolve_path(data, 42) == (False, None, None)


# -- redaction and hashing ----------------------------------------------------------------------------
def test_no_clear_value_anywhere_unless_store_clear(engine):
    body = b'{"to":"kim.berg@example.invalid","iban":"NL91ABNA0417164300"}'
    found = scan(engine, body=body)
    assert found
    for f in found:
        assert f.value is None
        text = json.dumps(dataclasses.asdict(f))
        assert "kim.berg" not in text and "0417164300" not in text
    clear = scan(FindingsEngine(key=KEY, store_clear=True), body=body)
    assert {f.value for f in clear} == {"kim.berg@example.invalid", "NL91ABNA0417164300"}
    previews = {f.kind: f.preview for f in found}
    assert previews == {"email": "k***@e***.invalid", "iban": "NL***00"}


def test_value_hash_is_hmac_of_normalised_value_and_groups_across_locations(engine):
    found = scan(engine, url=URL + "?u=Kim%40Example.invalid", request_headers=[("X-User", "kim@example.INVALID")],
                 body=b"mail KIM@example.invalid")
    expected = hmac.new(KEY, b"kim@example.invalid", hashlib.sha256).hexdigest()
    assert {(f.location, f.value_hash) for f in found} == {("query:u", expected), ("header:x-user", expected),
                                                          ("body", expected)}
    other = scan(FindingsEngine(key=b"another key"), body=b"mail KIM@example.invalid")
    assert other[0].value_hash != expected


def test_same_value_twice_at_one_location_is_one_finding_and_both_spans_blank(engine):
    body = b'{"a":"kim@example.invalid","b":"x","c":"kim@example.invalid"}'
    found = scan(engine, body=body)
    assert len(found) == 1
    f = found[0]
    assert f.span == (6, 25) and f.extra_spans == ((40, 59),)
    assert blank_body(body, found) == b'{"a":"*******************","b":"x","c":"*******************"}'


def test_blank_body_keeps_length_and_ignores_findings_without_spans(engine):
    body = ('{"p":"C:\\\\Users\\\\kimberg\\\\Desktop","h":"' + hashlib.sha256(b"jane.doe@example.invalid").hexdigest()
            + '","c":"' + base64.b64encode(b"xTT-CANARY-Q7Zy").decode() + '"}').encode()
    ev_findings = scan(engine, events=[ev(0, {"ip": "203.0.113.9"})])
    found = scan(engine, body=body) + ev_findings
    blanked = blank_body(body, found)
    assert len(blanked) == len(body)
    assert b"kimberg" not in blanked and hashlib.sha256(b"jane.doe@example.invalid").hexdigest().encode() not in blanked
    assert b"Users" in blanked  # only the matched value goes, the structure stays
    assert blank_body(b"", found) == b""
    assert blank_body(body, []) == body
    # Hostile spans are clamped, not trusted.
    bad = dataclasses.replace(found[0], span=(-5, 10**9), extra_spans=((3, 1), ("x", None)))  # type: ignore[arg-type]
    assert blank_body(b"abc", [bad]) == b"***"


# -- sources: headers, URL, JWT ------------------------------------------------------------------------
def test_headers_scanned_and_non_personal_headers_skipped(engine):
    headers = [("Content-Type", "application/json; kim@example.invalid"),
               ("Cookie", "MUID=1; mail=kim@example.invalid"), ("Host", "fs1.corp.example.invalid"),
               ("Sec-CH-UA", "kim@example.invalid"),
               ("User-Agent", "Mozilla/5.0 Chrome/120.0.0.0"), ("X-Host", "fs1.corp.example.invalid")]
    found = scan(engine, request_headers=headers)
    assert sorted((f.kind, f.location) for f in found) == [("email", "header:cookie"), ("hostname", "header:x-host")]


def test_jwt_claims_in_authorization_header_are_decoded(engine):
    def b64(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"upn": "kim@tenant.example.invalid", "ipaddr": "198.51.100.4"}
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    found = scan(engine, request_headers=[("Authorization", f"Bearer {token}")], body=f"t={token}".encode())
    got = {(f.kind, f.detector, f.location) for f in found}
    assert ("upn", "regex:upn+jwt", "header:authorization") in got
    assert ("ipv4-public", "regex:ipv4+jwt", "header:authorization") in got
    body_upn = next(f for f in found if f.location == "body" and f.kind == "upn")
    assert body_upn.span == (2, 2 + len(token))  # the whole token is what must be blanked


def test_form_encoded_body_addresses_and_spans(engine):
    body = b"to=mailto%3Akim.berg%40example.invalid&cc=ada%40example.invalid&n=1"
    found = scan(engine, body=body, content_type="application/x-www-form-urlencoded")
    assert sorted((f.preview, body[f.span[0]:f.span[1]]) for f in found) == [
        ("a***@e***.invalid", b"ada%40example.invalid"), ("k***@e***.invalid", b"kim.berg%40example.invalid")]


def test_url_host_is_the_destination_not_a_finding(engine):
    found = scan(engine, url="https://203.0.113.50/contoso.sharepoint.com-ish/path?ip=198.51.100.7")
    assert [(f.kind, f.location) for f in found] == [("ipv4-public", "query:ip")]


def test_binary_content_types_only_get_known_identifier_matching(engine):
    body = b"\x89PNG....203.0.113.9....TT-CANARY-Q7Z...kim@example.invalid"
    found = scan(engine, body=body, content_type="image/png")
    assert [f.kind for f in found] == ["canary"]


def test_min_confidence_lets_callers_see_unclassified_guids():
    body = b'{"foo":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","deviceId":"4f2504e0-4f89-41d3-9a0c-0305e82c3301"}'
    default = scan(FindingsEngine(key=KEY), body=body)
    everything = scan(FindingsEngine(key=KEY, min_confidence=0.0), body=body)
    assert [(f.detector, f.confidence) for f in default] == [("context:guid-device", 0.9)]
    assert sorted(f.detector for f in everything) == ["context:guid-device", "regex:guid"]


# -- hostile input ------------------------------------------------------------------------------------
ADVERSARIAL = [
    b"a" * 1_000_000, b"1" * 1_000_000, b"1." * 500_000, b"a@" * 500_000, b"a." * 500_000, b"-1" * 500_000,
    b":" * 1_000_000, b"a:" * 500_000, b"S-1-5-21" * 100_000, b"C:\\Users\\" * 100_000, b".docx" * 200_000,
    b"1 " * 500_000, b"+1 " * 300_000, b"NL91 " * 200_000, b"eyJ" * 300_000, b"eyJa.eyJb." * 100_000,
    b"\"lat\":1.23," * 80_000, b"0a:" * 300_000, b"https://x.sharepoint.com/" * 40_000, b"\x00\xff" * 500_000,
    b"%40" * 300_000, b"x-" * 500_000, b"1-" * 500_000, b"ab12-" * 200_000,
]


@pytest.mark.parametrize("body", ADVERSARIAL, ids=lambda b: repr(b[:12]))
def test_adversarial_bodies_scan_in_bounded_time(engine, body):
    t0 = time.perf_counter()
    found = scan(engine, body=body, content_type="text/plain")
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, f"{elapsed:.2f}s"
    assert isinstance(found, list)


def test_max_scan_bytes_bounds_the_body():
    engine = FindingsEngine(key=KEY, max_scan_bytes=1000)
    found = scan(engine, body=b" " * 2000 + b"kim@example.invalid")
    assert found == []
    assert scan(engine, body=b" " * 900 + b"kim@example.invalid ")


def test_hostile_events_never_raise(engine):
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    node["mail"] = "kim@example.invalid"
    cyclic: list = []
    cyclic.append(cyclic)
    events = [ev(0, deep), ev(1, cyclic), SimpleNamespace(), {"position": 2, "data": {"x": b"\xff 10.0.0.1"}},
              ev(True, {1: "kim@example.invalid", None: float("nan"), "lat": "x", "lon": 1e308}),  # type: ignore[arg-type]
              ev(3, {"big": list(range(300_000))}), ev(4, "not a dict", pii="nope"), None, 42,
              ev(5, {"lat": float("inf"), "lon": 4.5}, pii=[{"path": "a." * 100, "kind": "X" * 1000}])]
    t0 = time.perf_counter()
    found = scan(engine, events=events, url=None, request_headers=[None, ("a",), (b"X-Bytes", b"10.0.0.1")],
                 body="not bytes", content_type=123, data_flow=object())
    assert time.perf_counter() - t0 < 10
    assert all(isinstance(f, Finding) for f in found)
    assert ("ipv4-private", "header:x-bytes") in {(f.kind, f.location) for f in found}
