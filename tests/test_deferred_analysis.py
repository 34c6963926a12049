"""Deferred analysis: when ingest falls behind, flows are stored first and analysed when it catches up.

The bar: nothing that fits the queue is lost for lack of CPU, and a flow analysed later has exactly the
rows live analysis would have given it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teletap.ingest import Ingest
from teletap.pipeline import Pipeline, PipelineConfig, build_pipeline
from teletap.records import Body, HttpFlowRecord
from teletap.redecode import redecode
from teletap.store import FlowRows, Store

from .support import rows, teletap_command

EMAIL = "jane.doe@example.invalid"
DEVICE = "s:0A1B2C3D-0000-4000-8000-00000000F00D"


def telemetry(fid: str, n: int = 3) -> HttpFlowRecord:
    """A gzip 1DS JSON batch naming its content-encoding in a header, with personal data in its events."""
    events = [{"name": f"Office.Deferred.Event{i}", "time": "2026-11-25T10:00:00.000Z", "ver": "4.0",
               "iKey": "o:0123456789abcdef0123456789abcdef", "ext": {"device": {"localId": DEVICE}},
               "data": {"user": EMAIL, "n": i}} for i in range(n)]
    raw = gzip.compress("\n".join(json.dumps(e) for e in events).encode())
    url = "https://self.events.data.microsoft.com/OneCollector/1.0/?cors=true"
    return HttpFlowRecord(
        id=fid, request_time=1_764_064_800.0, response_time=1_764_064_800.2, client_address="127.0.0.1",
        client_port=50001, server_address="127.0.0.1", server_port=443, scheme="https",
        host="self.events.data.microsoft.com", port=443, method="POST", path="/OneCollector/1.0/",
        query="cors=true", url=url, http_version="HTTP/1.1", status=200,
        request_headers=[("Content-Type", "application/x-json-stream"), ("Content-Encoding", "gzip"),
                         ("Client-Id", "NO_AUTH")],
        response_headers=[("Content-Type", "application/json")],
        request_body=Body(raw=raw, size_wire=len(raw)), response_body=Body(raw=b'{"acc":3}', size_wire=9),
    )


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return build_pipeline(findings_key=b"\x02" * 32)[0]


def table(db: Path, name: str, order: str) -> list[dict]:
    out = rows(db, f"select * from {name} order by {order}")
    for row in out:
        row.pop("id" if name != "flows" else "session_id", None)
    return out


def test_a_deferred_flow_is_analysed_exactly_as_live(tmp_path: Path, pipeline: Pipeline):
    record = telemetry("f1")
    live, later = tmp_path / "live.db", tmp_path / "later.db"
    store = Store(live)
    store.write([pipeline.process(record, 1)])
    store.close()

    deferred = pipeline.defer(record, 1)
    assert isinstance(deferred, FlowRows) and not deferred.events and not deferred.findings
    flow = deferred.flow
    # stored as captured: the body as sent (its hash is the evidence hash), nothing claimed about content
    assert flow["analysis"] == "deferred" and flow["request_body"] == record.request_body.raw
    assert flow.get("event_count") is None and flow.get("finding_count") is None and flow.get("decode_format") is None
    assert flow["signature_id"] != "undocumented"  # matching is cheap and is not deferred
    store = Store(later)
    store.write([deferred])
    store.close()
    assert rows(later, "select analysis from flows") == [{"analysis": "deferred"}]

    assert redecode(later, pipeline, deferred_only=True) == 1
    assert table(later, "flows", "id") == table(live, "flows", "id")
    assert table(later, "events", "position") == table(live, "events", "position")
    assert table(later, "findings", "location, kind") == table(live, "findings", "location, kind")
    assert rows(later, "select count(*) as n from findings where kind = 'email'")[0]["n"] >= 1


class GatedPipeline(Pipeline):
    """The real pipeline, whose first analysis waits for a gate: ingest stuck behind a slow batch."""

    def __init__(self, inner: Pipeline) -> None:
        super().__init__(matcher=inner.matcher, catalogue=inner.catalogue, findings=inner.findings,
                         limits=inner.limits, config=inner.config)
        self.gate = threading.Event()

    def process(self, record, session_id):  # type: ignore[override]
        self.gate.wait()
        return super().process(record, session_id)


def wait_for(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_behind_ingest_stores_first_and_catches_up_when_idle(tmp_path: Path, pipeline: Pipeline, caplog):
    db = tmp_path / "t.db"
    gated = GatedPipeline(pipeline)
    ingest = Ingest(db, gated, session_label="behind", queue_size=40)
    ingest.start()
    for i in range(40):  # the first is taken and stalls; the queue holds the rest, none is refused
        ingest.submit(telemetry(f"f{i:02}"))
    gated.gate.set()
    # Deferred flows are stored, then analysed once the queue is empty: no flow is left unanalysed
    assert wait_for(lambda: rows(db, "select count(*) as n from flows where analysis is null")[0]["n"] == 40)
    stats = ingest.stop()
    assert stats.unrecorded_total == 0 and stats.recorded == 40
    assert stats.deferred >= 20  # 39 waited behind the stalled one; deferral stops below a quarter full
    assert stats.analysed_later == stats.deferred and stats.awaiting_analysis == 0
    assert "stored first" in caplog.text
    per_flow = len(pipeline.process(telemetry("x"), 1).events)  # type: ignore[union-attr]
    assert per_flow == 4  # three events and the query string
    assert rows(db, "select count(*) as n from events") == [{"n": 40 * per_flow}]
    assert rows(db, "select count(distinct flow_id) as n from findings where kind = 'email'") == [{"n": 40}]
    # the summaries count every event once, whichever way its flow was analysed
    assert rows(db, "select sum(events) as n from summary_endpoints") == [{"n": 40 * per_flow}]


def test_with_deferral_off_a_behind_ingest_analyses_everything_first(tmp_path: Path, pipeline: Pipeline):
    db = tmp_path / "t.db"
    gated = GatedPipeline(pipeline)
    ingest = Ingest(db, gated, session_label="off", queue_size=40, defer_analysis=False)
    ingest.start()
    for i in range(40):
        ingest.submit(telemetry(f"f{i:02}"))
    gated.gate.set()
    stats = ingest.stop()
    assert stats.deferred == 0 and stats.recorded == 40
    assert rows(db, "select count(*) as n from flows where analysis is not null") == [{"n": 0}]


def test_bodies_to_be_blanked_are_never_stored_before_analysis(pipeline: Pipeline):
    blanking = Pipeline(matcher=pipeline.matcher, findings=pipeline.findings, limits=pipeline.limits,
                        config=PipelineConfig(blank_findings_in_bodies=True))
    assert blanking.defer(telemetry("f1"), 1) is None
    # nor what the store would cut short: analysis later must see what live analysis sees
    small = Pipeline(matcher=pipeline.matcher, config=PipelineConfig(max_request_body=16))
    assert small.defer(telemetry("f1"), 1) is None
    assert pipeline.defer(telemetry("f1"), 1) is not None


def test_the_next_run_analyses_what_an_earlier_run_left_deferred(tmp_path: Path, pipeline: Pipeline):
    """A kill -9 or a stop under load leaves deferred flows; the next session completes them in their own."""
    db = tmp_path / "t.db"
    store = Store(db)
    earlier = store.start_session(label="killed", kind="live", options={}, signature_set_hash=None,
                                  mitmproxy_version=None)
    store.write([pipeline.defer(telemetry(f"old{i}"), earlier) for i in range(5)])
    store.close()
    ingest = Ingest(db, pipeline, session_label="next")
    ingest.start()
    assert wait_for(lambda: rows(db, "select count(*) as n from flows where analysis is null")[0]["n"] == 5)
    stats = ingest.stop()
    assert stats.analysed_later == 5 and stats.awaiting_analysis == 0
    assert rows(db, "select distinct session_id from events") == [{"session_id": earlier}]
    assert rows(db, "select count(*) as n from events") == [{"n": 5 * 4}]


def test_with_a_worker_pool_the_catch_up_runs_in_the_pool_and_keeps_the_order_of_versions(tmp_path: Path,
                                                                                        pipeline: Pipeline):
    """--ingest-workers: deferred flows are analysed by the pool's processes, and a newer version of a flow
    that arrives meanwhile is still the one stored."""
    import dataclasses

    from teletap.pool import make_pool

    db = tmp_path / "t.db"
    store = Store(db)
    earlier = store.start_session(label="killed", kind="live", options={}, signature_set_hash=None,
                                  mitmproxy_version=None)
    store.write([pipeline.defer(telemetry(f"old{i:03}"), earlier) for i in range(150)])  # type: ignore[misc]
    store.close()
    pool = make_pool(pipeline, 2)
    assert pool is not None

    class PoolOnly(Pipeline):
        """Ingest's own pipeline: analysing here instead of in the pool would fail the test."""

        def process(self, record, session_id):  # type: ignore[override]
            raise AssertionError("analysed in the ingest process, not in the pool")

    here = PoolOnly(matcher=pipeline.matcher, config=pipeline.config)
    ingest = Ingest(db, here, session_label="next", pool=pool, pool_workers=2, flush_interval=0.05)
    try:
        ingest.start()
        # the flow a catch-up batch is analysing is answered again, with an error this time: the later version
        ingest.submit(dataclasses.replace(telemetry("old149"), status=None, error="connection reset"))
        assert wait_for(lambda: rows(db, "select count(*) as n from flows where analysis is null")[0]["n"] == 150)
        stats = ingest.stop()
    finally:
        pool.shutdown()
    assert stats.analysed_later in (149, 150) and stats.awaiting_analysis == 0 and stats.recorded == 1
    assert rows(db, "select status, error from flows where id = 'old149'") == [
        {"status": None, "error": "connection reset"}]
    assert rows(db, "select count(*) as n from events") == [{"n": 150 * 4}]


def test_a_session_recorded_with_other_settings_keeps_its_deferred_flows_for_redecode(tmp_path: Path,
                                                                                   pipeline: Pipeline):
    """A session row says which signatures and options analysed its flows: a run with other ones must not
    analyse them behind its back. They wait for an explicit `teletap redecode --deferred`."""
    db = tmp_path / "t.db"
    store = Store(db)
    options = {"teletap_identifiers": "/etc/teletap/ids.csv", "teletap_session": "old"}
    same = store.start_session(label="same", kind="live", options=options, signature_set_hash="s1",
                               mitmproxy_version=None)
    other_sigs = store.start_session(label="other signatures", kind="live", options=options,
                                     signature_set_hash="s0", mitmproxy_version=None)
    other_ids = store.start_session(label="other identifiers", kind="live", signature_set_hash="s1",
                                    options={**options, "teletap_identifiers": ""}, mitmproxy_version=None)
    store.write([pipeline.defer(telemetry(f"flow{s}"), s) for s in (same, other_sigs, other_ids)])  # type: ignore[misc]
    store.close()
    ingest = Ingest(db, pipeline, session_label="next", signature_set_hash="s1",
                    session_options={**options, "teletap_session": "new label, same analysis"},
                    analysis_options=("teletap_identifiers", "teletap_max_body"))
    ingest.start()
    assert wait_for(lambda: rows(db, "select analysis from flows where id = ?", (f"flow{same}",))
                    == [{"analysis": None}])
    stats = ingest.stop()
    assert stats.analysed_later == 1 and stats.awaiting_analysis == 2
    assert rows(db, "select id from flows where analysis = 'deferred' order by id") == [
        {"id": f"flow{other_sigs}"}, {"id": f"flow{other_ids}"}]


def test_redecode_deferred_touches_only_deferred_flows(tmp_path: Path, pipeline: Pipeline):
    db = tmp_path / "t.db"
    store = Store(db)
    store.write([pipeline.process(telemetry("analysed"), 1), pipeline.defer(telemetry("waiting"), 1)])
    store.conn.execute("delete from events where flow_id = 'analysed'")  # so a rewrite of it would show
    store.close()
    (tmp_path / "t.db.findings-key").write_text("02" * 32)
    out = subprocess.run(teletap_command("redecode", "--deferred", "--db", str(db)), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "redecoded 1 flow(s)" in out.stdout
    assert rows(db, "select flow_id, count(*) as n from events group by flow_id") == [{"flow_id": "waiting", "n": 4}]
    assert rows(db, "select count(*) as n from flows where analysis is not null") == [{"n": 0}]


def test_the_report_says_how_many_flows_are_not_yet_analysed(tmp_path: Path, pipeline: Pipeline):
    from teletap.report import ReportOptions, build_report, render
    from teletap.report.scope import Scope
    from teletap.store import connect

    db = tmp_path / "t.db"
    store = Store(db)
    session = store.start_session(label="behind", kind="live", options={}, signature_set_hash=None,
                                  mitmproxy_version=None)
    store.write([pipeline.process(telemetry("analysed"), session),
                 *(pipeline.defer(telemetry(f"waiting{i}"), session) for i in range(2))])  # type: ignore[misc]
    store.close()
    conn = connect(db, readonly=True)
    try:
        report = build_report(conn, ReportOptions(scope=Scope(sessions=(session,)),
                                                  generated_at="2026-11-25T12:00:00Z"))
    finally:
        conn.close()
    label = "flows stored but not yet decoded or scanned for personal data (analysis deferred)"
    assert {r["figure"]: r["value"] for r in report.table("key-figures").records()}[label] == 2
    assert {r["figure"]: r["value"] for r in report.table("partial-evidence").records()}[label] == 2
    assert report.section("blind-spots").facts["not_analysed"] == 2
    assert "teletap redecode --deferred" in render(report, "md").decode()


def test_a_real_proxy_whose_ingest_was_frozen_loses_nothing_and_analyses_everything(tmp_path: Path):
    """`teletap run` end to end: its ingest process stopped (SIGSTOP, as a machine too busy to give it CPU)
    while 1DS batches pass; once it runs again it stores the backlog first, then analyses every flow."""
    import os
    import signal

    import httpx

    from .support import LOOPBACK, Upstream, ingest_process, running_teletap

    body = telemetry("x").request_body.raw
    headers = {"host": "self.events.data.microsoft.com", "content-type": "application/x-json-stream",
               "content-encoding": "gzip", "client-id": "NO_AUTH"}
    # One request at a time: each record crosses to ingest in a batch of its own. 400 batches fit the queue,
    # 300 fill three quarters of it.
    with Upstream() as up, running_teletap(tmp_path, "--set", f"teletap_queue_size={64 * 400}") as tt:
        worker = ingest_process(tt.proc.pid)
        os.kill(worker, signal.SIGSTOP)
        try:
            with httpx.Client(proxy=tt.proxy, timeout=10) as client:
                for i in range(300):
                    r = client.post(f"http://{LOOPBACK}:{up.port}/OneCollector/1.0/?cors=true&n={i}",
                                    content=body, headers=headers)
                    assert r.status_code == 200  # traffic flows while ingest is frozen
        finally:
            os.kill(worker, signal.SIGCONT)
        assert wait_for(lambda: rows(tt.db, "select count(*) as n from flows where analysis is null")[0]["n"] == 300,
                        timeout=120)
        assert tt.stop() == 0
    # three events and the query string in each
    assert rows(tt.db, "select event_count, count(*) as n from flows group by event_count") == [
        {"event_count": 4, "n": 300}]
    out = tt.output()
    assert "NOT recorded" not in out and "stored first" in out and "not yet decoded" not in out
    assert rows(tt.db, "select items_recorded, items_unrecorded from sessions") == [
        {"items_recorded": 300, "items_unrecorded": 0}]
    assert rows(tt.db, "select count(distinct flow_id) as n from findings where kind = 'email'") == [{"n": 300}]


def test_export_gives_a_deferred_flow_its_decoded_body_and_a_reimport_analyses_it(tmp_path: Path,
                                                                                  pipeline: Pipeline):
    """HAR holds bodies with content-encoding removed; a deferred flow still holds its body as sent."""
    db, har, again = tmp_path / "t.db", tmp_path / "t.har", tmp_path / "again.db"
    store = Store(db)
    record = telemetry("waiting")
    store.write([pipeline.defer(record, 1)])  # type: ignore[list-item]
    store.close()
    out = subprocess.run(teletap_command("export", "har", "--db", str(db), "--out", str(har)), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(har.read_text())["log"]["entries"]
    assert entry["request"]["postData"]["text"] == gzip.decompress(record.request_body.raw).decode()
    assert entry["_teletap"]["analysis"] == "deferred"
    assert entry["_teletap"]["request_sha256"] == rows(db, "select request_sha256 from flows")[0]["request_sha256"]
    out = subprocess.run(teletap_command("import", str(har), "--db", str(again)), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert rows(again, "select analysis, event_count from flows") == [{"analysis": None, "event_count": 4}]


# -- property: for any flow, analysis later gives the rows analysis now would have given ----------------------

_EVENTS = [b'{"name":"Office.A","time":"2026-11-25T10:00:00Z","iKey":"o:1","data":{"user":"jane.doe@example.invalid"}}',
           b'{"name":"Office.B","ver":"4.0","ext":{"device":{"localId":"s:0A1B2C3D-0000-4000-8000-00000000F00D"}}}',
           b'{"baseType":"EventData","baseData":{"name":"x","properties":{"mail":"bob@example.invalid"}}}',
           b"not json at all \x00\xff", b"", b"\x1f\x8b\x08\x00broken gzip"]


def _encode(data: bytes, encoding: str) -> bytes:
    import zlib

    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "deflate":
        return zlib.compress(data)[2:-4]  # raw deflate, as 1DS C++ sends it
    return data


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("property") / "t.db")
    yield store
    store.close()


def _row(store: Store, item: FlowRows) -> dict:
    store.write([item])
    (row,) = store.conn.execute("SELECT * FROM flows WHERE id = ?", (item.flow["id"],)).fetchall()
    return dict(row)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.sampled_from(_EVENTS), min_size=0, max_size=4), garbage=st.binary(max_size=64),
       encoding=st.sampled_from(["gzip", "deflate", "", "gzip"]), label=st.booleans(),
       path=st.sampled_from(["/OneCollector/1.0/", "/v2/track", "/api/upload"]),
       query=st.sampled_from(["", "cors=true&content-encoding=gzip", "apikey=k&w=1",
                              "user=jane.doe%40example.invalid"]),
       ctype=st.sampled_from(["application/x-json-stream", "application/json", "application/octet-stream", ""]),
       request_ms=st.integers(0, 10**6), duration_us=st.integers(0, 10**7))
def test_analysis_later_equals_analysis_now(scratch: Store, pipeline: Pipeline, lines, garbage, encoding, label,
                                            path, query, ctype, request_ms, duration_us):
    from hypothesis import assume

    from teletap.redecode import reanalyse

    raw = _encode(b"\n".join(lines) + garbage, encoding)
    headers = [("Content-Type", ctype)] if ctype else []
    if encoding and label:
        headers.append(("Content-Encoding", encoding))
    start = 1_764_064_800 + request_ms / 1000 + 0.0004  # not whole milliseconds, as clocks are
    url = f"https://self.events.data.microsoft.com{path}" + (f"?{query}" if query else "")
    record = HttpFlowRecord(
        id=f"p{request_ms}-{duration_us}", request_time=start, response_time=start + duration_us / 1e6,
        client_address="127.0.0.1", client_port=50001, server_address="127.0.0.1", server_port=443, scheme="https",
        host="self.events.data.microsoft.com", port=443, method="POST", path=path, query=query, url=url,
        http_version="HTTP/1.1", status=200, request_headers=headers, response_headers=[("Content-Encoding", "gzip")],
        request_body=Body(raw=raw, size_wire=len(raw)),
        response_body=Body(raw=gzip.compress(b'{"acc":1}'), size_wire=29))
    deferred = pipeline.defer(record, 1)
    assume(deferred is not None)
    now = pipeline.process(record, 1)
    (later,) = reanalyse(pipeline, [_row(scratch, deferred)])
    assert isinstance(now, FlowRows) and isinstance(later, FlowRows)
    assert later.flow == now.flow
    assert later.events == now.events
    assert later.findings == now.findings
