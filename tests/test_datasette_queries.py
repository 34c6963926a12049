"""Every canned query in datasette_metadata.json, through a real `teletap serve`, on an empty and a filled DB.

The filled DB is written through teletap's own Store (the writer `teletap run` uses), with two sessions,
documented first- and third-party endpoints, an undocumented one, events at each documented level,
findings and a connection whose payload was not observable. Expected rows are worked out by hand.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from teletap.datasette_meta import QUERIES
from teletap.store import FlowRows, Row, Store

from .support import LOOPBACK, free_port, teletap_command, wait_for_port

pytestmark = pytest.mark.e2e

MS, TP = "example.office.telemetry", "example.analytics.tracker"
COLLECTOR, TRACKER, UNKNOWN, NEW = ("collector.example.invalid", "tracker.example.invalid",
                                    "unknown.example.invalid", "new.example.invalid")
PINNED = "pinned.example.invalid"
CLIENT_A, CLIENT_B = "192.0.2.10", "192.0.2.11"  # TEST-NET-1: invented client addresses
DOC_URL = "https://docs.example.invalid/office-telemetry"

SIGNATURES = [
    {"id": MS, "name": "Office diagnostic data", "vendor": "Microsoft", "product": "Microsoft 365 Apps",
     "category": "diagnostic-data", "data_flow": "first-party", "documentation_url": DOC_URL,
     "levels": json.dumps(["required"]), "match": json.dumps({"hosts": [COLLECTOR]})},
    {"id": TP, "name": "Example analytics tracker", "vendor": "Example Analytics", "category": "third-party-sharing",
     "data_flow": "third-party", "documentation_url": "https://docs.example.invalid/tracker"},
]
_MS_COLS = {"signature_id": MS, "category": "diagnostic-data", "vendor": "Microsoft", "data_flow": "first-party"}
_TP_COLS = {"signature_id": TP, "category": "third-party-sharing", "vendor": "Example Analytics",
            "data_flow": "third-party"}
_UNDOC = {"signature_id": "undocumented"}


def _flow(fid: str, session: int, host: str, time: str, size: int, client: str, sig: dict[str, str],
          **extra: Any) -> dict[str, Any]:
    return {"id": fid, "session_id": session, "host": host, "request_time": time, "request_size_wire": size,
            "client_address": client, "method": "POST", "scheme": "https", "path": "/collect",
            "url": f"https://{host}/collect", "status": 200, **sig, **extra}


def _event(flow: str, session: int, position: int, name: str, level: str, sig: dict[str, str], fmt: str = "1ds-bond",
           **extra: Any) -> dict[str, Any]:
    return {"flow_id": flow, "session_id": session, "direction": "request", "position": position, "format": fmt,
            "name": name, "documented_level": level, "data": json.dumps({"name": name, "data": {"example": True}}),
            **sig, **extra}


def fill_evidence(db: Path) -> None:
    """Two sessions: 'baseline' (1) and 'after policy change' (2)."""
    store = Store(db)
    s1 = store.start_session(label="baseline", kind="live", options={}, signature_set_hash=None,
                             mitmproxy_version=None)
    store.replace_signatures(SIGNATURES)
    store.write([
        FlowRows(flow=_flow("f1", s1, COLLECTOR, "2026-01-01T10:00:00.000Z", 1000, CLIENT_A, _MS_COLS,
                            event_count=2, request_content_type="application/bond-compact-binary",
                            request_headers=json.dumps([["host", COLLECTOR], ["content-type", "x"]]),
                            request_body=b'{"long": "' + b"x" * 600 + b'"}'),
                 events=[_event("f1", s1, 0, "Office.Outlook.Desktop.Boot", "office-required", _MS_COLS),
                         _event("f1", s1, 1, "Office.Feedback.Survey", "undocumented", _MS_COLS)]),
        FlowRows(flow=_flow("f2", s1, COLLECTOR, "2026-01-01T10:30:00.000Z", 500, CLIENT_A, _MS_COLS,
                            event_count=1),
                 events=[_event("f2", s1, 0, "Office.Identity.Essential", "office-essential-service", _MS_COLS)]),
        FlowRows(flow=_flow("f3", s1, TRACKER, "2026-01-01T11:05:00.000Z", 300, CLIENT_B, _TP_COLS,
                            event_count=1, finding_count=1, request_content_type="application/json"),
                 events=[_event("f3", s1, 0, "page_view", "undocumented", _TP_COLS, fmt="json")],
                 findings=[{"session_id": s1, "flow_id": "f3", "event_position": 0, "location": "event:user.email",
                            "kind": "email", "detector": "regex:email", "confidence": 0.9, "severity": "high",
                            "preview": "a***@example.invalid", "value_hash": "h-email-1", "host": TRACKER,
                            **_TP_COLS}]),
        FlowRows(flow=_flow("f4", s1, UNKNOWN, "2026-01-01T11:10:00.000Z", 50, CLIENT_B, _UNDOC, finding_count=2),
                 findings=[{"session_id": s1, "flow_id": "f4", "location": f"query:{k}", "kind": "email",
                            "detector": "regex:email", "severity": "medium", "preview": "b***@example.invalid",
                            "value_hash": "h-email-2", "host": UNKNOWN, **_UNDOC} for k in ("u", "v")]),
        Row("connections", {"id": "c1", "session_id": s1, "kind": "tls-failed-client", "observable": 0,
                            "sni": PINNED, "reason": "client does not trust the certificate",
                            "started": "2026-01-01T10:15:00.000Z", "client_address": CLIENT_A,
                            "bytes_from_client": 0, **_UNDOC}),
    ])
    store.update_session(s1, recorded=5, unrecorded=0, reasons={}, ended=True)
    s2 = store.start_session(label="after policy change", kind="live", options={}, signature_set_hash=None,
                             mitmproxy_version=None)
    store.write([
        FlowRows(flow=_flow("f5", s2, COLLECTOR, "2026-01-02T09:00:00.000Z", 700, CLIENT_A, _MS_COLS, event_count=1),
                 events=[_event("f5", s2, 0, "Office.Identity.Essential", "office-essential-service", _MS_COLS)]),
        FlowRows(flow=_flow("f6", s2, NEW, "2026-01-02T09:01:00.000Z", 20, CLIENT_A, _UNDOC)),
    ])
    store.update_session(s2, recorded=2, unrecorded=0, reasons={}, ended=True)
    store.close()


@contextlib.contextmanager
def serving(db: Path, env: dict[str, str] | None = None, host: str = LOOPBACK) -> Iterator[str]:
    """`teletap serve` as a real process; yields the database's base URL."""
    port = free_port()
    proc = subprocess.Popen(teletap_command("serve", "--db", str(db), "--host", host, "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port, proc=proc)
        yield f"http://{LOOPBACK}:{port}/{db.stem}"
    finally:
        proc.terminate()
        proc.wait(10)


def query(base: str, query_name: str, /, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/{query_name}.json", params={"_shape": "array", **params}, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()


def pick(rows: list[dict[str, Any]], *cols: str) -> list[tuple[Any, ...]]:
    return [tuple(r[c] for c in cols) for r in rows]


def test_every_canned_query_runs_on_an_empty_database(tmp_path: Path):
    db = tmp_path / "empty.db"
    with serving(db) as base:
        for name, spec in QUERIES.items():
            # no parameters at all (Datasette passes ''), and every parameter given
            assert query(base, name) == [], name
            assert query(base, name, **dict.fromkeys(spec["params"], "1")) == [], name
            page = httpx.get(f"{base}/{name}", timeout=20)
            assert page.status_code == 200 and spec["title"] in page.text, name
        charts = httpx.get(base.rsplit("/", 1)[0] + "/-/teletap/charts", timeout=20)
        assert charts.status_code == 200 and "No flows recorded yet" in charts.text


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("datasette") / "evidence.db"
    fill_evidence(db)
    with serving(db) as base:
        yield base


def test_endpoints_by_category_and_vendor(filled: str):
    cols = ("category", "vendor", "host", "signature_id", "documented_as", "documentation_url", "flows",
            "connections", "bytes_sent")
    assert pick(query(filled, "endpoints_by_category"), *cols) == [
        ("diagnostic-data", "Microsoft", COLLECTOR, MS, "Office diagnostic data", DOC_URL, 3, 0, 2200),
        ("third-party-sharing", "Example Analytics", TRACKER, TP, "Example analytics tracker",
         "https://docs.example.invalid/tracker", 1, 0, 300),
        ("undocumented", None, NEW, "undocumented", None, None, 1, 0, 20),
        ("undocumented", None, UNKNOWN, "undocumented", None, None, 1, 0, 50),
        ("undocumented", None, PINNED, "undocumented", None, None, 0, 1, 0),
    ]
    assert pick(query(filled, "endpoints_by_category", session="2", category="diagnostic-data"),
                "host", "flows", "bytes_sent") == [(COLLECTOR, 1, 700)]
    assert pick(query(filled, "endpoints_by_category", vendor="Example Analytics"), "host") == [(TRACKER,)]


def test_undocumented_endpoints(filled: str):
    cols = ("host", "flows", "connections", "bytes_sent", "clients", "events", "personal_data_findings")
    assert pick(query(filled, "undocumented_endpoints"), *cols) == [
        (NEW, 1, 0, 20, 1, 0, 0), (UNKNOWN, 1, 0, 50, 1, 0, 2), (PINNED, 0, 1, 0, 1, 0, 0)]
    assert pick(query(filled, "undocumented_endpoints", session="1"), "host") == [(UNKNOWN,), (PINNED,)]


def test_third_party_destinations_and_what_was_sent(filled: str):
    [row] = query(filled, "third_party_destinations")
    assert (row["host"], row["vendor"], row["signature_id"], row["flows"], row["bytes_sent"], row["events_sent"],
            row["personal_data_sent"], row["findings"], row["content_types"]) == \
        (TRACKER, "Example Analytics", TP, 1, 300, "page_view", "email", 1, "application/json")
    assert query(filled, "third_party_destinations", session="2") == []


def test_personal_data_by_kind_and_destination(filled: str):
    cols = ("kind", "destination", "data_flow", "severity", "findings", "distinct_values", "found_in")
    assert pick(query(filled, "personal_data"), *cols) == [
        ("email", TRACKER, "third-party", "high", 1, 1, "event:user.email"),
        ("email", UNKNOWN, "undocumented", "medium", 2, 1, "query:u,query:v"),
    ]
    assert query(filled, "personal_data", kind="ipv4-public") == []


def test_events_by_name_with_documented_level(filled: str):
    cols = ("name", "format", "documented_level", "events", "flows", "sent_to")
    assert pick(query(filled, "events_by_name"), *cols) == [
        ("Office.Identity.Essential", "1ds-bond", "office-essential-service", 2, 2, COLLECTOR),
        ("Office.Feedback.Survey", "1ds-bond", "undocumented", 1, 1, COLLECTOR),
        ("Office.Outlook.Desktop.Boot", "1ds-bond", "office-required", 1, 1, COLLECTOR),
        ("page_view", "json", "undocumented", 1, 1, TRACKER),
    ]
    assert pick(query(filled, "events_by_name", name="outlook"), "name") == [("Office.Outlook.Desktop.Boot",)]


def test_events_beyond_the_configured_level(filled: str):
    at_required = [("Office.Feedback.Survey", "undocumented", 1), ("page_view", "undocumented", 1)]
    assert pick(query(filled, "events_beyond_level"), "name", "documented_level", "events") == at_required
    assert pick(query(filled, "events_beyond_level", level="required"), "name", "documented_level",
                "events") == at_required
    # at 'neither' only essential services may send: the required event is beyond it too
    beyond_neither = pick(query(filled, "events_beyond_level", level="neither"), "name", "documented_level", "why")
    assert beyond_neither == [
        ("Office.Feedback.Survey", "undocumented", "not in Microsoft's documented lists"),
        ("page_view", "undocumented", "not in Microsoft's documented lists"),
        ("Office.Outlook.Desktop.Boot", "office-required", "documented as office-required: above the configured level"),
    ]
    assert query(filled, "events_beyond_level", level="neither", session="2") == []


def test_traffic_over_time_per_category(filled: str):
    cols = ("period", "category", "flows", "bytes_sent")
    assert pick(query(filled, "traffic_over_time"), *cols) == [
        ("2026-01-01T10:00", "diagnostic-data", 2, 1500),
        ("2026-01-01T11:00", "third-party-sharing", 1, 300),
        ("2026-01-01T11:00", "undocumented", 1, 50),
        ("2026-01-02T09:00", "diagnostic-data", 1, 700),
        ("2026-01-02T09:00", "undocumented", 1, 20),
    ]
    assert pick(query(filled, "traffic_over_time", bucket="day", session="1"), *cols) == [
        ("2026-01-01", "diagnostic-data", 2, 1500), ("2026-01-01", "third-party-sharing", 1, 300),
        ("2026-01-01", "undocumented", 1, 50)]


def test_connections_not_observable(filled: str):
    assert pick(query(filled, "not_observable"), "sni", "kind", "reason", "connections") == [
        (PINNED, "tls-failed-client", "client does not trust the certificate", 1)]
    assert query(filled, "not_observable", session="2") == []


def test_summary_per_client(filled: str):
    cols = ("client_address", "flows", "connections", "destinations", "bytes_sent", "events",
            "personal_data_findings", "undocumented")
    assert pick(query(filled, "per_client"), *cols) == [
        (CLIENT_A, 4, 1, 3, 2220, 4, 0, 2),
        (CLIENT_B, 2, 0, 2, 350, 1, 3, 1),
    ]


def test_what_changed_between_two_sessions(filled: str):
    cols = ("only_in", "what", "item", "times")
    assert pick(query(filled, "session_changes", session_a="1", session_b="2"), *cols) == [
        ("only in A", "endpoint", PINNED, 1),
        ("only in A", "endpoint", TRACKER, 1),
        ("only in A", "endpoint", UNKNOWN, 1),
        ("only in A", "event", "Office.Feedback.Survey", 1),
        ("only in A", "event", "Office.Outlook.Desktop.Boot", 1),
        ("only in A", "event", "page_view", 1),
        ("only in B", "endpoint", NEW, 1),
    ]
    assert query(filled, "session_changes", session_a="2", session_b="2") == []


def test_flow_links_to_its_events_findings_and_signature(filled: str):
    page = httpx.get(f"{filled}/flows/f3", timeout=20).text
    # foreign keys: the signature documentation, and the rows pointing back at this flow
    assert f'href="/evidence/signatures/{TP.replace(".", "~2E")}"' in page
    assert 'href="/evidence/events?flow_id=f3"' in page and 'href="/evidence/findings?flow_id=f3"' in page
    table = httpx.get(f"{filled}/flows", timeout=20).text
    assert "Example analytics tracker" in table  # the signature's label column, not just its id
    assert '<a href="/evidence/events?flow_id=f1">2 events</a>' in table
    # JSON pretty-printed and long bodies folded behind a summary
    assert 'class="teletap-json"' in table and '<details class="teletap-fold">' in table
    assert '<span class="teletap-muted">undocumented</span>' in table
    facets = httpx.get(f"{filled}/flows.json", timeout=20).json()["facet_results"]
    assert {"category", "vendor", "data_flow", "host", "session_id"} <= set(facets)


def test_captured_content_is_escaped_not_executed(tmp_path: Path):
    """Bodies and headers are attacker-controlled: the reading aids must escape them, folded or not."""
    db = tmp_path / "hostile.db"
    store = Store(db)
    sid = store.start_session(label="<b>label</b>", kind="live", options={}, signature_set_hash=None,
                              mitmproxy_version=None)
    payload = "<script>document.title='pwned'</script>"
    store.write([FlowRows(flow=_flow(
        "x1", sid, "evil.example.invalid", "2026-01-01T00:00:00.000Z", 10, CLIENT_A, _UNDOC,
        request_headers=json.dumps([["x-evil", "</pre>" + payload]]),
        request_body=(payload * 20).encode(), response_body=json.dumps({"k": payload}).encode(),
        url="https://evil.example.invalid/" + payload * 10))])
    store.close()
    with serving(db) as base:
        for path in ("/flows/x1", "/flows", "/sessions"):
            page = httpx.get(base + path, timeout=20).text
            assert "<script>document.title" not in page and "<b>label</b>" not in page, path
        assert "&lt;script&gt;document.title" in httpx.get(f"{base}/flows/x1", timeout=20).text
