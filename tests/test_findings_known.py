"""Known identifiers and canaries: every encoding, in every location, with the right kind and severity."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest

from teletap.findings import FindingsEngine, Identifier, IdentifierFileError, load_identifiers
from teletap.findings.identifiers import base64_fragments

EMAIL = "Jane.Doe@Example.invalid"
CANARY = "tt-canary-9F3kq2"
TENANT = "8c3b2f1e-0d4a-4b5c-9e6f-7a8b9c0d1e2f"

CSV = f"""\ufeffkind,value
# planted by the lab admin
email,{EMAIL}
upn,jdoe@tenant.example.invalid
name,Jan Pietersen
device,LAPTOP-JD01

tenant,{TENANT}
canary,{CANARY}
"""


@pytest.fixture(scope="module")
def identifiers(tmp_path_factory) -> list[Identifier]:
    path = tmp_path_factory.mktemp("ids") / "identifiers.csv"
    path.write_text(CSV, encoding="utf-8")
    return load_identifiers(path)


@pytest.fixture(scope="module")
def engine(identifiers) -> FindingsEngine:
    return FindingsEngine(identifiers=identifiers, key=b"test-key")


def encodings(value: str) -> list[tuple[str, str]]:
    """(expected detector, encoded text) for every form the issue names."""
    b = value.encode()
    norm = value.strip().lower().encode()
    out = [
        ("known:plain", value),
        ("known:case-variant", value.lower()),
        ("known:case-variant", value.upper()),
        ("known:hex", b.hex()),
        ("known:hex-upper", b.hex().upper()),
    ]
    if quote(value, safe="") != value:  # a value without reserved characters has no URL-encoded form
        out.append(("known:urlencoded", quote(value, safe="")))
    for k, prefix in enumerate((b"", b"\x01", b"\x02\x03")):
        # The value at byte offset 0, 1 and 2 of a longer base64 stream.
        out.append(("known:base64", base64.b64encode(prefix + b + b"|trailing data").decode()))
        assert k == len(prefix)
    for name in ("md5", "sha1", "sha256"):
        digest = hashlib.new(name, b).hexdigest()
        out.append((f"known:{name}-lower", digest))
        out.append((f"known:{name}-upper", digest.upper()))
        if norm != b:
            out.append((f"known:{name}-lower-normalised", hashlib.new(name, norm).hexdigest()))
    return out


def _place(location: str, text: str) -> dict:
    """scan() arguments with `text` in one location, and the location the finding must name."""
    args = {"url": "https://collector.example.invalid/OneCollector/1.0/", "request_headers": [],
            "body": None, "content_type": None, "events": [], "data_flow": None}
    if location == "url":
        args["url"] = f"https://collector.example.invalid/v1/{text}/x"
    elif location == "query:id":
        args["url"] = f"https://collector.example.invalid/c?a=1&id={text}&b=2"
    elif location == "header:x-client-data":
        args["request_headers"] = [("Content-Type", "application/json"), ("X-Client-Data", text)]
    elif location == "body":
        args["body"] = b'{"name":"Office.Event","v":"' + text.encode() + b'","n":1}'
        args["content_type"] = "application/json"
    elif location == "event:data.Data.Value":
        args["events"] = [SimpleNamespace(position=7, data={"data": {"Data.Value": text}}, pii=[])]
    return args


LOCATIONS = ["url", "query:id", "header:x-client-data", "body", "event:data.Data.Value"]


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize(("detector", "text"), encodings(EMAIL), ids=lambda x: str(x)[:24])
def test_known_email_in_every_encoding_and_location(engine, location, detector, text):
    args = _place(location, text)
    found = engine.scan(**args)
    hits = [f for f in found if f.kind == "known-email" and f.location == location and f.detector == detector]
    assert hits, [(f.kind, f.detector, f.location) for f in found]
    f = hits[0]
    assert f.severity == "medium"
    assert f.value is None
    assert EMAIL.lower() not in f.preview.lower() and "doe" not in f.preview.lower()
    assert f.event_position == (7 if location.startswith("event:") else None)
    if location == "body":
        s, e = f.span
        assert args["body"][s:e].decode() in text  # the span lies inside the encoded form
        assert e - s >= 8


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize(("detector", "text"), encodings(CANARY), ids=lambda x: str(x)[:24])
def test_canary_in_every_encoding_is_high_severity(engine, location, detector, text):
    found = engine.scan(**_place(location, text))
    hits = [f for f in found if f.kind == "canary" and f.location == location and f.detector == detector]
    assert hits, [(f.kind, f.detector, f.location) for f in found]
    assert all(f.severity == "high" for f in hits)


def test_md5_of_lower_cased_email_in_a_1ds_like_batch(engine):
    digest = hashlib.md5(EMAIL.lower().encode()).hexdigest()
    events = [SimpleNamespace(position=i, data={"ver": "4.0", "name": "Office.Identity",
                                                "ext": {"user": {"localId": "m:" + digest if i == 2 else "m:x"}}},
                              pii=[]) for i in range(4)]
    found = engine.scan(url="https://self.events.data.microsoft.com/OneCollector/1.0/", request_headers=[],
                        body=None, content_type="application/x-json-stream", events=events, data_flow="first-party")
    hit = [f for f in found if f.kind == "known-email"]
    assert [(f.detector, f.location, f.event_position, f.severity) for f in hit] == [
        ("known:md5-lower-normalised", "event:ext.user.localId", 2, "medium")]


def test_base64_fragments_cover_the_three_alignments():
    value = b"jane.doe@example.invalid"
    frags = dict(base64_fragments(value))
    assert set(frags) == {0, 1, 2}
    for k in range(3):
        for prefix in (b"", b"a", b"ab", b"abc", b"abcd"):
            stream = base64.b64encode(prefix + value + b"zz").decode()
            if len(prefix) % 3 == k:
                assert frags[k] in stream


def test_other_identifier_kinds(engine):
    url = ("https://collector.example.invalid/c?who=Jan%20Pietersen&dev=laptop-jd01.corp.example.invalid"
           f"&t={TENANT.replace('-', '').upper()}&u=JDOE%40tenant.example.invalid")
    found = engine.scan(url=url, request_headers=[], body=None, content_type=None, events=[], data_flow=None)
    got = {(f.kind, f.location) for f in found}
    assert ("known-name", "query:who") in got
    assert ("known-device", "query:dev") in got
    assert ("known-upn", "query:u") in got
    tenant = [f for f in found if f.kind == "known-tenant"]
    assert tenant and tenant[0].severity == "low" and tenant[0].detector == "known:guid-nohyphens"


def test_hostname_and_domain_rows_feed_the_host_name_detector(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("kind,value\ndomain,corp.example.invalid\nhostname,WS-FINANCE-01\n")
    engine = FindingsEngine(identifiers=load_identifiers(path), key=b"k")
    body = b'{"a":"fs01.CORP.example.invalid","b":"ws-finance-01","c":"jane@corp.example.invalid"}'
    found = engine.scan(url="https://x.example.invalid/", request_headers=[], body=body, content_type=None,
                        events=[], data_flow=None)
    assert sorted((f.kind, f.detector, f.preview) for f in found if f.kind == "hostname") == [
        ("hostname", "config:hostname", "f***d"), ("hostname", "config:hostname", "w***1")]


def test_plain_names_need_word_boundaries_canaries_do_not(engine):
    body = f"Jan Pietersens and xLAPTOP-JD01 but prefix{CANARY}suffix".encode()
    found = engine.scan(url="https://x.example.invalid/", request_headers=[], body=body, content_type="text/plain",
                        events=[], data_flow=None)
    assert {f.kind for f in found} == {"canary"}


def test_utf16le_forms_in_binary_bodies(engine):
    body = b"\x01\x02" + "LAPTOP-JD01".encode("utf-16-le") + b"\x00\x00" + "xJan Pietersen".encode("utf-16-le")
    found = engine.scan(url="https://x.example.invalid/", request_headers=[], body=body,
                        content_type="application/octet-stream", events=[], data_flow=None)
    assert [(f.kind, f.detector, f.span) for f in found] == [("known-device", "known:utf16le", (2, 24))]


def test_third_party_escalates_known_identifiers(engine):
    args = _place("body", EMAIL)
    args["data_flow"] = "third-party"
    found = engine.scan(**args)
    assert [f.severity for f in found if f.kind == "known-email"] == ["high"]


def test_same_value_groups_across_encodings_and_detectors(engine):
    digest = hashlib.sha256(EMAIL.encode()).hexdigest()
    body = f'{{"a":"{EMAIL}","b":"{digest}","c":"{EMAIL.lower()}"}}'.encode()
    found = engine.scan(url="https://x.example.invalid/", request_headers=[], body=body,
                        content_type="application/json", events=[], data_flow=None)
    emails = [f for f in found if f.kind in ("known-email", "email")]
    assert {f.kind for f in emails} == {"known-email"}  # the regex e-mail is outranked by the known one
    assert len({f.value_hash for f in emails}) == 1
    assert {f.detector for f in emails} == {"known:plain", "known:case-variant", "known:sha256-lower"}


def test_ten_thousand_identifiers_build_once_and_match(tmp_path):
    rows = ["kind,value"] + [f"email,user{i}.x@example.invalid" for i in range(5000)] + [
        f"device,DESKTOP-{i:06d}" for i in range(5000)]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(rows) + "\n")
    t0 = time.perf_counter()
    ids = load_identifiers(path)
    engine = FindingsEngine(identifiers=ids, key=b"k")
    build = time.perf_counter() - t0
    assert len(ids) == 10_000 and build < 30
    digest = hashlib.sha1(b"user4321.x@example.invalid").hexdigest()
    body = f'{{"h":"{digest}","d":"desktop-004999.corp"}}'.encode()
    found = engine.scan(url="https://x.example.invalid/", request_headers=[], body=body, content_type=None,
                        events=[], data_flow=None)
    assert {(f.kind, f.detector) for f in found} >= {("known-email", "known:sha1-lower"),
                                                     ("known-device", "known:case-variant")}


# -- the identifiers file -----------------------------------------------------------------------------
def _write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "ids.csv"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_load_identifiers_reads_kinds_lines_and_tolerates_bom(identifiers):
    assert [(i.kind, i.line) for i in identifiers] == [
        ("email", 3), ("upn", 4), ("name", 5), ("device", 6), ("tenant", 8), ("canary", 9)]
    assert identifiers[0].value == EMAIL


@pytest.mark.parametrize(("text", "message"), [
    ("email,jane@example.invalid\n", ":1: expected the header row 'kind,value'"),
    ("kind,value\nemail,jane@example.invalid\nfriend,bob@example.invalid\n", ":3: unknown kind 'friend'"),
    ("kind,value\nname,Jan,Pietersen\n", ":2: expected 2 columns"),
    ("kind,value\nname,ab\n", ":2: value 'ab' is too short"),
    ("kind,value\nemail,jane.example.invalid\n", ":2: email value 'jane.example.invalid' has no '@'"),
    ("", "empty file"),
    (b"kind,value\nname,J\xe9\n", "not UTF-8"),
])
def test_load_identifiers_reports_bad_files_with_line_numbers(tmp_path, text, message):
    with pytest.raises(IdentifierFileError) as e:
        load_identifiers(_write(tmp_path, text))
    assert message in str(e.value)
    assert "ids.csv" in str(e.value)


def test_load_identifiers_missing_file(tmp_path):
    with pytest.raises(IdentifierFileError, match="cannot read"):
        load_identifiers(tmp_path / "nope.csv")


def test_load_identifiers_quoted_values_and_case_of_kind(tmp_path):
    ids = load_identifiers(_write(tmp_path, 'Kind,Value\r\nNAME,"Pietersen, Jan"\r\ncanary, CANARY-1 \r\n'))
    assert [(i.kind, i.value) for i in ids] == [("name", "Pietersen, Jan"), ("canary", "CANARY-1")]
