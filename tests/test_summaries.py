"""The summary tables ingest keeps must always equal a recount from the rows they summarise.

Batches are generated with hypothesis: new flows, flows written again (an error after the response,
redecode, re-import; also twice in one batch), connections, events and findings with missing values.
After every batch, the summaries kept batch by batch are compared with ``summaries.rebuild`` on a copy:
keys and counts must be equal; first/last seen may only be wider (a flow that moved to another group leaves
its time behind, as documented), never narrower.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teletap.schema import SUMMARIES
from teletap.store import FlowRows, Item, Row, Store
from teletap.summaries import rebuild

HOSTS = ["a.example.invalid", "b.example.invalid", None]
SIGNATURES = [{"signature_id": "sig-a", "category": "diagnostic-data", "vendor": "Microsoft",
               "data_flow": "first-party"},
              {"signature_id": "sig-t", "category": "third-party-sharing", "vendor": "Example",
               "data_flow": "third-party"},
              {"signature_id": "undocumented"}, {}]
CONTENT_TYPES = [None, "application/json", "Application/JSON; charset=utf-8",
                 "multipart/form-data; boundary=x1", "multipart/form-data; boundary=x2"]


def _time(n: int) -> str:
    # Each flow id keeps its time: summaries widen first/last seen on replacement, exact for the same time.
    return f"2026-01-01T10:{n % 60:02d}:{n % 7:02d}.000Z"


@st.composite
def flow_rows(draw: st.DrawFn, session: int) -> FlowRows:
    n = draw(st.integers(0, 12))
    fid = f"f{n}"
    sig = draw(st.sampled_from(SIGNATURES))
    host = draw(st.sampled_from(HOSTS))
    events = [{"flow_id": fid, "session_id": session, "position": i, "direction": draw(st.sampled_from(
                   ["request", "response", None])),
               "name": draw(st.sampled_from(["E1", "E2", "", None])), "format": draw(st.sampled_from(["json", None])),
               "documented_level": draw(st.sampled_from(["office-required", "undocumented", None])),
               "time": draw(st.sampled_from([None, _time(n + 1)])), **sig}
              for i in range(draw(st.integers(0, 4)))]
    findings = [{"flow_id": fid, "session_id": session, "kind": draw(st.sampled_from(["email", "guid"])),
                 "event_position": None, "location": draw(st.sampled_from(["url", "body", None])),
                 "severity": "medium", "value_hash": draw(st.sampled_from(["h1", "h2", None])),
                 "host": draw(st.sampled_from([host, None])), **sig}
                for _ in range(draw(st.integers(0, 3)))]
    flow = {"id": fid, "session_id": session, "host": host, "client_address": draw(st.sampled_from(
                ["192.0.2.1", "192.0.2.2", None])),
            "request_time": draw(st.sampled_from([_time(n), None])),
            "request_content_type": draw(st.sampled_from(CONTENT_TYPES)),
            "request_size_wire": draw(st.sampled_from([None, 0, 100 + n])), "response_size_wire": n,
            "event_count": len(events), "finding_count": len(findings), **sig}
    return FlowRows(flow=flow, events=events, findings=findings)


@st.composite
def connection(draw: st.DrawFn, session: int) -> Row:
    n = draw(st.integers(0, 5))
    return Row("connections", {"id": f"c{n}", "session_id": session, "kind": "tls-failed-client", "observable": 0,
                               "sni": draw(st.sampled_from(HOSTS)), "server_address": draw(st.sampled_from(
                                   [None, "192.0.2.99"])), "started": _time(n), "bytes_from_client": n,
                               **draw(st.sampled_from(SIGNATURES))})


def batches(session: int) -> st.SearchStrategy[list[list[Item]]]:
    item = st.one_of(flow_rows(session), connection(session))
    return st.lists(st.lists(item, min_size=1, max_size=6), min_size=1, max_size=6)


def summary_rows(conn: sqlite3.Connection) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """Per table: key and counts → (first_seen, last_seen) (or () for tables without times)."""
    out = {}
    for t in SUMMARIES:
        times = [c for c in ("first_seen", "last_seen") if c in t.column_names]
        rest = [c for c in t.column_names if c not in times]
        out[t.name] = {tuple(r[:len(rest)]): tuple(r[len(rest):]) for r in conn.execute(
            f"SELECT {', '.join(rest + times)} FROM [{t.name}]")}
    return out


def assert_kept_equals_recount(kept: dict, counted: dict) -> None:
    for table in counted:
        assert kept[table].keys() == counted[table].keys(), (table, set(kept[table]) ^ set(counted[table]))
        for key, times in counted[table].items():
            if times:
                (kept_first, kept_last), (first, last) = kept[table][key], times
                assert first is None or kept_first <= first, (table, key)
                assert last is None or kept_last >= last, (table, key)


def recount(store: Store, tmp: Path) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    copy = sqlite3.connect(tmp / "copy.db")
    store.conn.backup(copy)
    rebuild(copy)
    rows = summary_rows(copy)
    copy.close()
    (tmp / "copy.db").unlink()
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_kept_summaries_equal_a_recount_after_every_batch(tmp_path_factory: pytest.TempPathFactory,
                                                         data: st.DataObject):
    tmp = tmp_path_factory.mktemp("summaries")
    store = Store(tmp / "t.db")
    try:
        for session_label in ("one", "two"):
            session = store.start_session(label=session_label, kind="live", options={}, signature_set_hash=None,
                                          mitmproxy_version=None)
            for batch in data.draw(batches(session)):
                store.write(batch)
                assert_kept_equals_recount(summary_rows(store.conn), recount(store, tmp))
    finally:
        store.close()


def test_a_failed_batch_leaves_the_summaries_as_they_were(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    store.write([FlowRows(flow={"id": "f1", "session_id": 1, "host": "a.example.invalid", "request_size_wire": 5})])
    before = summary_rows(store.conn)
    with pytest.raises(sqlite3.Error):
        store.write([FlowRows(flow={"id": "f1", "session_id": 1, "host": "a.example.invalid"}),
                     Row("connections", {"id": "bad", "kind": {"not": "bindable"}})])
    assert summary_rows(store.conn) == before
    store.close()


def test_replacing_a_flow_moves_its_counts(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    flow = {"id": "f1", "session_id": 1, "host": "a.example.invalid", "request_time": _time(1)}
    store.write([FlowRows(flow=flow, events=[{"flow_id": "f1", "session_id": 1, "position": 0, "name": "E"}])])
    # written again: now to another host, with no events (redecode of a body that no longer decodes)
    store.write([FlowRows(flow={**flow, "host": "b.example.invalid"})])
    assert [tuple(r) for r in store.conn.execute("SELECT host, items FROM summary_endpoints")] == [
        ("b.example.invalid", 1)]
    assert store.conn.execute("SELECT count(*) FROM summary_events").fetchone()[0] == 0
    store.close()


def test_emptied_rows_are_found_through_the_partial_index(tmp_path: Path):
    """Deleting the rows a replacement took to zero must not scan a summary (they reach 400k rows at 1M flows)."""
    from teletap.summaries import _EMPTIED

    store = Store(tmp_path / "t.db")
    for table, statement in zip(SUMMARIES, _EMPTIED, strict=True):
        plan = " ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + statement))
        assert f"idx_{table.name}_emptied" in plan, plan
    store.close()
