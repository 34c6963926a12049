"""Ingest: the pure pipeline (records → rows) and the worker's queue, batching and failure accounting."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from teletap.decoders import Limits
from teletap.ingest import Ingest
from teletap.pipeline import Pipeline, PipelineConfig
from teletap.records import Body, ConnectionRecord, DnsRecord, HttpFlowRecord, WebSocketMessageRecord
from teletap.signatures import Matcher, SignatureSet
from teletap.store import FlowRows, Row, Store

from .support import child_pids, rows, wait_gone


def flow(body: bytes = b"", *, headers: list[tuple[str, str]] | None = None, host: str = "a.example.invalid",
         path: str = "/", query: str = "", method: str = "POST", fid: str = "f1") -> HttpFlowRecord:
    url = f"https://{host}{path}" + (f"?{query}" if query else "")
    return HttpFlowRecord(
        id=fid, request_time=1_700_000_000.0, response_time=1_700_000_000.5, client_address="127.0.0.1",
        client_port=50000, server_address="127.0.0.1", server_port=443, scheme="https", host=host, port=443,
        method=method, path=path, query=query, url=url, http_version="HTTP/1.1", status=200,
        request_headers=headers or [], response_headers=[("content-type", "application/json")],
        request_body=Body(raw=body, size_wire=len(body)), response_body=Body(raw=b'{"acc":2}', size_wire=9),
    )


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(matcher=Matcher(SignatureSet.load()), limits=Limits(),
                    config=PipelineConfig(max_request_body=64, max_response_body=64))


def ndjson_batch() -> bytes:
    events = [{"name": f"Office.Test.Event{i}", "time": "2026-01-01T00:00:00.000Z", "ver": "4.0",
               "iKey": "o:0123456789abcdef0123456789abcdef", "data": {"n": i}} for i in range(2)]
    return "\n".join(json.dumps(e) for e in events).encode()


def test_telemetry_flow_becomes_flow_and_event_rows(pipeline: Pipeline):
    raw = gzip.compress(ndjson_batch())
    record = flow(raw, headers=[("content-type", "application/x-json-stream"), ("content-encoding", "gzip"),
                                ("client-id", "NO_AUTH"), ("apikey", "0123456789abcdef0123456789abcdef-x")],
                  host="self.events.data.microsoft.com", path="/OneCollector/1.0/")
    item = pipeline.process(record, session_id=7)
    assert isinstance(item, FlowRows)
    f = item.flow
    assert f["session_id"] == 7 and f["decode_format"] == "1ds-json" and f["event_count"] == 2
    assert f["request_size_wire"] == len(raw) and f["request_size"] == len(ndjson_batch())
    assert f["request_body"] == ndjson_batch()[:64] and f["request_body_truncated"] == 1  # decoded, bounded
    assert f["request_content_encoding"] == "gzip"
    assert f["signature_id"] != "undocumented" and f["vendor"] == "Microsoft"
    assert [e["name"] for e in item.events] == ["Office.Test.Event0", "Office.Test.Event1"]
    assert all(e["signature_id"] == f["signature_id"] and e["direction"] == "request" for e in item.events)
    assert json.loads(item.events[1]["data"])["data"]["n"] == 1


def test_unknown_host_is_undocumented_and_plain_get_costs_no_events(pipeline: Pipeline):
    item = pipeline.process(flow(method="GET", host="nowhere.example.invalid"), session_id=1)
    assert item.flow["signature_id"] == "undocumented" and item.flow["category"] is None
    assert item.events == [] and item.flow["decode_error"] is None


def test_undecodable_body_keeps_the_flow_and_records_why(pipeline: Pipeline):
    record = flow(b"\x1f\x8b\x08\x00garbage-that-is-not-gzip",
                  headers=[("content-type", "application/bond-compact-binary"), ("content-encoding", "gzip")],
                  host="self.events.data.microsoft.com", path="/OneCollector/1.0/")
    item = pipeline.process(record, session_id=1)
    assert item.flow["decode_error"] and item.flow["request_sha256"]
    assert item.flow["request_body"]  # the raw body stays for a later attempt


def test_other_records_become_rows(pipeline: Pipeline):
    conn = pipeline.process(ConnectionRecord(id="c", kind="tls-failed-client", started=1.0, ended=2.0,
                                             client_address="127.0.0.1", client_port=1, server_address=None,
                                             server_port=443, sni="self.events.data.microsoft.com",
                                             reason="unknown ca"), 1)
    assert isinstance(conn, Row) and conn.values["observable"] == 0 and conn.values["signature_id"] != "undocumented"
    ws = pipeline.process(WebSocketMessageRecord("f", 1.0, True, True, 100, b"x" * 100), 1)
    assert ws.values["direction"] == "client-to-server" and ws.values["truncated"] == 0
    dns = pipeline.process(DnsRecord("d", 1.0, "10.0.0.2", "nowhere.example.invalid", "A", ["A 192.0.2.1"],
                                     "NOERROR"), 1)
    assert dns.values["signature_id"] == "undocumented" and json.loads(dns.values["answers"]) == ["A 192.0.2.1"]


def test_ingest_writes_in_batches_and_closes_the_session(tmp_path: Path, pipeline: Pipeline):
    db = tmp_path / "t.db"
    ingest = Ingest(db, pipeline, session_label="unit")
    sid = ingest.start()
    for i in range(120):
        ingest.submit(flow(b"{}", headers=[("content-type", "application/json")], fid=f"f{i}"))
    time.sleep(1.2)  # committed within a second, before stop()
    assert rows(db, "select count(*) as n from flows")[0]["n"] == 120
    stats = ingest.stop()
    assert stats.recorded == 120 and stats.unrecorded_total == 0
    (session,) = rows(db, "select * from sessions")
    assert session["id"] == sid and session["ended"] and session["items_recorded"] == 120


class GatedPipeline(Pipeline):
    """A pipeline that stalls until released: ingest as slow as a machine under load can make it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def process(self, record, session_id):  # type: ignore[override]
        self.gate.wait()
        return super().process(record, session_id)


def test_full_queue_is_counted_never_blocking_never_silent(tmp_path: Path, caplog):
    db = tmp_path / "t.db"
    pipeline = GatedPipeline()
    ingest = Ingest(db, pipeline, session_label="stalled", queue_size=5)
    ingest.start()
    started = time.monotonic()
    for i in range(50):
        ingest.submit(flow(fid=f"f{i}", method="GET"))
    assert time.monotonic() - started < 0.5  # submit never waits for the stalled worker
    pipeline.gate.set()
    stats = ingest.stop()
    # The worker may have taken one item before stalling; the queue held 5 more.
    assert stats.recorded in (5, 6) and stats.unrecorded["ingest queue full"] == 50 - stats.recorded
    (session,) = rows(db, "select * from sessions")
    assert session["items_unrecorded"] == 50 - stats.recorded
    assert json.loads(session["unrecorded_reasons"]) == {"ingest queue full": 50 - stats.recorded}
    assert "ingest queue full" in caplog.text


def test_disk_full_is_counted_and_ingest_keeps_going(tmp_path: Path, pipeline: Pipeline, caplog):
    db = tmp_path / "t.db"

    def tiny_store(path: Path) -> Store:
        store = Store(path)
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages + 3}")  # a real SQLITE_FULL soon
        return store

    ingest = Ingest(db, pipeline, session_label="disk full", store_factory=tiny_store, batch_size=10)
    ingest.start()
    for i in range(300):
        ingest.submit(flow(b"y" * 4000, headers=[("content-type", "text/plain")], fid=f"f{i}"))
    stats = ingest.stop()
    assert stats.unrecorded_total > 0 and stats.recorded + stats.unrecorded_total == 300
    assert any("full" in reason for reason in stats.unrecorded)
    assert "not recorded" in caplog.text and "traffic is unaffected" in caplog.text
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_batches_are_bounded_by_stored_bytes(tmp_path: Path, pipeline: Pipeline):
    batches: list[int] = []

    class RecordingStore(Store):
        def write(self, items):  # type: ignore[override]
            batches.append(len(items))
            super().write(items)

    big = Pipeline(limits=Limits(), config=PipelineConfig(max_request_body=1024 * 1024))
    ingest = Ingest(tmp_path / "t.db", big, session_label="big bodies", store_factory=RecordingStore,
                    batch_bytes=3 * 1024 * 1024, flush_interval=30)
    ingest.start()
    for i in range(10):
        ingest.submit(flow(b"z" * 1024 * 1024, headers=[("content-type", "application/octet-stream")], fid=f"b{i}"))
    stats = ingest.stop()
    assert stats.recorded == 10
    assert max(batches) <= 3 and sum(batches) == 10  # never more than ~3 MiB of bodies held at once


def test_process_ingest_counts_every_item_across_the_process_boundary(tmp_path: Path):
    from teletap.ingest import ProcessIngest

    db = tmp_path / "p.db"
    ingest = ProcessIngest(db, dict(findings_key=b"k" * 32), queue_size=2, session_label="process")
    session_id = ingest.start()
    for i in range(3000):  # far faster than the worker drains a 2-item queue
        ingest.submit(flow(b"{}", headers=[("content-type", "application/json")], fid=f"p{i}"))
    stats = ingest.stop()
    dropped = stats.unrecorded["ingest queue full"]
    assert dropped > 0 and stats.recorded + dropped == 3000
    (session,) = rows(db, "select * from sessions")
    assert session["id"] == session_id and session["ended"]
    assert session["items_recorded"] == stats.recorded and session["items_unrecorded"] == dropped
    assert rows(db, "select count(*) as n from flows") == [{"n": stats.recorded}]
    assert ingest._inflight.value == 0  # the worker gave back every byte it took


def test_capture_failures_are_counted_as_unrecorded(tmp_path: Path, pipeline: Pipeline):
    from teletap.records import CaptureFailure

    db = tmp_path / "t.db"
    ingest = Ingest(db, pipeline, session_label="bug")
    ingest.start()
    ingest.submit(CaptureFailure(hook="response", error="KeyError: 'x'"))
    ingest.submit(flow(method="GET"))
    stats = ingest.stop()
    assert stats.recorded == 1 and stats.unrecorded == {"capture failed in response: KeyError: 'x'": 1}
    assert rows(db, "select items_unrecorded from sessions") == [{"items_unrecorded": 1}]


def test_one_unstorable_item_does_not_cost_its_batch(tmp_path: Path, pipeline: Pipeline):
    class PickyStore(Store):
        """A real store that refuses one flow's value, as SQLite refuses a value it cannot bind."""

        def write(self, items):  # type: ignore[override]
            if any(getattr(item, "flow", {}).get("id") == "bad" for item in items):
                raise sqlite3.InterfaceError("Error binding parameter 1: type 'object' is not supported")
            super().write(items)

    ingest = Ingest(tmp_path / "t.db", pipeline, session_label="picky", store_factory=PickyStore, flush_interval=30)
    ingest.start()
    for fid in ("a", "bad", "b", "c"):
        ingest.submit(flow(method="GET", fid=fid))
    stats = ingest.stop()
    assert stats.recorded == 3 and stats.unrecorded_total == 1
    assert {r["id"] for r in rows(tmp_path / "t.db", "select id from flows")} == {"a", "b", "c"}


def test_process_queue_is_bounded_in_bytes(tmp_path: Path):
    """Nothing drains the queue here: what fits in queue_bytes is queued, the rest is counted, not held."""
    import multiprocessing

    from teletap.ingest import ProcessIngest

    mp = multiprocessing.get_context("spawn")
    front = ProcessIngest(tmp_path / "unused.db", {}, queue_size=10_000, queue_bytes=1024 * 1024)
    front.queue, front._dropped, front._inflight = mp.Queue(maxsize=100), mp.Value("q", 0, lock=False), mp.Value("q", 0)
    body = b"b" * 200 * 1024
    for i in range(10):  # off an event loop, every record is sent at once
        front.submit(flow(body, fid=f"big{i}"))
    assert front._dropped.value == 5  # five 200 KB bodies fit in 1 MiB, the other five are counted
    queued = [front.queue.get(timeout=5) for _ in range(5)]
    assert [r.id for batch in queued for r in batch] == [f"big{i}" for i in range(5)]
    assert front._inflight.value == 5 * (200 * 1024 + 512 + 9)  # bodies (+ the 9-byte response) in flight
    front.queue.close()
    front.queue.join_thread()


def test_a_worker_pool_keeps_the_order_of_versions_and_counts_failures(tmp_path: Path, pipeline: Pipeline):
    """--ingest-workers: records are processed in a real process pool; rows come back in arrival order."""
    import dataclasses

    from teletap.pool import make_pool

    pool = make_pool(pipeline, 2)
    assert pool is not None
    db = tmp_path / "pool.db"
    ingest = Ingest(db, pipeline, session_label="pool", pool=pool, pool_workers=2, flush_interval=0.05)
    try:
        ingest.start()
        answered = flow(b"{}", fid="twice")
        # The first version rides in a slow batch, the later one alone in a quick batch that the second
        # worker finishes first: only collecting in arrival order writes the later version last.
        slow_body = json.dumps({f"k{i}": f"user{i}@example.invalid {i}" for i in range(3000)}).encode()
        slow = [flow(slow_body, headers=[("content-type", "application/json")], fid=f"slow{i}") for i in range(30)]
        ingest.submit([answered, "not a record", *slow])  # type: ignore[list-item]  # process() raises TypeError
        ingest.submit([dataclasses.replace(answered, status=None, error="connection reset")])  # the later version
        for i in range(400):
            ingest.submit([flow(b'{"n": %d}' % i, headers=[("content-type", "application/json")], fid=f"f{i}")])
        stats = ingest.stop()
    finally:
        pool.shutdown()
    # 432 items written (both versions of "twice"), 431 rows: the later version replaced the earlier
    assert stats.recorded == 432 and stats.unrecorded == {"ingest error: TypeError": 1}
    assert rows(db, "select status, error from flows where id = 'twice'") == [{"status": None,
                                                                              "error": "connection reset"}]
    assert rows(db, "select count(*) as n from flows") == [{"n": 431}]
    (session,) = rows(db, "select items_recorded, items_unrecorded, ended from sessions")
    assert session["items_recorded"] == 432 and session["items_unrecorded"] == 1 and session["ended"]


def test_ingest_process_with_workers_leaves_no_process_behind_when_killed(tmp_path: Path):
    """kill -9 of the ingest process: its pool workers die with it (PR_SET_PDEATHSIG), none is orphaned."""
    import os
    import signal

    from teletap.ingest import ProcessIngest

    ingest = ProcessIngest(tmp_path / "k.db", dict(findings_key=b"k" * 32), workers=2, session_label="kill")
    ingest.start()
    pid = ingest._process.pid
    children = child_pids(pid)
    assert len(children) >= 2  # the pool's workers
    os.kill(pid, signal.SIGKILL)
    ingest._process.join(10)
    assert wait_gone(children, 10)
