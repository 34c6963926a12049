"""A JSON telemetry batch whose body equals its decoded events: the body is not pattern-scanned again, the
same findings come out (at event paths), repeated values are examined once, and blanking still works."""

from __future__ import annotations

import dataclasses
import json
import pickle
from types import SimpleNamespace

from teletap.findings import FindingsEngine, Identifier, blank_body

KEY = b"k" * 32
URL = "https://collector.example.invalid/OneCollector/1.0/"
DEVICE = "5d9e2a77-1c3b-4f0e-9a8d-2b6c4e1f0a3c"


def batch(n: int = 5) -> tuple[bytes, list[SimpleNamespace]]:
    docs = [{"name": "Office.Test", "time": "2026-11-25T12:00:00.000Z", "ext": {"device": {"localId": f"s:{DEVICE}"}},
             "data": {"n": i, "Path": f"C:\\Users\\kimberg\\Documents\\plan{i}.docx", "Ip": "203.0.113.7",
                      "Mail": "TT-CANARY-Q7Z" if i == 1 else ""}} for i in range(n)]
    body = "\n".join(json.dumps(d) for d in docs).encode()
    return body, [SimpleNamespace(position=i, data=d, pii=[]) for i, d in enumerate(docs)]


def engine() -> FindingsEngine:
    return FindingsEngine(key=KEY, identifiers=[Identifier("canary", "TT-CANARY-Q7Z")])


def scan(e: FindingsEngine, body: bytes | None, events: list) -> list:
    return e.scan(url=URL, request_headers=[], body=body, content_type="application/x-json-stream", events=events,
                  data_flow=None)


def test_covered_body_gives_the_event_findings_and_every_body_span():
    body, events = batch()
    found = scan(engine(), body, events)
    assert all(f.location != "body" for f in found)
    got = {(f.kind, f.location, f.event_position) for f in found}
    for i in range(5):
        assert {("guid", "event:ext.device.localId", i), ("user-path", "event:data.Path", i),
                ("document", "event:data.Path", i), ("ipv4-public", "event:data.Ip", i)} <= got
    assert ("canary", "event:data.Mail", 1) in got
    # A repeated value is one hash, reported per event.
    assert len({f.value_hash for f in found if f.kind == "guid"}) == 1
    blanked = blank_body(body, found)
    assert len(blanked) == len(body)
    for secret in (b"kimberg", DEVICE.encode(), b"203.0.113.7", b"TT-CANARY-Q7Z", b"plan3.docx"):
        assert secret not in blanked, secret
    assert b"Users" in blanked and b"Office.Test" in blanked  # only the values go
    # The body on its own (no events) yields spans that the covered scan also blanks.
    alone = scan(engine(), body, [])
    assert {f.location for f in alone} == {"body"}
    assert blank_body(body, alone) == blanked


def test_body_with_more_than_its_events_is_still_scanned():
    body, events = batch()
    extra = body + b'\n{"name":"Office.Other","data":{"Mail":"kim@example.invalid"}}'
    found = scan(engine(), extra, events)
    assert ("email", "body") in {(f.kind, f.location) for f in found}
    # Events cut short by a decoder: the body is scanned too.
    found = scan(engine(), body, events[:2])
    assert {f.event_position for f in found if f.location == "body"} == {None}
    assert any(f.location == "body" and f.kind == "guid" for f in found) is False  # folded into event findings
    assert any(f.location == "body" and f.kind == "document" for f in found)  # plan2..4 only in the body


def test_lazy_spans_survive_copy_compare_and_pickle():
    body, events = batch(3)
    found = scan(engine(), body, events)
    device = next(f for f in found if f.kind == "guid")
    again = pickle.loads(pickle.dumps(device))
    assert again == device and len(again.extra_spans) == 3
    assert "_pending" not in again.__dict__
    as_dict = dataclasses.asdict(next(f for f in scan(engine(), body, events) if f.kind == "guid"))
    assert len(as_dict["extra_spans"]) == 3
    assert all(body[s:e] == DEVICE.encode() for s, e in device.extra_spans)


def test_json_keys_holding_values_are_scanned_when_the_body_is_skipped():
    docs = [{"name": "Office.Test", "data": {"C:\\Users\\kimberg\\plan.docx": 3}}]
    body = json.dumps(docs[0]).encode()
    found = scan(engine(), body, [SimpleNamespace(position=0, data=docs[0], pii=[])])
    kinds = {f.kind for f in found}
    assert {"user-path", "document"} <= kinds
    assert b"kimberg" not in blank_body(body, found)


def test_prefilter_set_agrees_with_each_prefilter():
    from teletap.findings import detectors

    assert detectors._PREFILTER_SET is not None
    rs, index = detectors._PREFILTER_SET
    texts = ["", "C:\\Users\\kim\\a.docx", "2026-01-01T00:00:00.000Z", "fe80::1%eth0", "12:30:45",
             "4111 1111 1111 1111", "11111111-2222-3333-4444-555555555555", "52.37310, 4.89220", "lat=52.1",
             "S-1-5-21-1-2-3", "NL91ABNA0417164300", "123-45-6789", "kim%40example.invalid", "00:1a:2b:3c:4d:5e",
             "10.1.2.3", "j\xf6rg@example.invalid", "x" * 5000 + "203.0.113.7"]
    for t in texts:
        got = set(rs.Match(t) or ())
        for fn, pre in detectors._PREFILTERS.items():
            assert (index[fn] in got) == (pre.search(t) is not None), (fn.__name__, t[:40])


def test_duplicate_json_keys_keep_the_body_scanned():
    # A parser keeps the last "Mail": the first one is in the body only.
    body = b'{"name":"Office.Test","data":{"Mail":"kim@example.invalid","Mail":""}}'
    event = SimpleNamespace(position=0, data=json.loads(body), pii=[])
    found = scan(engine(), body, [event])
    assert ("email", "body") in {(f.kind, f.location) for f in found}


def test_repeated_value_is_still_outranked_per_event_by_a_known_identifier():
    e = FindingsEngine(key=KEY, identifiers=[Identifier("email", "kim@example.invalid")])
    docs = [{"name": "Office.Test", "data": {"n": i, "Mail": "kim@example.invalid"}} for i in range(4)]
    body = "\n".join(json.dumps(d) for d in docs).encode()
    found = scan(e, body, [SimpleNamespace(position=i, data=d, pii=[]) for i, d in enumerate(docs)])
    mail = sorted((f.event_position, f.kind, f.detector) for f in found if f.location == "event:data.Mail")
    assert mail == [(i, "known-email", "known:plain") for i in range(4)]
    assert b"kim@" not in blank_body(body, found)


def test_json_nested_beyond_the_stack_is_scanned_without_an_error(caplog) -> None:
    from teletap.decoders import decode_request
    from teletap.findings import FindingsEngine

    # NDJSON: the first line decodes to an event, the second nests deeper than Python's stack
    body = (b'{"name":"Ok.Event","data":{"mail":"alice@example.invalid"}}\n'
            + b'{"a":' * 5000 + b'"x"' + b"}" * 5000)
    result = decode_request("POST", "https://api.example.invalid/v1",
                            [("content-type", "application/x-json-stream")], body)
    assert result.events  # the check only runs when there are events to compare the body with
    engine = FindingsEngine(key=b"k" * 32)
    found = engine.scan(url="https://api.example.invalid/v1", request_headers=[], body=body,
                        content_type="application/x-json-stream", events=result.events, data_flow=None)
    assert any(f.kind == "email" for f in found)
    assert "RecursionError" not in caplog.text and "ERROR" not in caplog.text
