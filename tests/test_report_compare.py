"""``--compare``: what disappeared, remained and appeared between two real capture sessions."""

from __future__ import annotations

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
def compared(evidence: cap.Capture, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("compare") / "compare.json"
    # The base by label, the scope by id: both ways of naming a session work.
    return cap.report_json(evidence.db, out, "--compare", cap.BASELINE, "--session", str(evidence.after),
                           "--level", "office=neither")


def changes(report: dict, table_id: str, *keys: str) -> dict[tuple, dict]:
    return {tuple(r[k] for k in keys): r for r in cap.table(report, table_id)}


def expected_changes(before: Counter, after: Counter) -> dict[tuple, tuple[str, int, int]]:
    """Independent of the report's SQL: set arithmetic over Python counters."""
    result = {}
    for key in before.keys() | after.keys():
        state = "remained" if key in before and key in after else "disappeared" if key in before else "appeared"
        result[key] = (state, before.get(key, 0), after.get(key, 0))
    return result


def test_parameters_and_scope(compared: dict):
    assert compared["parameters"]["compare"] == 1 and compared["parameters"]["sessions"] == [2]
    # The report's own figures describe the "after" session only.
    figures = {r["figure"]: r["value"] for r in cap.table(compared, "key-figures")}
    assert figures["HTTP(S) flows"] == 3


def test_destinations(evidence: cap.Capture, compared: dict):
    def key_counts(session: int) -> Counter:
        return Counter((f["host"], f["signature_id"]) for f in rows(
            evidence.db, "SELECT host, signature_id FROM flows WHERE session_id = ?", (session,)))

    got = {k: (r["change"], r["flows_before"], r["flows_after"])
           for k, r in changes(compared, "compare-endpoints", "host", "signature_id").items()}
    assert got == expected_changes(key_counts(1), key_counts(2))
    assert got[("www.google-analytics.com", "thirdparty.google.analytics")][0] == "disappeared"
    assert got[("tracker.example.invalid", "undocumented")] == ("disappeared", 2, 0)
    assert got[("mobile.events.data.microsoft.com", "ms.m365.mobile-events")] == ("remained", 1, 1)
    assert got[("beacon.example.invalid", "undocumented")] == ("appeared", 0, 1)
    # Rows read in the order of the story: disappeared, then remained, then appeared.
    order = [r["change"] for r in cap.table(compared, "compare-endpoints")]
    assert order == sorted(order, key=["disappeared", "remained", "appeared"].index)


def test_events(evidence: cap.Capture, compared: dict):
    def key_counts(session: int) -> Counter:
        return Counter((e["name"], e["documented_level"] or "") for e in rows(
            evidence.db, "SELECT name, documented_level FROM events WHERE session_id = ? AND direction = 'request' "
            "AND name IS NOT NULL", (session,)))

    got = {k: (r["change"], r["events_before"], r["events_after"])
           for k, r in changes(compared, "compare-events", "event", "documented_level").items()}
    assert got == expected_changes(key_counts(1), key_counts(2))
    assert got[(cap.REQUIRED_EVENT, "office-required")] == ("disappeared", 1, 0)
    assert got[(cap.ESSENTIAL_EVENT, "office-essential-service")] == ("remained", 1, 1)


def test_personal_data_and_blind_spots(evidence: cap.Capture, compared: dict):
    def findings(session: int) -> Counter:
        return Counter((f["kind"], f["host"]) for f in rows(
            evidence.db, "SELECT kind, host FROM findings WHERE session_id = ?", (session,)))

    got = {k: (r["change"], r["findings_before"], r["findings_after"])
           for k, r in changes(compared, "compare-findings", "kind", "destination").items()}
    assert got == expected_changes(findings(1), findings(2))
    assert all(state == "disappeared" for state, _, _ in got.values())  # the mitigation removed every finding

    def hidden(session: int) -> Counter:
        return Counter((c["kind"], c["sni"] or c["server_address"]) for c in rows(
            evidence.db, "SELECT * FROM connections WHERE session_id = ? AND observable = 0", (session,)))

    got = {k: (r["change"], r["connections_before"], r["connections_after"])
           for k, r in changes(compared, "compare-not-observable", "kind", "destination").items()}
    assert got == expected_changes(hidden(1), hidden(2))
    assert got[("tls-failed-client", "localhost")] == ("remained", 1, 1)


def test_summary_chart_and_prose(evidence: cap.Capture, compared: dict, tmp_path: Path):
    summary = {d["dimension"]: d for d in cap.section(compared, "compare")["facts"]["summary"]}
    endpoints = cap.table(compared, "compare-endpoints")
    # tracker, analytics and the WebSocket server disappeared
    assert summary["Destinations"]["disappeared"] == sum(r["change"] == "disappeared" for r in endpoints) == 3
    assert summary["Destinations"]["appeared"] == 1 and summary["Destinations"]["remained"] == 2
    # The "after" session sent only the essential-service event: nothing beyond Neither.
    assert cap.table(compared, "beyond-level-events") == []
    out = tmp_path / "compare.html"
    cap.teletap_report("--db", str(evidence.db), "--compare", "1", "--session", "2", "--out", str(out),
                       "--generated-at", cap.GENERATED_AT)
    html = out.read_text()
    assert 'id="chart-compare"' in html and "<svg" in html
    assert "Destinations: 3 disappeared, 2 remained, 1 appeared." in html
    after_flows = len(rows(evidence.db, "SELECT id FROM flows WHERE session_id = 2"))
    assert f"At a glance: {after_flows} requests to 3 destinations; 0 personal-data findings" in html
    assert "Compared with session 1: destinations 3 disappeared, 2 remained, 1 appeared;" in html


def test_compare_without_session_covers_every_other_session(evidence: cap.Capture, tmp_path: Path):
    report = cap.report_json(evidence.db, tmp_path / "r.json", "--compare", "1")
    assert report["parameters"]["sessions"] == [2]
    report = cap.report_json(evidence.db, tmp_path / "r2.json", "--compare", "2", "--session", "1,")
    assert report["parameters"]["sessions"] == [1]
    endpoints = changes(report, "compare-endpoints", "host", "signature_id")
    assert endpoints[("beacon.example.invalid", "undocumented")]["change"] == "disappeared"
