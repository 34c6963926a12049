"""teletap serve: a real Datasette process on the live database."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from teletap.store import FlowRows, Row, Store

from .support import LOOPBACK, free_port, teletap_command, wait_for_port

pytestmark = pytest.mark.e2e


def _fill(db: Path) -> None:
    store = Store(db)
    sid = store.start_session(label="serve test", kind="live", options={}, signature_set_hash=None,
                              mitmproxy_version=None)
    store.write([
        FlowRows(flow={"id": f"f{i}", "session_id": sid, "host": host, "request_time": f"2026-01-01T00:00:0{i}.000Z",
                       "request_size_wire": 10, "signature_id": "undocumented"})
        for i, host in enumerate(["a.example.invalid", "a.example.invalid", "b.example.invalid"])
    ] + [Row("connections", {"id": "c1", "session_id": sid, "kind": "tls-failed-client", "observable": 0,
                             "sni": "pinned.example.invalid", "reason": "unknown ca", "started": "2026-01-01"})])
    store.close()


def test_serve_answers_table_and_canned_query_json(tmp_path: Path):
    db = tmp_path / "evidence.db"  # not teletap.db: the metadata must follow the file's name
    _fill(db)
    port = free_port()
    proc = subprocess.Popen(teletap_command("serve", "--db", str(db), "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc=proc)
        base = f"http://{LOOPBACK}:{port}/evidence"
        flows = httpx.get(f"{base}/flows.json?_shape=array", timeout=10).json()
        assert sorted(f["host"] for f in flows) == ["a.example.invalid", "a.example.invalid", "b.example.invalid"]
        hosts = httpx.get(f"{base}/hosts_by_flows.json?_shape=array&session=", timeout=10).json()
        assert [(h["host"], h["flows"]) for h in hosts] == [("a.example.invalid", 2), ("b.example.invalid", 1)]
        blind = httpx.get(f"{base}/not_observable.json?_shape=array&session=1", timeout=10).json()
        assert [(b["sni"], b["connections"]) for b in blind] == [("pinned.example.invalid", 1)]
        page = httpx.get(f"{base}/flows", timeout=10).text
        assert "Every HTTP(S) request that passed through the proxy" in page  # metadata applied
        # the DB is live, not immutable: rows written now are visible at once
        store = Store(db)
        store.write([FlowRows(flow={"id": "late", "session_id": 1, "host": "c.example.invalid"})])
        store.close()
        count = httpx.get(f"{base}.json?sql=select+count(*)+as+n+from+flows&_shape=array", timeout=10).json()
        assert count == [{"n": 4}]
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_leaves_no_metadata_file_behind(tmp_path: Path):
    """The metadata file (it may hold the login's password hash) is gone once Datasette has started,
    so even SIGTERM, after which uvicorn ends the process without running any cleanup, leaves none."""
    db, temp = tmp_path / "evidence.db", tmp_path / "temp"
    temp.mkdir()
    _fill(db)
    port = free_port()
    proc = subprocess.Popen(teletap_command("serve", "--db", str(db), "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(temp)})
    try:
        wait_for_port(port, proc=proc)
        page = httpx.get(f"http://{LOOPBACK}:{port}/evidence/flows", timeout=10).text
        assert "Every HTTP(S) request that passed through the proxy" in page  # the metadata was read
        assert list(temp.iterdir()) == []
    finally:
        proc.terminate()
        proc.wait(10)
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_serve_refuses_non_loopback_addresses(tmp_path: Path, host: str):
    result = subprocess.run(teletap_command("serve", "--db", str(tmp_path / "t.db"), "--host", host),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to serve the evidence" in result.stderr and "loopback" in result.stderr
