"""End to end: telemetry batches and planted canaries through a real `teletap run` → events and findings.

The bodies are built from the public wire formats (tests/bond_encoder.py for Bond); every client is real
(httpx) and every upstream is on loopback. The Host header names the real collector, so signatures match,
while the request itself goes to the local upstream.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import zlib
from pathlib import Path

import httpx
import pytest

from . import bond_encoder as be
from .support import LOOPBACK, Upstream, rows, running_teletap, teletap_command

pytestmark = pytest.mark.e2e

CANARY = "TT-CANARY-7f3a9c2e"
EMAIL = "Alice.Martin@Example.Invalid"
IKEY = "0123456789abcdef0123456789abcdef-01234567-89ab-cdef-0123-456789abcdef-7777"
DEVICE = "s:11111111-2222-3333-4444-555555555555"
COLLECTOR = "self.events.data.microsoft.com"


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


def ndjson(*names: str, extra: dict | None = None) -> bytes:
    return "\n".join(json.dumps({"ver": "4.0", "name": n, "time": "2026-11-25T10:00:00.000Z", "iKey": f"o:{IKEY[:32]}",
                                 "ext": {"device": {"localId": DEVICE}}, "data": {"n": i, **(extra or {})}})
                     for i, n in enumerate(names)).encode()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("telemetry")
    identifiers = tmp / "identifiers.csv"
    identifiers.write_text(f"kind,value\ncanary,{CANARY}\nemail,{EMAIL}\n")
    with Upstream() as up, running_teletap(tmp, "--session", "telemetry", "--identifiers", str(identifiers)) as tt:
        base = f"http://{LOOPBACK}:{up.port}"
        with httpx.Client(proxy=tt.proxy, timeout=10) as client:
            def post(path: str, body: bytes, host: str = COLLECTOR, **headers: str) -> None:
                r = client.post(base + path, content=body, headers={"host": host, **headers})
                assert r.status_code == 200

            # 1. a raw-deflate Bond batch of three CsProtocol records, one with a PII-annotated e-mail
            records = [be.record(name=f"Office.E2E.Bond{i}", ikey=f"o:{IKEY[:32]}",
                                 time=be.ticks_from_unix_ms(1_764_064_800_000 + i),
                                 ext={"device": {"localId": DEVICE}},
                                 data={"UserEmail": be.Prop("String", "bob@example.invalid", pii=["Identity"]),
                                       "Seq": be.Prop("Int64", i)})
                       for i in range(3)]
            post("/OneCollector/1.0/", raw_deflate(b"".join(be.encode(r) for r in records)),
                 **{"content-type": "application/bond-compact-binary", "content-encoding": "deflate",
                    "client-id": "NO_AUTH", "client-version": "1DS-Cpp-3.9", "apikey": IKEY})
            # 2. an NDJSON batch with the collector parameters in headers
            post("/OneCollector/1.0/", ndjson("Office.E2E.Json0", "Office.E2E.Json1"),
                 **{"content-type": "application/x-json-stream", "client-id": "NO_AUTH",
                    "client-version": "1DS-Web-JS-4.0", "apikey": IKEY, "upload-time": "1764064800000"})
            # 3. the same kind of batch, gzip, parameters in the query string (the beacon form)
            post(f"/OneCollector/1.0/?cors=true&content-type=application/x-json-stream&client-id=NO_AUTH"
                 f"&client-version=1DS-Web-JS-4.0&apikey={IKEY}&upload-time=1764064800000",
                 gzip.compress(ndjson("Office.E2E.Query0", "Office.E2E.Query1", "Office.E2E.Query2")),
                 **{"content-type": "text/plain", "content-encoding": "gzip"})
            # 4. Application Insights: a /v2/track JSON array and a /v2.1/track gzip NDJSON batch
            envelope = {"name": "Microsoft.ApplicationInsights.Event", "time": "2026-11-25T10:00:00.000Z",
                        "iKey": "11111111-2222-3333-4444-555555555555",
                        "data": {"baseType": "EventData", "baseData": {"ver": 2, "name": "E2E.AppInsights"}}}
            post("/v2/track", json.dumps([envelope, envelope]).encode(), host="dc.services.visualstudio.com",
                 **{"content-type": "application/json"})
            post("/v2.1/track", gzip.compress((json.dumps(envelope) + "\n").encode() * 3),
                 host="dc.services.visualstudio.com",
                 **{"content-type": "application/x-json-stream", "content-encoding": "gzip"})
            # 5. malformed: a truncated Bond batch
            post("/OneCollector/1.0/?malformed=1", be.encode(records[0])[:25],
                 **{"content-type": "application/bond-compact-binary"})
            # 6. the canary and the e-mail in every encoding, in a JSON body, a 1DS batch and a query string
            post("/collect/plain", json.dumps({"note": f"meeting notes {CANARY}"}).encode(),
                 host="tracker.example.invalid", **{"content-type": "application/json"})
            post("/collect/b64", json.dumps({"blob": base64.b64encode(f"xx{CANARY}yy".encode()).decode()}).encode(),
                 host="tracker.example.invalid", **{"content-type": "application/json"})
            post("/OneCollector/1.0/?canary=1",
                 ndjson("Office.E2E.Canary", extra={"hash": hashlib.sha256(CANARY.encode()).hexdigest()}),
                 **{"content-type": "application/x-json-stream"})
            r = client.get(f"{base}/pixel?u={EMAIL.replace('@', '%40')}"
                           f"&h={hashlib.md5(EMAIL.lower().encode()).hexdigest()}",
                           headers={"host": "tracker.example.invalid"})
            assert r.status_code == 200
        assert tt.stop() == 0
        return {"db": tt.db, "identifiers": identifiers, "tmp": tmp}


def events_of(db: Path, where: str) -> list[dict]:
    return rows(db, f"select e.*, f.path, f.query from events e join flows f on f.id = e.flow_id where {where} "
                    "order by e.id")


def test_bond_batch_becomes_events_with_their_fields(capture):
    events = events_of(capture["db"], "e.format = '1ds-bond'")
    assert [e["name"] for e in events] == ["Office.E2E.Bond0", "Office.E2E.Bond1", "Office.E2E.Bond2"]
    assert [e["position"] for e in events] == [0, 1, 2]
    first = events[0]
    assert first["time"].startswith("2025-11-25T10:00:00") and first["ikey"] == f"o:{IKEY[:32]}"
    assert first["device_id"] == DEVICE and first["signature_id"] != "undocumented"
    assert first["vendor"] == "Microsoft" and first["category"] == "diagnostic-data"
    data = json.loads(first["data"])
    assert data["data"]["UserEmail"] == "bob@example.invalid"
    assert any("UserEmail" in p["path"] and p["kind"] == "Identity" for p in json.loads(first["pii"]))
    (flow,) = rows(capture["db"], "select * from flows where id = ?", (first["flow_id"],))
    assert flow["decode_format"] == "1ds-bond" and flow["event_count"] == 3 and flow["decode_error"] is None
    assert flow["request_content_encoding"] == "deflate"


def test_ndjson_batches_with_parameters_in_headers_and_in_the_query(capture):
    in_headers = events_of(capture["db"], "e.name like 'Office.E2E.Json%'")
    in_query = events_of(capture["db"], "e.name like 'Office.E2E.Query%'")
    assert len(in_headers) == 2 and len(in_query) == 3
    for event in in_headers + in_query:
        assert event["format"] == "1ds-json" and event["device_id"] == DEVICE
        collector = json.loads(event["data"])["_collector"]
        assert collector["client-id"] == "NO_AUTH" and collector["apikey"] == IKEY
    assert "cors=true" in in_query[0]["query"]
    assert json.loads(in_query[0]["data"])["_collector"]["client-version"] == "1DS-Web-JS-4.0"


def test_application_insights_batches(capture):
    events = events_of(capture["db"], "e.format = 'appinsights'")
    assert sorted(e["path"] for e in events) == ["/v2.1/track"] * 3 + ["/v2/track"] * 2
    assert all(e["name"] and e["ikey"] == "11111111-2222-3333-4444-555555555555" for e in events)


def test_malformed_body_still_records_the_flow_and_the_error(capture):
    (flow,) = rows(capture["db"], "select * from flows where query = 'malformed=1'")
    assert flow["status"] == 200 and flow["decode_error"] and flow["request_body"]
    assert flow["request_sha256"] == hashlib.sha256(flow["request_body"]).hexdigest()


def findings(db: Path) -> list[dict]:
    return rows(db, "select f.*, fl.path from findings f join flows fl on fl.id = f.flow_id order by f.id")


def test_canary_and_known_email_in_every_encoding_and_place(capture):
    found = {(f["path"], f["kind"], f["detector"], f["location"].split(":")[0]) for f in findings(capture["db"])}
    # JSON bodies decode to a generic json event; a value is reported once, at its event path
    assert ("/collect/plain", "canary", "known:plain", "event") in found
    assert ("/collect/b64", "canary", "known:base64", "event") in found
    assert ("/OneCollector/1.0/", "canary", "known:sha256-lower", "event") in found
    assert ("/pixel", "known-email", "known:urlencoded", "query") in found
    assert ("/pixel", "known-email", "known:md5-lower-normalised", "query") in found
    canaries = [f for f in findings(capture["db"]) if f["kind"] == "canary"]
    assert canaries and all(f["severity"] == "high" for f in canaries)
    # the vendor's own PII annotation in the Bond batch is a finding too, linked to its event
    vendor = [f for f in findings(capture["db"]) if f["kind"].startswith("vendor-pii")]
    assert vendor and all(f["event_id"] is not None for f in vendor)


def test_findings_store_no_clear_values_and_group_by_keyed_hash(capture):
    all_findings = findings(capture["db"])
    assert all(f["value"] is None for f in all_findings)
    assert all(CANARY not in (f["preview"] or "") for f in all_findings)
    hashes = {f["value_hash"] for f in all_findings if f["kind"] == "canary"}
    assert len(hashes) == 1  # every encoding of the canary groups under one hash


def test_findings_summary_command(capture):
    out = subprocess.run(teletap_command("findings", "--db", str(capture["db"])), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["severity", "kind", "destination"]
    assert any(line.split()[:3] == ["high", "canary", "tracker.example.invalid"] for line in lines)


def test_store_clear_and_blanking_are_explicit_options(capture, tmp_path: Path):
    with Upstream() as up, running_teletap(
            tmp_path, "--identifiers", str(capture["identifiers"]),
            "--set", "teletap_findings_store_clear=true", "--set", "teletap_blank_findings=true") as tt:
        body = json.dumps({"note": f"see {CANARY} now"}).encode()
        with httpx.Client(proxy=tt.proxy, timeout=10) as client:
            assert client.post(f"http://{LOOPBACK}:{up.port}/clear", content=body,
                               headers={"content-type": "application/json"}).status_code == 200
        assert tt.stop() == 0
        assert up.requests[0][2] == body  # blanking touches the stored evidence, never the traffic
    (flow,) = rows(tt.db, "select * from flows where path = '/clear'")
    assert CANARY.encode() not in flow["request_body"] and len(flow["request_body"]) == len(body)
    assert flow["request_sha256"] == hashlib.sha256(body).hexdigest()  # the hash still covers what was sent
    (finding,) = [f for f in rows(tt.db, "select * from findings") if f["kind"] == "canary"]
    assert finding["value"] == CANARY


def test_redecode_rebuilds_events_from_stored_bodies(capture, tmp_path: Path):
    import shutil
    import sqlite3

    db = tmp_path / "old.db"
    shutil.copy(capture["db"], db)
    shutil.copy(capture["db"].with_name(capture["db"].name + ".findings-key"),
                db.with_name(db.name + ".findings-key"))
    conn = sqlite3.connect(db)
    before = conn.execute("select count(*) from events").fetchone()[0]
    # as if recorded by a teletap whose decoders did not know these formats yet
    conn.execute("delete from events")
    conn.execute("update flows set decode_format = null, event_count = 0")
    conn.commit()
    conn.close()
    out = subprocess.run(teletap_command("redecode", "--db", str(db), "--identifiers", str(capture["identifiers"])),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert rows(db, "select count(*) as n from events") == [{"n": before}]
    assert rows(db, "select decode_format from flows where path = '/v2/track'") == [{"decode_format": "appinsights"}]
    # the evidence hashes are those of the bodies as sent, not of the stored (decoded) bodies
    original = rows(capture["db"], "select id, request_sha256 from flows order by id")
    assert rows(db, "select id, request_sha256 from flows order by id") == original
    # and redecoding gives what live capture gave: headers as sent (Content-Encoding is evidence, and the
    # 1DS decoder reports it among the collector parameters), the same events and decode notes
    flows = ("select id, request_headers, request_content_encoding, decode_format, decode_error, event_count, "
             "finding_count from flows order by id")
    assert rows(db, flows) == rows(capture["db"], flows)
    assert any(f["request_content_encoding"] == "deflate" for f in rows(db, flows))
    events = ("select flow_id, direction, position, name, data, pii from events order by flow_id, direction, "
              "position")
    assert rows(db, events) == rows(capture["db"], events)
