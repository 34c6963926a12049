"""`teletap run --ingest-workers 2`: decoding and detection in a process pool, end to end on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from .support import Upstream, child_pids, ingest_process, is_gone, rows, running_teletap

pytestmark = pytest.mark.e2e

FLOWS = 60


def test_a_pool_of_ingest_workers_records_everything_and_leaves_nothing_behind(tmp_path: Path):
    with Upstream() as up, running_teletap(tmp_path, "--ingest-workers", "2", "--session", "pool") as tt:
        ingest = ingest_process(tt.proc.pid)
        workers = child_pids(ingest)
        assert len(workers) == 2  # the pool, forked by the ingest process
        with httpx.Client(proxy=tt.proxy, timeout=10) as client:
            for i in range(FLOWS):
                batch = "\n".join(json.dumps({"name": f"Office.Test.Event{i % 3}", "ver": "4.0",
                                              "time": "2026-01-01T00:00:00.000Z",
                                              "data": {"user": f"user{i}@example.invalid"}}) for _ in range(5))
                r = client.post(f"http://127.0.0.1:{up.port}/OneCollector/1.0/", content=batch.encode(),
                                headers={"content-type": "application/x-json-stream"})
                assert r.status_code == 200
        assert tt.stop() == 0
    assert all(is_gone(pid) for pid in (ingest, *workers))
    (session,) = rows(tt.db, "select options, items_recorded, items_unrecorded, ended from sessions")
    assert json.loads(session["options"])["teletap_ingest_workers"] == 2
    assert session["items_unrecorded"] == 0 and session["ended"]
    assert rows(tt.db, "select count(*) as n, sum(event_count) as events from flows") == [
        {"n": FLOWS, "events": 5 * FLOWS}]
    assert rows(tt.db, "select count(distinct value_hash) as n from findings where kind = 'email'") == [
        {"n": FLOWS}]
    # and the summaries agree with the rows the pool produced
    assert rows(tt.db, "select sum(events) as n from summary_events") == [{"n": 5 * FLOWS}]
