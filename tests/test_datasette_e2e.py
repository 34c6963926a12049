"""Canned queries and the browser walk on evidence recorded by a real `teletap run` (two sessions).

Lab mode (`--sinkhole all`) answers every request locally, so invented hosts (*.example.invalid) are
recorded, decoded, matched against test signatures and scanned for personal data without any traffic
leaving loopback. Session 1 'baseline': a 1DS collector (a required, an essential and an invented event),
a third-party tracker given an email and a planted canary, an undocumented host, and a client refusing
teletap's certificate. Session 2 'after policy change': the collector with the essential event only, and a
new undocumented host.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from teletap.datasette_meta import QUERIES

from .support import LOOPBACK, rows, running_teletap
from .test_datasette_queries import pick, query, serving

pytestmark = pytest.mark.e2e

COLLECTOR, TRACKER, UNKNOWN, NEW = ("collector.example.invalid", "tracker.example.invalid",
                                    "unknown.example.invalid", "new.example.invalid")
CANARY = "TELETAP-CANARY-7f3a9c"  # planted, invented
REQUIRED, ESSENTIAL, INVENTED = ("Office.Outlook.Mac.AddinAPIUsage", "Office.Identity.SignOutEvent",
                                 "Teletap.Invented.Event")
SIGNATURES = """\
schema_version: 1
signatures:
  - id: test.dash.collector
    name: Example telemetry collector
    vendor: Microsoft
    category: diagnostic-data
    data_flow: first-party
    match: {hosts: [collector.example.invalid]}
    documentation: {urls: ["https://docs.example.invalid/collector"], checked: 2026-01-01}
    examples: {match: [collector.example.invalid]}
  - id: test.dash.tracker
    name: Example analytics tracker
    vendor: Example Analytics
    category: third-party-sharing
    data_flow: third-party
    match: {hosts: [tracker.example.invalid]}
    documentation: {urls: ["https://docs.example.invalid/tracker"], checked: 2026-01-01}
    examples: {match: [tracker.example.invalid]}
  - id: test.dash.pinned
    name: Example pinned endpoint
    vendor: Microsoft
    category: connected-experience
    data_flow: first-party
    match: {hosts: [localhost]}
    documentation: {urls: ["https://docs.example.invalid/pinned"], checked: 2026-01-01}
    examples: {match: [localhost]}
"""


def _onecollector(*names: str) -> bytes:
    return "\n".join(json.dumps({"ver": "4.0", "name": n, "time": "2026-01-01T00:00:00Z",
                                 "iKey": "o:00000000000000000000000000000000", "data": {"k": i}})
                     for i, n in enumerate(names)).encode()


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("datasette-e2e")
    sigs, ids = tmp / "signatures.yaml", tmp / "identifiers.csv"
    sigs.write_text(SIGNATURES)
    ids.write_text(f"kind,value\ncanary,{CANARY}\n")
    db = tmp / "evidence.db"
    common = ("--sinkhole", "all", "--signatures", str(sigs), "--identifiers", str(ids))
    # A listener where the pinned client connects: with --sinkhole all it must never see a connection.
    upstream = socket.socket()
    upstream.bind((LOOPBACK, 0))
    upstream.listen(8)
    try:
        with running_teletap(tmp, *common, "--session", "baseline", db=db) as tt:
            with httpx.Client(proxy=tt.proxy, timeout=10) as client:
                for r in (
                    client.post(f"http://{COLLECTOR}/OneCollector/1.0/", content=_onecollector(
                        REQUIRED, ESSENTIAL, INVENTED), headers={"content-type": "application/x-json-stream"}),
                    client.post(f"http://{TRACKER}/collect", json={
                        "event": "page_view", "user": {"email": "alice@example.invalid", "tag": CANARY}}),
                    client.get(f"http://{UNKNOWN}/ping?v=1"),
                ):
                    assert r.headers["x-teletap-sinkhole"] == "1"
            with httpx.Client(proxy=tt.proxy, verify=True, timeout=10) as client, \
                    pytest.raises(httpx.ConnectError):
                client.get(f"https://localhost:{upstream.getsockname()[1]}/pinned")
            assert tt.stop() == 0, tt.output()
        with running_teletap(tmp, *common, "--session", "after policy change", db=db) as tt:
            with httpx.Client(proxy=tt.proxy, timeout=10) as client:
                client.post(f"http://{COLLECTOR}/OneCollector/1.0/", content=_onecollector(ESSENTIAL),
                            headers={"content-type": "application/x-json-stream"})
                client.get(f"http://{NEW}/ping")
            assert tt.stop() == 0, tt.output()
    finally:
        upstream.close()
    return db


@pytest.fixture(scope="module")
def base(captured: Path) -> Iterator[str]:
    with serving(captured) as url:
        yield url


def _sent(db: Path, host: str, session: int | None = None) -> int:
    where = " and session_id = ?" if session else ""
    return rows(db, "select sum(coalesce(request_size_wire, 0)) as n from flows where host = ?" + where,
                (host, session) if session else (host,))[0]["n"]


def test_the_capture_recorded_what_the_queries_are_checked_against(captured: Path):
    assert pick(rows(captured, "select id, label from sessions order by id"), "id", "label") == [
        (1, "baseline"), (2, "after policy change")]
    assert Counter(r["host"] for r in rows(captured, "select host from flows")) == Counter(
        {COLLECTOR: 2, TRACKER: 1, UNKNOWN: 1, NEW: 1})


def test_endpoints_by_category(base: str, captured: Path):
    cols = ("category", "vendor", "host", "signature_id", "documented_as", "flows", "connections", "bytes_sent")
    assert pick(query(base, "endpoints_by_category"), *cols) == [
        ("connected-experience", "Microsoft", "localhost", "test.dash.pinned", "Example pinned endpoint", 0, 1, 0),
        ("diagnostic-data", "Microsoft", COLLECTOR, "test.dash.collector", "Example telemetry collector", 2, 0,
         _sent(captured, COLLECTOR)),
        ("third-party-sharing", "Example Analytics", TRACKER, "test.dash.tracker", "Example analytics tracker", 1,
         0, _sent(captured, TRACKER)),
        ("undocumented", None, NEW, "undocumented", None, 1, 0, _sent(captured, NEW)),
        ("undocumented", None, UNKNOWN, "undocumented", None, 1, 0, _sent(captured, UNKNOWN)),
    ]
    assert _sent(captured, COLLECTOR) > _sent(captured, COLLECTOR, 2) > 0  # two bodies were added up


def test_undocumented_endpoints(base: str):
    # unknown's query string (?v=1) is decoded as an event of its own; new's bare GET has none
    assert pick(query(base, "undocumented_endpoints"), "host", "flows", "connections", "events",
                "personal_data_findings") == [(NEW, 1, 0, 0, 0), (UNKNOWN, 1, 0, 1, 0)]
    assert pick(query(base, "undocumented_endpoints", session="2"), "host") == [(NEW,)]


def test_third_party_destination_and_what_it_received(base: str):
    [row] = query(base, "third_party_destinations")
    assert (row["host"], row["signature_id"], row["flows"], row["events_sent"], row["findings"]) == \
        (TRACKER, "test.dash.tracker", 1, "page_view", 2)
    assert set(row["personal_data_sent"].split(",")) == {"email", "canary"}


def test_personal_data_found(base: str):
    assert pick(query(base, "personal_data"), "kind", "destination", "data_flow", "severity", "findings",
                "found_in") == [
        ("canary", TRACKER, "third-party", "high", 1, "event:user.tag"),
        ("email", TRACKER, "third-party", "high", 1, "event:user.email"),
    ]
    assert query(base, "personal_data", session="2") == []


def test_events_by_name_and_beyond_the_level(base: str):
    assert pick(query(base, "events_by_name"), "name", "documented_level", "events", "sent_to") == [
        (ESSENTIAL, "office-essential-service", 2, COLLECTOR),
        (None, "undocumented", 1, UNKNOWN),  # the query string, decoded without an event name
        (REQUIRED, "office-required", 1, COLLECTOR),
        (INVENTED, "undocumented", 1, COLLECTOR),
        ("page_view", "undocumented", 1, TRACKER),
    ]
    at_required = [(INVENTED, "undocumented"), ("page_view", "undocumented")]
    assert pick(query(base, "events_beyond_level"), "name", "documented_level") == at_required
    assert pick(query(base, "events_beyond_level", level="neither"), "name", "documented_level") == \
        [*at_required, (REQUIRED, "office-required")]
    assert query(base, "events_beyond_level", level="neither", session="2") == []


def test_traffic_over_time(base: str, captured: Path):
    expected: Counter[tuple[str, str]] = Counter(
        (r["request_time"][:13] + ":00", r["category"] or "undocumented")
        for r in rows(captured, "select request_time, category from flows"))
    got = query(base, "traffic_over_time")
    assert {(r["period"], r["category"]): r["flows"] for r in got} == dict(expected)
    assert sum(r["flows"] for r in query(base, "traffic_over_time", bucket="day", session="2")) == 2


def test_not_observable_and_per_client(base: str):
    assert pick(query(base, "not_observable"), "sni", "kind", "signature_id", "connections") == [
        ("localhost", "tls-failed-client", "test.dash.pinned", 1)]
    assert pick(query(base, "per_client"), "client_address", "flows", "connections", "destinations", "events",
                "personal_data_findings", "undocumented") == [(LOOPBACK, 5, 1, 5, 6, 2, 2)]  # events: 3+1+1, then 1


def test_what_changed_between_the_sessions(base: str):
    assert pick(query(base, "session_changes", session_a="1", session_b="2"), "only_in", "what", "item") == [
        ("only in A", "endpoint", "localhost"), ("only in A", "endpoint", TRACKER),
        ("only in A", "endpoint", UNKNOWN), ("only in A", "event", REQUIRED), ("only in A", "event", INVENTED),
        ("only in A", "event", "page_view"), ("only in B", "endpoint", NEW)]


def test_browser_walk_over_the_captured_evidence(base: str, tmp_path: Path):
    from .test_datasette_browser import ARTIFACTS, CHROMIUM, Chromium

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    root = base.rsplit("/", 1)[0]
    args: dict[str, dict[str, Any]] = {"session_changes": {"session_a": 1, "session_b": 2}}
    paths = ["/", "/evidence/flows", "/evidence/events", "/evidence/findings", "/-/teletap/charts",
             *(f"/evidence/{name}?" + urlencode(args.get(name, {})) for name in QUERIES)]
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        for path in paths:
            name = path.replace("/-/", "/").strip("/").replace("/", "-").split("?")[0] or "index"
            visit = browser.visit(root + path, screenshot=ARTIFACTS.parent / "datasette-e2e" / f"{name}.png")
            assert visit.status == 200 and visit.errors == [], (path, visit)
    finally:
        browser.close()
