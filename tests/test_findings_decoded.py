"""Findings on bodies decoded by teletap's own decoders: a canary in each encoding inside a 1DS JSON
batch, a 1DS Bond batch and a query string; vendor PII annotations as the decoders report them."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from urllib.parse import quote

from teletap.decoders import decode_request
from teletap.findings import FindingsEngine, Identifier
from tests.bond_encoder import Prop, encode, record, ticks_from_unix_ms

CANARY = "tt-canary Zq81x"  # the space gives it a URL-encoded form different from the plain one
EMAIL = "Jane.Doe@Example.invalid"
ENGINE = FindingsEngine(identifiers=[Identifier("canary", CANARY), Identifier("email", EMAIL)], key=b"k" * 32)
COLLECTOR = "https://self.events.data.microsoft.com/OneCollector/1.0/"

ENCODED = {
    "plain": ("known:plain", CANARY),
    "urlencoded": ("known:urlencoded", "note%20" + quote(CANARY, safe="") + "%21"),
    "base64": ("known:base64", base64.b64encode(f"{{'c':'{CANARY}'}}".encode()).decode()),
    "sha256": ("known:sha256-lower", hashlib.sha256(CANARY.encode()).hexdigest()),
}


def _json_batch() -> bytes:
    events = []
    for i, (name, (_, text)) in enumerate(ENCODED.items()):
        events.append({"ver": "4.0", "name": f"Office.Test.{name}", "time": "2026-11-25T12:00:00.000Z",
                       "iKey": "o:0000testtenant", "ext": {"metadata": {"f": {"Mail": {"t": 289}}}},
                       "data": {"Field": text, "Mail": f"user{i}@example.invalid"}})
    events.append({"ver": "4.0", "name": "Office.Test.hashedmail", "iKey": "o:0000testtenant",
                   "data": {"PrimaryIdentityHash": hashlib.md5(EMAIL.lower().encode()).hexdigest()}})
    return "\n".join(json.dumps(e) for e in events).encode()


def test_canary_in_each_encoding_inside_a_1ds_json_batch():
    headers = [("Content-Type", "application/x-json-stream"), ("Client-Id", "NO_AUTH")]
    url = f"{COLLECTOR}?cors=true&tag={quote(CANARY)}"
    result = decode_request("POST", url, headers, _json_batch(), None)
    assert result is not None and len(result.events) >= 5, result and result.error  # + a query-parameters event
    found = ENGINE.scan(url=url, request_headers=headers, body=result.body, content_type=headers[0][1],
                        events=result.events, data_flow="first-party")
    canaries = {(f.detector, f.location, f.event_position, f.severity) for f in found if f.kind == "canary"}
    for i, (detector, _) in enumerate(ENCODED.values()):
        assert (detector, "event:data.Field", i, "high") in canaries, (detector, canaries)
    assert ("known:urlencoded", "query:tag", None, "high") in canaries
    # The event findings carry the body spans (the batch holds the strings verbatim).
    assert all(f.location != "body" for f in found if f.kind == "canary")
    vendor = {(f.kind, f.location, f.event_position) for f in found if f.detector == "vendor-annotation"}
    assert vendor == {("vendor-pii:SmtpAddress", "event:data.Mail", i) for i in range(4)}
    hashed = [f for f in found if f.kind == "known-email"]
    assert [(f.detector, f.location, f.event_position, f.severity) for f in hashed] == [
        ("known:md5-lower-normalised", "event:data.PrimaryIdentityHash", 4, "medium")]
    assert all(f.value is None for f in found)


def test_vendor_annotations_and_canary_in_a_1ds_bond_batch():
    ext = {"device": {"localId": "s:5d9e2a77-1c3b-4f0e-9a8d-2b6c4e1f0a3c"}, "user": {"localId": "m:1"}}
    recs = [encode(record(time=ticks_from_unix_ms(1_764_072_000_000 + i), ikey="o:0000testtenant", flags=0,
                          ext=ext, data={"Data.UserEmail": Prop("String", f"kim{i}@example.invalid",
                                                                pii=["SmtpAddress"]),
                                         "Data.Note": Prop("String", f"see {CANARY}", cc=[1])}))
            for i in range(3)]
    c = zlib.compressobj(wbits=-15)
    body = c.compress(b"".join(recs)) + c.flush()
    headers = [("Content-Type", "application/bond-compact-binary"), ("Content-Encoding", "deflate")]
    result = decode_request("POST", COLLECTOR, headers, body, None)
    assert result is not None and len(result.events) == 3, result and result.error
    found = ENGINE.scan(url=COLLECTOR, request_headers=headers, body=result.body, content_type=headers[0][1],
                        events=result.events, data_flow="third-party")
    got = {(f.kind, f.location, f.event_position) for f in found}
    for i in range(3):
        assert ("vendor-pii:SmtpAddress", "event:data.Data.UserEmail", i) in got
        assert ("customer-content", "event:data.Data.Note", i) in got
        assert ("email", "event:data.Data.UserEmail", i) in got
        assert ("canary", "event:data.Data.Note", i) in got
        assert ("guid", "event:ext.device.localId", i) in got
    assert {f.severity for f in found} == {"high"}  # third party
    # The raw (decompressed) Bond body holds the same strings: their spans are kept for blanking.
    canary = [f for f in found if f.kind == "canary"]
    spans = [s for f in canary for s in ([f.span] if f.span else []) + list(f.extra_spans)]
    assert len(spans) == 3 and all(result.body[s:e] == CANARY.encode() for s, e in spans)
