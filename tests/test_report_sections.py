"""Every section's figures equal independent counts over a database filled by real captures."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from . import test_report_capture as cap
from .support import rows

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> cap.Capture:
    return cap.capture(tmp_path_factory)


@pytest.fixture(scope="module")
def baseline(evidence: cap.Capture, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("sections") / "baseline.json"
    return cap.report_json(evidence.db, out, "--session", str(evidence.baseline), "--level", "office=neither")


def flows_of(db: Path, session: int) -> list[dict]:
    return rows(db, "SELECT * FROM flows WHERE session_id = ?", (session,))


def signatures(db: Path) -> dict[str, dict]:
    return {s["id"]: s for s in rows(db, "SELECT * FROM signatures")}


def test_capture_recorded_what_the_tests_rely_on(evidence: cap.Capture):
    assert all("NOT recorded" not in out for out in evidence.outputs)
    sessions = rows(evidence.db, "SELECT id, label, ended FROM sessions ORDER BY id")
    assert [(s["id"], s["label"]) for s in sessions] == [(1, cap.BASELINE), (2, cap.AFTER)]
    assert all(s["ended"] for s in sessions)
    hosts = {f["host"]: f["signature_id"] for f in flows_of(evidence.db, 1)}
    assert hosts["mobile.events.data.microsoft.com"] == "ms.m365.mobile-events"
    assert hosts["www.google-analytics.com"] != "undocumented" and hosts["tracker.example.invalid"] == "undocumented"


def test_scope_section(evidence: cap.Capture, baseline: dict):
    (session,) = cap.table(baseline, "sessions")
    db_session = rows(evidence.db, "SELECT * FROM sessions WHERE id = 1")[0]
    assert session["label"] == cap.BASELINE and session["signature_set_hash"] == db_session["signature_set_hash"]
    assert session["items_recorded"] == db_session["items_recorded"] and session["items_unrecorded"] == 0
    flows = flows_of(evidence.db, 1)
    connections = rows(evidence.db, "SELECT * FROM connections WHERE session_id = 1")
    figures = {r["figure"]: r["value"] for r in cap.table(baseline, "key-figures")}
    assert figures["HTTP(S) flows"] == len(flows) == 6  # five requests and the WebSocket upgrade
    assert figures["destination hosts"] == len({f["host"] for f in flows}) == 5
    assert figures["request bytes sent (as on the wire)"] == sum(f["request_size_wire"] or 0 for f in flows)
    assert figures["decoded events"] == len(rows(evidence.db, "SELECT id FROM events WHERE session_id = 1"))
    assert figures["personal-data findings"] == len(rows(evidence.db, "SELECT id FROM findings WHERE session_id = 1"))
    assert figures["flows to undocumented endpoints"] == sum(f["signature_id"] == "undocumented" for f in flows) == 3
    assert figures["flows to third parties"] == sum(f["data_flow"] == "third-party" for f in flows) == 1
    assert figures["connections whose payload was not observable"] == sum(c["observable"] == 0 for c in connections)
    assert figures["first request"] == min(f["request_time"] for f in flows)
    assert figures["WebSocket messages"] == len(rows(evidence.db, "SELECT id FROM websocket_messages "
                                                                  "WHERE session_id = 1")) == 4
    assert figures["DNS queries"] == 0
    clients = cap.table(baseline, "clients")
    assert clients == [{"client": "127.0.0.1", "flows": 6, "other_connections": len(connections),
                        "first_seen": min(f["request_time"] for f in flows),
                        "last_seen": max([f["request_time"] for f in flows] + [c["started"] for c in connections])}]
    assert {(r["app"], r["os"]) for r in cap.table(baseline, "software")} == {("Word", "Windows")}
    options = {r["option"]: r["value"] for r in cap.table(baseline, "options") if r["session"] == 1}

    def as_sqlite_text(v: object) -> str:  # how json_each + CAST(… AS TEXT) prints a JSON value
        if isinstance(v, str):
            return v
        if isinstance(v, bool):
            return str(int(v))
        if isinstance(v, list | dict):
            return json.dumps(v, separators=(",", ":"))
        return str(v)

    assert options == {k: as_sqlite_text(v) for k, v in json.loads(db_session["options"]).items()}


def test_data_flow_section(evidence: cap.Capture, baseline: dict):
    flows, sigs = flows_of(evidence.db, 1), signatures(evidence.db)
    expected = Counter((f["vendor"] or "(undocumented)", sigs.get(f["signature_id"], {}).get("product") or "",
                        f["category"] or "", f["data_flow"] or "") for f in flows)
    got = {(r["vendor"], r["product"], r["category"], r["data_flow"]): r["flows"]
           for r in cap.table(baseline, "flows-by-vendor")}
    assert got == dict(expected)
    endpoints = {(r["host"], r["signature_id"]): r for r in cap.table(baseline, "endpoints")}
    expected = Counter((f["host"], f["signature_id"]) for f in flows)
    assert Counter({k: r["flows"] for k, r in endpoints.items()}) == expected
    mobile = endpoints[("mobile.events.data.microsoft.com", "ms.m365.mobile-events")]
    assert mobile["documentation"] == sigs["ms.m365.mobile-events"]["documentation_url"].strip()
    assert mobile["events"] == 3
    websocket = rows(evidence.db, "SELECT direction, size FROM websocket_messages WHERE session_id = 1")
    assert {(r["direction"], r["messages"], r["bytes"]) for r in cap.table(baseline, "websocket")} == {
        (d, sum(w["direction"] == d for w in websocket), sum(w["size"] for w in websocket if w["direction"] == d))
        for d in ("client-to-server", "server-to-client")}
    assert cap.table(baseline, "dns-names") == []
    first = min(flows, key=lambda f: (f["request_time"], f["id"]))
    assert endpoints[(first["host"], first["signature_id"])]["first_flow"] == f"{first['request_time']} {first['id']}"
    by_category = {r["category"]: r["flows"] for r in cap.table(baseline, "flows-by-category")}
    assert by_category == dict(Counter(f["category"] or "(undocumented)" for f in flows))
    names = {r["event"]: r for r in cap.table(baseline, "event-names")}
    assert names[cap.REQUIRED_EVENT]["documented_level"] == "office-required"
    assert names[cap.ESSENTIAL_EVENT]["documented_level"] == "office-essential-service"
    assert sum(r["events"] for r in names.values()) == len(rows(
        evidence.db, "SELECT id FROM events WHERE session_id = 1 AND direction = 'request' AND name IS NOT NULL"))


def test_personal_data_section(evidence: cap.Capture, baseline: dict):
    findings = rows(evidence.db, "SELECT * FROM findings WHERE session_id = 1")
    got = {(r["severity"], r["kind"], r["destination"], r["data_flow"]): r
           for r in cap.table(baseline, "findings-by-kind")}
    expected = Counter((f["severity"], f["kind"], f["host"], f["data_flow"] or "undocumented") for f in findings)
    assert {k: r["findings"] for k, r in got.items()} == dict(expected)
    for key, r in got.items():
        same = [f for f in findings if (f["severity"], f["kind"], f["host"], f["data_flow"] or "undocumented") == key]
        assert r["distinct_values"] == len({f["value_hash"] for f in same})
        assert r["flows"] == len({f["flow_id"] for f in same})
        assert r["example"] == min(f["preview"] for f in same) and "***" in r["example"]
    # Third parties first: their findings are high severity.
    assert cap.table(baseline, "findings-by-kind")[0]["destination"] == "www.google-analytics.com"
    assert cap.table(baseline, "findings-by-kind")[0]["severity"] == "high"
    locations = Counter((f["kind"], f["location"]) for f in findings)
    assert {(r["kind"], r["location"]): r["findings"] for r in cap.table(baseline, "findings-by-location")} == locations


def test_third_party_and_undocumented_sections(evidence: cap.Capture, baseline: dict):
    flows = flows_of(evidence.db, 1)
    (third,) = cap.table(baseline, "third-party-flows")
    assert (third["vendor"], third["host"], third["flows"]) == ("Google", "www.google-analytics.com", 1)
    assert third["findings"] == sum(f["finding_count"] for f in flows if f["host"] == "www.google-analytics.com")
    (shared,) = cap.table(baseline, "third-party-findings")
    assert shared["kind"] == "email" and shared["example"].endswith(".invalid") and "bob@" not in shared["example"]
    hosts = {r["host"]: r for r in cap.table(baseline, "undocumented-hosts")}
    assert set(hosts) == {"tracker.example.invalid", cap.LOOPBACK}  # the tracker and the WebSocket server
    undocumented = hosts["tracker.example.invalid"]
    tracker = [f for f in flows if f["host"] == "tracker.example.invalid"]
    assert undocumented["flows"] == len(tracker) == 2
    assert undocumented["findings"] == sum(f["finding_count"] for f in tracker)
    assert undocumented["request_bytes"] == sum(f["request_size_wire"] or 0 for f in tracker)
    unlisted = {r["event"]: r["events"] for r in cap.table(baseline, "undocumented-events")}
    assert unlisted == dict(Counter(e["name"] for e in rows(
        evidence.db, "SELECT name FROM events WHERE session_id = 1 AND documented_level = 'undocumented' "
        "AND category = 'diagnostic-data' AND direction = 'request'")))
    assert cap.UNLISTED_EVENT in unlisted and cap.REQUIRED_EVENT not in unlisted


def test_blind_spots_section(evidence: cap.Capture, baseline: dict):
    connections = rows(evidence.db, "SELECT * FROM connections WHERE session_id = 1 AND observable = 0")
    table = cap.table(baseline, "not-observable")
    assert sum(r["connections"] for r in table) == len(connections) >= 1
    refused = [r for r in table if r["kind"] == "tls-failed-client"]
    assert refused and refused[0]["destination"] == "localhost" and "trust" in refused[0]["reason"]
    partial = {r["figure"]: r["value"] for r in cap.table(baseline, "partial-evidence")}
    assert partial["sessions not closed cleanly"] == 0
    assert partial["flows that failed (no response from the server)"] == sum(
        f["error"] is not None for f in flows_of(evidence.db, 1))
    assert cap.table(baseline, "unrecorded") == []
    assert [r["connection_id"] for r in cap.table(baseline, "evidence-not-observable")] == [
        c["id"] for c in sorted(connections, key=lambda c: (c["started"], c["id"]))]


def test_levels_section_flags_what_neither_does_not_allow(baseline: dict):
    beyond = {r["event"]: r for r in cap.table(baseline, "beyond-level-events")}
    # Essential-service events are allowed at Neither; required and unlisted Office events are not.
    assert set(beyond) == {cap.REQUIRED_EVENT, cap.UNLISTED_EVENT}
    assert all(r["product"] == "office" and r["declared_level"] == "neither" for r in beyond.values())
    assert beyond[cap.REQUIRED_EVENT]["documented_level"] == "office-required"
    levels = {r["documented_level"]: r["events"] for r in cap.table(baseline, "events-by-level")}
    assert levels["office-essential-service"] == 1 and levels["office-required"] == 1
    assert cap.section(baseline, "levels")["facts"]["beyond_events"] == 2
    appendix = cap.table(baseline, "evidence-beyond-level")
    assert sorted(r["event"] for r in appendix) == sorted(beyond)


def test_levels_allow_everything_documented_at_optional(evidence: cap.Capture, tmp_path: Path):
    report = cap.report_json(evidence.db, tmp_path / "r.json", "--session", "1", "--level", "office=2")
    assert report["parameters"]["levels"] == ["office=optional"]
    assert cap.table(report, "beyond-level-events") == []
    required = cap.report_json(evidence.db, tmp_path / "q.json", "--session", "1", "--level", "office=required")
    assert {r["event"] for r in cap.table(required, "beyond-level-events")} == {cap.UNLISTED_EVENT}


def test_risks_and_measures(evidence: cap.Capture, baseline: dict):
    risks = {r["risk"]: r for r in cap.table(baseline, "risk-register")}
    findings = rows(evidence.db, "SELECT * FROM findings WHERE session_id = 1")
    third = risks["Personal data sent to third parties"]
    assert third["proposed_severity"] == "high"
    assert third["evidence"] == sum(f["data_flow"] == "third-party" for f in findings)
    assert risks["Data sent to endpoints no documentation describes"]["evidence"] == 3
    assert risks["Diagnostic events sent beyond the declared level"]["evidence"] == 2
    assert "Planted canary values left the audited devices" not in risks  # no evidence, no row
    measures = {r["control"]: r for r in cap.table(baseline, "measures")}
    office = measures["Configure the level of client software diagnostic data sent by Office to Microsoft"]
    assert "ms.m365.mobile-events" in office["endpoints"].split(", ")
    assert office["flows"] == sum(f["signature_id"] in office["endpoints"].split(", ")
                                  for f in flows_of(evidence.db, 1))
    assert measures["SendTelemetry"]["location"].endswith("clienttelemetry")
    no_control = {r["signature_id"] for r in cap.table(baseline, "no-control")}
    sigs = signatures(evidence.db)
    assert no_control == {f["signature_id"] for f in flows_of(evidence.db, 1) if f["signature_id"] in sigs
                          and not json.loads(sigs[f["signature_id"]]["controls"] or "[]")}


def test_appendix_lists_every_flow_with_its_hash_and_never_a_query(evidence: cap.Capture, baseline: dict):
    appendix = cap.table(baseline, "evidence-flows")
    flows = sorted(flows_of(evidence.db, 1), key=lambda f: (f["request_time"], f["id"]))
    assert [(r["flow_id"], r["request_time"], r["request_sha256"]) for r in appendix] == [
        (f["id"], f["request_time"], f["request_sha256"] or "") for f in flows]  # a GET has no body to hash
    lookup = next(r for r in appendix if r["host"] == "tracker.example.invalid" and r["findings"]
                  and r["path"].startswith("(withheld"))
    assert lookup["method"] == "GET"
    text = json.dumps(baseline)
    assert cap.QUERY_EMAIL not in text and "dave%40" not in text
    findings = cap.table(baseline, "evidence-findings")
    assert len(findings) == len(rows(evidence.db, "SELECT id FROM findings WHERE session_id = 1"))
    by_flow = {f["id"]: f["request_sha256"] or "" for f in flows}
    assert all(r["request_sha256"] == by_flow[r["flow_id"]] for r in findings)


def test_every_table_carries_sql_that_reproduces_it(evidence: cap.Capture, baseline: dict):
    conn = sqlite3.connect(f"file:{evidence.db}?mode=ro", uri=True)
    try:
        for s in baseline["sections"]:
            for t in s["tables"]:
                cur = conn.execute(t["sql"])
                assert [d[0] for d in cur.description] == t["columns"], t["id"]
                assert [list(r) for r in cur.fetchall()] == t["rows"], t["id"]
    finally:
        conn.close()


def test_time_window_and_session_labels(evidence: cap.Capture, tmp_path: Path):
    flows = sorted(flows_of(evidence.db, 1), key=lambda f: f["request_time"])
    since, until = flows[1]["request_time"], flows[3]["request_time"]
    report = cap.report_json(evidence.db, tmp_path / "w.json", "--session", cap.BASELINE, "--since", since,
                             "--until", until)
    assert report["parameters"]["sessions"] == [1]
    inside = [f for f in flows if since <= f["request_time"] < until]
    figures = {r["figure"]: r["value"] for r in cap.table(report, "key-figures")}
    assert figures["HTTP(S) flows"] == len(inside) == 2
    inside_ids = {f["id"] for f in inside}
    assert {r["flow_id"] for r in cap.table(report, "evidence-findings")} <= inside_ids
    assert figures["personal-data findings"] == len(rows(
        evidence.db, f"SELECT id FROM findings WHERE flow_id IN ({','.join('?' * len(inside_ids))})",
        tuple(inside_ids)))


def test_all_sessions_by_default(evidence: cap.Capture, tmp_path: Path):
    report = cap.report_json(evidence.db, tmp_path / "all.json")
    assert report["parameters"]["sessions"] == [1, 2]
    figures = {r["figure"]: r["value"] for r in cap.table(report, "key-figures")}
    assert figures["HTTP(S) flows"] == len(rows(evidence.db, "SELECT id FROM flows"))


@pytest.mark.parametrize(("args", "message"), [
    (("--session", "9"), "no such session"),
    (("--session", "no such label"), "no session has this id or label"),
    (("--level", "office=sometimes"), "unknown level"),
    (("--since", "yesterday"), "not an ISO-8601"),
    (("--compare", "1", "--session", "1"), "also in the report's scope"),
])
def test_bad_options_fail_clearly(evidence: cap.Capture, tmp_path: Path, args: tuple[str, ...], message: str):
    proc = cap.teletap_report("--db", str(evidence.db), "--out", str(tmp_path / "x.html"), *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr.decode()
    assert not (tmp_path / "x.html").exists()


def test_progress_goes_to_stderr_and_the_report_to_stdout(evidence: cap.Capture):
    proc = cap.teletap_report("--db", str(evidence.db), "--format", "json", "--out", "-", "--session", "2")
    assert "building report" in proc.stderr.decode()
    assert json.loads(proc.stdout)["parameters"]["sessions"] == [2]
