"""Report options: times, levels, session selection, template overrides and the SQL scope they produce."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from teletap.report.scope import ReportError, Scope, parse_level, parse_time, resolve_sessions
from teletap.store import Store, connect

from . import test_report_capture as cap


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-25", "2026-11-25T00:00:00.000Z"),
    ("2026-11-25T14:00Z", "2026-11-25T14:00:00.000Z"),
    ("2026-11-25 14:00:05.25", "2026-11-25T14:00:05.250Z"),
    ("2026-11-25T15:00:00+01:00", "2026-11-25T14:00:00.000Z"),  # offsets are converted to UTC
    ("2026-11-25T12:13:18.547Z", "2026-11-25T12:13:18.547Z"),  # the stored form round-trips
])
def test_times_are_normalised_to_the_stored_form(text: str, expected: str):
    assert parse_time(text, "--since") == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "25/11/2026", "'; DROP TABLE flows; --"])
def test_bad_times_are_refused(text: str):
    with pytest.raises(ReportError, match="--since"):
        parse_time(text, "--since")


@pytest.mark.parametrize(("text", "expected"), [
    ("office=neither", ("office", "neither")), ("Office=3", ("office", "neither")),
    ("office=1", ("office", "required")),
    ("windows=0", ("windows", "security")), ("windows=basic", ("windows", "required")),
    ("windows=full", ("windows", "optional")),
])
def test_levels_accept_names_and_policy_values(text: str, expected: tuple[str, str]):
    assert parse_level(text) == expected


@pytest.mark.parametrize("text", ["office", "edge=off", "office=sometimes", "windows=4"])
def test_bad_levels_are_refused(text: str):
    with pytest.raises(ReportError):
        parse_level(text)


def test_scope_sql_names_only_the_subqueries_it_uses():
    scope = Scope(sessions=(2, 3), since="2026-11-25T00:00:00.000Z", until="2026-11-26T00:00:00.000Z")
    sql = scope.sql("SELECT COUNT(*) FROM scope_findings")
    assert sql.startswith("WITH scope_findings AS (SELECT * FROM findings WHERE flow_id IN (SELECT id FROM flows "
                          "WHERE session_id IN (2, 3) AND request_time >= '2026-11-25T00:00:00.000Z' AND request_time "
                          "< '2026-11-26T00:00:00.000Z'))")
    assert "scope_flows" not in sql and "scope_connections" not in sql
    assert scope.sql("SELECT 1") == "SELECT 1"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    store = Store(path)
    for label in ("baseline, defaults", "after", "after"):
        store.start_session(label=label, kind="live", options={}, signature_set_hash=None, mitmproxy_version=None)
    store.close()
    return path


def test_sessions_by_id_label_and_list(db: Path):
    conn = connect(db, readonly=True)
    try:
        assert resolve_sessions(conn, (), None) == ((1, 2, 3), None)
        assert resolve_sessions(conn, ("baseline, defaults",), None) == ((1,), None)  # a label with a comma
        assert resolve_sessions(conn, ("after",), None) == ((2, 3), None)  # a label names every such session
        assert resolve_sessions(conn, ("1,3",), None) == ((1, 3), None)
        assert resolve_sessions(conn, (), "1") == ((2, 3), 1)
        with pytest.raises(ReportError, match="2 sessions carry this label"):
            resolve_sessions(conn, ("1",), "after")
        with pytest.raises(ReportError, match="no such session"):
            resolve_sessions(conn, ("7",), None)
    finally:
        conn.close()


def test_empty_database_is_refused(tmp_path: Path):
    Store(tmp_path / "empty.db").close()
    proc = cap.teletap_report("--db", str(tmp_path / "empty.db"), "--out", str(tmp_path / "r.html"), check=False)
    assert proc.returncode == 2 and b"holds no sessions" in proc.stderr
    proc = cap.teletap_report("--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "r.html"), check=False)
    assert proc.returncode == 2 and b"no such database" in proc.stderr
    assert not (tmp_path / "missing.db").exists()  # reporting never creates a database


def test_template_override_and_private_output(db: Path, tmp_path: Path):
    overrides = tmp_path / "templates"
    overrides.mkdir()
    # An organisation rewords one section; the other templates come from the bundled set.
    from teletap.resources import reports_dir

    prose = (reports_dir() / "prose.j2").read_text()
    marker = "Reviewed by the works council before publication."
    (overrides / "prose.j2").write_text(prose.replace("{% macro risks(report, s) %}\n",
                                                      "{% macro risks(report, s) %}\n" + marker + "\n\n"))
    out = tmp_path / "r.html"
    cap.teletap_report("--db", str(db), "--templates", str(overrides), "--out", str(out), "--generated-at",
                       cap.GENERATED_AT)
    html = out.read_text()
    assert f"<p>{marker}</p>" in html and "Evidence appendix" in html
    assert out.stat().st_mode & 0o077 == 0


def test_report_does_not_write_to_the_database(db: Path, tmp_path: Path):
    before = db.read_bytes()
    cap.teletap_report("--db", str(db), "--format", "json", "--out", str(tmp_path / "r.json"))
    assert db.read_bytes() == before
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 3
    conn.close()


def test_dns_names_and_progress_count(db: Path):
    """DNS rows (recorded only in DNS mode on a gateway) are summarised; the progress bar's length is exact."""
    from teletap.report import ReportOptions, build_report, render, table_count
    from teletap.store import Row

    store = Store(db)
    store.write([Row("dns", {"id": f"d{i}", "session_id": 2, "time": f"2026-11-25T10:00:0{i}.000Z",
                             "client_address": f"10.0.0.{i % 2}", "question": name, "question_type": "A",
                             "signature_id": "undocumented"})
                 for i, name in enumerate(["a.example.invalid", "b.example.invalid", "a.example.invalid"])])
    store.close()
    conn = connect(db, readonly=True)
    try:
        for scope in (Scope(sessions=(2,)), Scope(sessions=(2, 3), levels=(("office", "neither"),)),
                      Scope(sessions=(2,), levels=(("office", "optional"),), base_session=1)):
            steps: list[int] = []
            report = build_report(conn, ReportOptions(scope=scope, generated_at=cap.GENERATED_AT),
                                  progress=steps.append)
            assert sum(steps) == table_count(scope) == sum(len(s.tables) for s in report.sections)
            names = {r["name"]: (r["queries"], r["clients"]) for r in report.table("dns-names").records()}
            assert names == {"a.example.invalid": (2, 1), "b.example.invalid": (1, 1)}
            figures = {r["figure"]: r["value"] for r in report.table("key-figures").records()}
            assert figures["DNS queries"] == 3
            # The Python API renders without CLI-only parameters.
            assert "a.example.invalid" in render(report, "md").decode()
    finally:
        conn.close()


def _windows_db(path: Path) -> Path:
    """Rows as the pipeline writes them for a Windows diagnostic-data endpoint (documented levels included)."""
    from teletap.store import FlowRows

    store = Store(path)
    sid = store.start_session(label="windows", kind="live", options={}, signature_set_hash=None,
                              mitmproxy_version=None)
    sig = {"signature_id": "test.windows.cuet", "category": "diagnostic-data", "vendor": "Microsoft",
           "data_flow": "first-party"}
    store.replace_signatures([{"id": "test.windows.cuet", "name": "Windows diagnostic data (test)",
                               "vendor": "Microsoft", "product": "Windows", "category": "diagnostic-data",
                               "data_flow": "first-party", "essential": 0,
                               "levels": '{"windows": ["required", "enhanced", "optional"]}', "controls": "[]"}])
    events = [(WINDOWS_REQUIRED, "windows-required"), (WINDOWS_UNLISTED, "undocumented"),
              ("Office.ClickToRun.UpdateStatus", "office-essential-service")]
    store.write([FlowRows(
        flow={"id": "w1", "session_id": sid, "request_time": "2026-11-25T10:00:00.000Z", "host": "v10.events.invalid",
              "method": "POST", "path": "/OneCollector/1.0/", "request_sha256": "0" * 64, "event_count": 3, **sig},
        events=[{"flow_id": "w1", "session_id": sid, "direction": "request", "position": i, "format": "1ds-bond",
                 "name": name, "documented_level": level, **sig} for i, (name, level) in enumerate(events)])])
    store.close()
    return path


WINDOWS_REQUIRED = "Microsoft.Windows.Appraiser.General.ChecksumTotalPictureCount"
WINDOWS_UNLISTED = "Microsoft.Windows.Teletap.Unlisted"


@pytest.mark.parametrize(("level", "beyond", "endpoint_flagged"), [
    ("security", {WINDOWS_REQUIRED, WINDOWS_UNLISTED}, True),
    ("required", {WINDOWS_UNLISTED}, False),
    ("optional", set(), False),
])
def test_windows_levels(tmp_path: Path, level: str, beyond: set[str], endpoint_flagged: bool):
    from teletap.report import ReportOptions, build_report

    conn = connect(_windows_db(tmp_path / "w.db"), readonly=True)
    try:
        report = build_report(conn, ReportOptions(scope=Scope(sessions=(1,), levels=(("windows", level),)),
                                                  generated_at=cap.GENERATED_AT))
    finally:
        conn.close()
    # The Office essential-service event never counts against a Windows level.
    assert {r["event"] for r in report.table("beyond-level-events").records()} == beyond
    endpoints = report.table("beyond-level-endpoints").records()
    assert [r["signature_id"] for r in endpoints] == (["test.windows.cuet"] if endpoint_flagged else [])
    risks = {r["risk"]: r["evidence"] for r in report.table("risk-register").records()}
    assert risks.get("Diagnostic events sent beyond the declared level", 0) == len(beyond)
