"""Storage: schema creation and versioning, file mode, batched writes."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
from pathlib import Path

import pytest

from teletap import schema
from teletap.store import PAGE_SIZE, FlowRows, Row, Store, StoreError, connect, iso


def test_new_database_is_private_wal_and_versioned(tmp_path: Path):
    db = tmp_path / "sub" / "evidence.db"
    connect(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("select version from teletap_schema").fetchall() == [(schema.SCHEMA_VERSION,)]
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    assert {t.name for t in schema.TABLES} <= tables
    indexes = {r[0] for r in conn.execute("select name from sqlite_master where type = 'index'")}
    assert {"idx_flows_host", "idx_flows_request_time", "idx_flows_session_id"} <= indexes


def test_new_databases_get_large_pages_and_existing_ones_keep_theirs(tmp_path: Path):
    new = tmp_path / "new.db"
    connect(new).close()
    assert sqlite3.connect(new).execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 16384
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)  # a database made before teletap chose its page size: SQLite's default
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")  # writes the header: the page size is fixed from here on
    conn.close()
    store = Store(old)
    assert store.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    store.write([Row("connections", {"id": "c1", "session_id": 1, "kind": "tcp", "observable": 1})])
    store.close()
    assert sqlite3.connect(old).execute("select count(*) from connections").fetchone()[0] == 1


def test_existing_world_readable_file_is_tightened(tmp_path: Path):
    db = tmp_path / "loose.db"
    db.touch(mode=0o644)
    db.chmod(0o644)
    connect(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_newer_schema_is_refused_with_a_clear_message(tmp_path: Path):
    db = tmp_path / "future.db"
    connect(db).close()
    conn = sqlite3.connect(db)
    conn.execute("insert into teletap_schema (version) values (?)", (schema.SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=rf"newer teletap \(schema version {schema.SCHEMA_VERSION + 1}"):
        connect(db)


def test_foreign_sqlite_file_and_garbage_are_refused(tmp_path: Path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("create table customers (id integer)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a teletap database"):
        connect(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        connect(garbage)


def test_older_schema_is_upgraded_by_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    db = tmp_path / "old.db"
    connect(db).close()
    # Pretend this teletap is one version ahead, with a migration that adds a column.
    from teletap import store

    monkeypatch.setattr(store, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(store.MIGRATIONS, schema.SCHEMA_VERSION,
                        lambda c: c.execute("alter table flows add column probe text"))
    connect(db).close()
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("select version from teletap_schema order by version")] == [
        schema.SCHEMA_VERSION, schema.SCHEMA_VERSION + 1]
    assert "probe" in [r[1] for r in conn.execute("pragma table_info(flows)")]


def test_batch_writes_flows_events_findings_and_replaces_on_rewrite(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    sid = store.start_session(label="s", kind="live", options={"a": 1}, signature_set_hash="h",
                              mitmproxy_version="11.0.2")
    flow = FlowRows(
        flow={"id": "f1", "session_id": sid, "host": "a.example.invalid"},
        events=[{"flow_id": "f1", "session_id": sid, "direction": "request", "position": 0, "name": "E0"},
                {"flow_id": "f1", "session_id": sid, "direction": "request", "position": 1, "name": "E1"}],
        findings=[{"flow_id": "f1", "session_id": sid, "kind": "email", "event_position": 1},
                  {"flow_id": "f1", "session_id": sid, "kind": "ipv4-public", "event_position": None}],
    )
    store.write([flow, Row("connections", {"id": "c1", "session_id": sid, "kind": "tcp", "observable": 1})])
    store.write([flow])  # written again (error after response, re-import): replaced, not duplicated
    conn = store.conn
    assert conn.execute("select count(*) from flows").fetchone()[0] == 1
    events = {r["name"]: r["id"] for r in conn.execute("select id, name from events")}
    assert set(events) == {"E0", "E1"}
    linked = dict(conn.execute("select kind, event_id from findings").fetchall())
    assert linked == {"email": events["E1"], "ipv4-public": None}
    store.update_session(sid, recorded=3, unrecorded=2, reasons={"ingest queue full": 2}, ended=True)
    session = conn.execute("select * from sessions").fetchone()
    assert session["items_unrecorded"] == 2 and session["ended"]
    store.close()


def test_failed_batch_writes_nothing(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    with pytest.raises(sqlite3.Error):
        store.write([Row("connections", {"id": "ok", "kind": "tcp"}),
                     Row("connections", {"id": "bad", "kind": {"not": "bindable"}})])
    assert store.conn.execute("select count(*) from connections").fetchone()[0] == 0
    store.close()


def test_iso_timestamps_sort_as_text():
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1700000000.25) == "2023-11-14T22:13:20.250Z"
    assert iso(None) is None
    assert iso(1700000014.830) == "2023-11-14T22:13:34.830Z"  # not .829: the float is 14.8299999…
    assert iso(1700000014.9996) == "2023-11-14T22:13:35.000Z"


def test_lone_surrogates_are_stored_as_their_escape(tmp_path: Path):
    import json

    store = Store(tmp_path / "t.db")
    cut = json.dumps({"title": "caf\ud83d"}, ensure_ascii=False)  # a UTF-16 pair cut in half
    store.write([FlowRows(flow={"id": "f", "path": "/caf\udce9", "request_headers": cut})])
    row = store.conn.execute("select path, request_headers from flows").fetchone()
    assert row["path"] == "/caf\\udce9"  # visible, not lost
    assert json.loads(row["request_headers"]) == {"title": "caf\ud83d"}  # in JSON, the very same value
    store.close()


def test_a_version_1_database_is_upgraded_to_the_current_version(tmp_path: Path):
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    # A v1 database as teletap 0.1 created it: no covering index (v2), no summary tables (v3), no
    # flows.analysis (v4).
    for table in schema.TABLES:
        if table in schema.SUMMARIES:
            continue
        if table.name == "flows":
            table = dataclasses.replace(table, columns=tuple(c for c in table.columns if c.name != "analysis"),
                                        extra_sql=())
        for statement in table.create_sql():
            if "idx_flows_host_signature_id" not in statement:
                conn.execute(statement)
    conn.execute("insert into teletap_schema (version) values (1)")
    conn.execute("insert into flows (id, session_id, host, request_time, request_size_wire, event_count)"
                 " values ('kept', 1, 'a.example.invalid', '2026-01-01T10:00:00.000Z', 10, 2),"
                 " ('also', 1, 'a.example.invalid', '2026-01-01T10:05:00.000Z', 5, 0)")
    conn.execute("insert into events (flow_id, session_id, name, format) values ('kept', 1, 'E', 'json'),"
                 " ('kept', 1, 'E', 'json')")
    conn.execute("insert into findings (flow_id, session_id, kind, value_hash) values ('kept', 1, 'email', 'h')")
    conn.execute("insert into connections (id, session_id, sni, observable) values ('c', 1, 'p.example.invalid', 0)")
    conn.commit()
    conn.close()
    connect(db).close()
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("select version from teletap_schema order by version")] == [
        1, schema.SCHEMA_VERSION]
    plan = " ".join(r[3] for r in conn.execute(
        "explain query plan select host, signature_id, category, vendor, data_flow, count(*),"
        " sum(request_size_wire), min(request_time) from flows group by host, signature_id, category, vendor,"
        " data_flow"))
    assert "COVERING INDEX" in plan  # no row fetches: the 1M-flow figure went from 8.9 s to 0.48 s
    assert sorted(conn.execute("select id from flows").fetchall()) == [("also",), ("kept",)]
    # v3: the summaries are counted from the rows already there
    assert conn.execute("select source, host, items, bytes_sent, events, first_seen, last_seen"
                        " from summary_endpoints order by source").fetchall() == [
        ("connection", "p.example.invalid", 1, 0, 0, None, None),
        ("flow", "a.example.invalid", 2, 15, 2, "2026-01-01T10:00:00.000Z", "2026-01-01T10:05:00.000Z")]
    assert conn.execute("select name, events, flows from summary_events").fetchall() == [("E", 2, 1)]
    assert conn.execute("select kind, value_hash, findings from summary_findings").fetchall() == [("email", "h", 1)]
    assert conn.execute("select minute, flows from summary_traffic").fetchall() == [
        ("2026-01-01T10:00", 1), ("2026-01-01T10:05", 1)]
    # v4: flows recorded before deferred analysis existed were all analysed
    assert conn.execute("select count(*) from flows where analysis is null").fetchone() == (2,)
    assert "idx_flows_analysis" in " ".join(r[3] for r in conn.execute(
        "explain query plan select id from flows where analysis = 'deferred'"))


def test_a_lone_surrogate_in_a_signature_does_not_stop_recording(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    store.replace_signatures([{"id": "s1", "name": "caf\udce9"}, {"id": "s2", "name": "plain"}])
    assert [tuple(r) for r in store.conn.execute("select id, name from signatures order by id")] == [
        ("s1", "caf\\udce9"), ("s2", "plain")]
    with pytest.raises(sqlite3.IntegrityError):
        store.replace_signatures([{"id": "s1"}, {"id": "s1"}])
    store.close()
