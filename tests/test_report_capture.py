"""The evidence the report tests share: two real ``teletap run`` sessions recorded into one database.

Not a test module itself (it holds no tests): the ``test_report_*`` modules call ``capture()``, which runs
the captures once per test session. Clients talk to a loopback upstream through teletap's reverse-proxy
mode with the Host header kept, so flows carry the documented host names (mobile.events.data.microsoft.com,
www.google-analytics.com, …) without any traffic leaving 127.0.0.1. Identities are invented.

Session 1, "baseline": Office default settings. Session 2, "after": diagnostic data set to Neither and the
analytics tracker blocked; one new undocumented host appears.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

from .support import LOOPBACK, Upstream, free_port, running_teletap

__all__ = ["LOOPBACK"]

# A label with characters that must not break HTML or Markdown.
BASELINE = "baseline, Office default settings <defaults> | run 1"
AFTER = "after: diagnostic data Neither, analytics blocked"
GENERATED_AT = "2026-11-25T13:00:00Z"

ESSENTIAL_EVENT = "Office.ClickToRun.UpdateStatus"  # on Microsoft's essential-services list
REQUIRED_EVENT = "Office.CorrelationMetadata.UTCCorrelationMetadata"  # required diagnostic data only
UNLISTED_EVENT = "Office.Teletap.Probe.Unlisted"  # on no list
QUERY_EMAIL = "dave@example.invalid"  # only ever in a query string: must never appear in a report


@dataclass
class Capture:
    db: Path
    baseline: int
    after: int
    outputs: list[str]


def _ndjson(names: list[str]) -> bytes:
    events = [{"name": n, "time": "2026-11-25T10:00:00.000Z", "ver": "4.0",
               "iKey": "o:0123456789abcdef0123456789abcdef",
               "ext": {"app": {"id": "Word", "ver": "16.0.17928.20156"}, "os": {"name": "Windows", "ver": "10.0"}},
               "data": {"n": i}} for i, n in enumerate(names)]
    return "\n".join(json.dumps(e) for e in events).encode()


def _appinsights(properties: dict[str, str]) -> list[dict]:
    return [{"name": "Microsoft.ApplicationInsights.Event", "time": "2026-11-25T10:00:01.000Z",
             "iKey": "00000000-0000-4000-8000-000000000001",
             "data": {"baseType": "EventData", "baseData": {"ver": 2, "name": "TeletapProbe",
                                                            "properties": properties}}}]


def _refused_tls(proxy: str, port: int) -> None:
    """A client that does not trust teletap's CA, like a pinned app: its payload is not observable."""
    with httpx.Client(proxy=proxy, verify=True, timeout=10) as client, pytest.raises(httpx.ConnectError):
        client.get(f"https://localhost:{port}/pinned")


def _run_session(tmp: Path, db: Path, label: str, traffic, upstream: Upstream, secure: Upstream,
                 ws_port: int | None = None) -> str:
    reverse = free_port()
    with running_teletap(tmp, "--session", label, "--mode", "regular",
                         "--mode", f"reverse:http://{LOOPBACK}:{upstream.port}@{reverse}",
                         "--set", "keep_host_header=true", db=db) as tt:
        with httpx.Client(base_url=f"http://{LOOPBACK}:{reverse}", timeout=10) as client:
            traffic(client)
        _refused_tls(tt.proxy, secure.port)
        if ws_port is not None:  # a WebSocket exchange through the regular proxy
            with ws_connect(f"ws://{LOOPBACK}:{ws_port}/socket", proxy=tt.proxy) as ws:
                for message in ("hello", "status"):
                    ws.send(message)
                    assert ws.recv(timeout=10) == f"echo:{message}"
        assert tt.stop() == 0, tt.output()
        return tt.output()


def baseline_traffic(client: httpx.Client) -> None:
    r = client.post("/OneCollector/1.0/", content=gzip.compress(_ndjson([ESSENTIAL_EVENT, REQUIRED_EVENT,
                                                                          UNLISTED_EVENT])),
                    headers={"host": "mobile.events.data.microsoft.com", "content-type": "application/x-json-stream",
                             "content-encoding": "gzip"})
    assert r.status_code == 200
    r = client.post("/v2/track", json=_appinsights({"user": "alice@example.invalid"}),
                    headers={"host": "dc.services.visualstudio.com"})
    assert r.status_code == 200
    r = client.post("/collect", json={"email": "bob@example.invalid", "page": "/inbox"},
                    headers={"host": "www.google-analytics.com"})
    assert r.status_code == 200
    r = client.post("/api/v1/ingest", json={"contact": "carol@example.invalid"},
                    headers={"host": "tracker.example.invalid"})
    assert r.status_code == 200
    r = client.get("/lookup", params={"user": QUERY_EMAIL}, headers={"host": "tracker.example.invalid"})
    assert r.status_code == 200


def after_traffic(client: httpx.Client) -> None:
    r = client.post("/OneCollector/1.0/", content=_ndjson([ESSENTIAL_EVENT]),
                    headers={"host": "mobile.events.data.microsoft.com", "content-type": "application/x-json-stream"})
    assert r.status_code == 200
    r = client.post("/v2/track", json=_appinsights({"screen": "start"}),
                    headers={"host": "dc.services.visualstudio.com"})
    assert r.status_code == 200
    r = client.post("/v1/beacon", json={"build": "16.0"}, headers={"host": "beacon.example.invalid"})
    assert r.status_code == 200


_CACHE: dict[str, Capture] = {}


def capture(tmp_path_factory: pytest.TempPathFactory) -> Capture:
    if "capture" not in _CACHE:
        tmp = tmp_path_factory.mktemp("report-capture")
        db = tmp / "evidence.db"
        with Upstream() as upstream, Upstream(tls_dir=tmp / "tls") as secure, \
                ws_serve(lambda ws: [ws.send(f"echo:{m}") for m in ws], LOOPBACK, 0) as wss:
            threading.Thread(target=wss.serve_forever, daemon=True).start()
            ws_port = wss.socket.getsockname()[1]
            outputs = [_run_session(tmp, db, BASELINE, baseline_traffic, upstream, secure, ws_port),
                       _run_session(tmp, db, AFTER, after_traffic, upstream, secure)]
        _CACHE["capture"] = Capture(db=db, baseline=1, after=2, outputs=outputs)
    return _CACHE["capture"]


def teletap_report(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real ``teletap report`` command."""
    proc = subprocess.run([sys.executable, "-m", "teletap", "report", *args], capture_output=True, cwd=cwd,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def report_json(db: Path, out: Path, *args: str) -> dict:
    teletap_report("--db", str(db), "--format", "json", "--out", str(out), "--generated-at", GENERATED_AT, *args)
    return json.loads(out.read_text())


def table(report: dict, table_id: str) -> list[dict]:
    for section in report["sections"]:
        for t in section["tables"]:
            if t["id"] == table_id:
                return [dict(zip(t["columns"], row, strict=True)) for row in t["rows"]]
    raise KeyError(table_id)


def section(report: dict, section_id: str) -> dict:
    return next(s for s in report["sections"] if s["id"] == section_id)
