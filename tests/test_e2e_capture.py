"""End to end: a real `teletap run` process, real clients and upstreams on loopback, a real SQLite file."""

from __future__ import annotations

import hashlib
import json
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

from teletap import resources

from .support import LOOPBACK, Upstream, free_port, rows, running_teletap, wait_for_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory):
    """One proxy run carrying every kind of traffic the foundation must record."""
    tmp = tmp_path_factory.mktemp("e2e")
    results: dict = {}
    with Upstream() as plain, Upstream(tls_dir=tmp / "tls") as secure, \
            ws_serve(lambda ws: [ws.send(f"echo:{m}") for m in ws], LOOPBACK, 0) as wss:
        import threading

        threading.Thread(target=wss.serve_forever, daemon=True).start()
        ws_port = wss.socket.getsockname()[1]
        with running_teletap(tmp, "--session", "e2e foundation", "--set", "ssl_insecure=true") as tt:
            proxy = tt.proxy
            # 1. plain HTTP POST to a local upstream
            with httpx.Client(proxy=proxy, timeout=10) as client:
                r = client.post(f"http://{LOOPBACK}:{plain.port}/collect?x=1", content=b'{"hello": "world"}',
                                headers={"content-type": "application/json"})
                results["post"] = r.status_code
            # 2. HTTPS through teletap's CA; the upstream is self-signed (hence ssl_insecure)
            with httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=str(tt.ca)),
                              timeout=10) as client:
                r = client.get(f"https://localhost:{secure.port}/secure/path?q=2")
                results["https"] = r.status_code
            # 3. a client that does not trust teletap's CA (like a pinned app)
            with httpx.Client(proxy=proxy, verify=True, timeout=10) as client, \
                    pytest.raises(httpx.ConnectError):
                client.get(f"https://localhost:{secure.port}/pinned")
            # 4. an upstream that refuses the connection
            refused = free_port()
            with httpx.Client(proxy=proxy, timeout=10) as client:
                r = client.get(f"http://{LOOPBACK}:{refused}/nobody-home")
                results["refused"] = (r.status_code, refused)
            # 5. a WebSocket exchange
            with ws_connect(f"ws://{LOOPBACK}:{ws_port}/socket", proxy=proxy) as ws:
                ws.send("ping-1")
                results["ws"] = ws.recv(timeout=10)
            results["exit"] = tt.stop()
            results["output"] = tt.output()
            results["db"] = tt.db
            results["plain_requests"] = list(plain.requests)
            results["ports"] = {"plain": plain.port, "secure": secure.port, "ws": ws_port}
    return results


def test_proxy_exits_cleanly_and_reports(capture):
    assert capture["exit"] == 0, capture["output"]
    assert "recording session" in capture["output"]
    assert "CA certificate" in capture["output"]
    assert "item(s) recorded" in capture["output"]
    assert "NOT recorded" not in capture["output"]


def test_database_is_private_and_intact(capture):
    db: Path = capture["db"]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert rows(db, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]
    assert rows(db, "PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    session = rows(db, "select * from sessions")
    assert len(session) == 1
    assert session[0]["label"] == "e2e foundation"
    assert session[0]["ended"] and session[0]["items_unrecorded"] == 0
    assert session[0]["teletap_version"] and session[0]["mitmproxy_version"].startswith("11.0")
    assert json.loads(session[0]["options"])["teletap_session"] == "e2e foundation"


def test_http_post_is_recorded_with_its_fields(capture):
    assert capture["post"] == 200
    port = capture["ports"]["plain"]
    (flow,) = rows(capture["db"], "select * from flows where path = '/collect'")
    assert flow["method"] == "POST" and flow["scheme"] == "http"
    assert flow["host"] == LOOPBACK and flow["port"] == port and flow["query"] == "x=1"
    assert flow["status"] == 200 and flow["http_version"] == "HTTP/1.1"
    assert flow["request_body"] == b'{"hello": "world"}'
    assert flow["request_size_wire"] == 18 and flow["request_size"] == 18
    assert flow["request_sha256"] == hashlib.sha256(b'{"hello": "world"}').hexdigest()
    assert flow["request_content_type"] == "application/json"
    assert flow["response_content_type"] == "application/json"
    assert json.loads(flow["response_body"])["received"] == 18
    assert ["content-type", "application/json"] in json.loads(flow["request_headers"])
    assert flow["client_address"] == LOOPBACK and flow["server_address"] == LOOPBACK
    assert flow["request_time"] <= flow["response_time"]
    assert flow["error"] is None and flow["answered_by_teletap"] == 0
    assert flow["session_id"] == 1 and flow["source"] == "live"
    assert capture["plain_requests"][0][2] == b'{"hello": "world"}'  # forwarded unchanged


def test_https_flow_is_recorded_with_sni(capture):
    assert capture["https"] == 200
    (flow,) = rows(capture["db"], "select * from flows where path = '/secure/path'")
    assert flow["scheme"] == "https" and flow["host"] == "localhost" and flow["sni"] == "localhost"
    assert flow["query"] == "q=2" and flow["tls_version"].startswith("TLSv1")


def test_refused_tls_is_a_not_observable_connection(capture):
    refused = rows(capture["db"], "select * from connections where kind = 'tls-failed-client'")
    assert len(refused) == 1, refused
    (conn,) = refused
    assert conn["sni"] == "localhost" and conn["observable"] == 0
    assert "certificate" in conn["reason"] or "unknown ca" in conn["reason"]
    assert conn["client_address"] == LOOPBACK and conn["started"]
    assert conn["signature_id"] == "undocumented"


def test_upstream_refusal_is_a_flow_with_its_error(capture):
    status, port = capture["refused"]
    assert status == 502
    (flow,) = rows(capture["db"], "select * from flows where path = '/nobody-home'")
    assert flow["port"] == port and flow["status"] is None
    assert flow["error"] and ("refused" in flow["error"].lower() or "connect" in flow["error"].lower())


def test_websocket_messages_are_recorded(capture):
    assert capture["ws"] == "echo:ping-1"
    (flow,) = rows(capture["db"], "select * from flows where path = '/socket'")
    assert flow["status"] == 101
    messages = rows(capture["db"], "select * from websocket_messages where flow_id = ? order by id", (flow["id"],))
    assert [(m["direction"], m["content"]) for m in messages] == [
        ("client-to-server", b"ping-1"), ("server-to-client", b"echo:ping-1")]
    assert all(m["is_text"] == 1 and m["size"] == len(m["content"]) for m in messages)


def test_plain_mitmdump_with_the_shim_records_like_teletap_run(tmp_path: Path):
    """`mitmdump -s "$(teletap mitmproxy-script)"` (README) loads the same addons as `teletap run`."""
    port, db = free_port(), tmp_path / "shim.db"
    log = tmp_path / "mitmdump.log"
    with Upstream() as upstream, open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mitmdump")), "-q", "--listen-host", LOOPBACK, "--listen-port",
             str(port), "-s", str(resources.mitmproxy_script_path()), "--set", f"teletap_db={db}",
             "--set", f"confdir={tmp_path / 'conf'}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_for_port(port, proc=proc)
            with httpx.Client(proxy=f"http://{LOOPBACK}:{port}", timeout=10) as client:
                for _ in range(100):  # the recorder starts its session once the proxy runs
                    if "recording session" in log.read_text():
                        break
                    time.sleep(0.1)
                r = client.post(f"http://{LOOPBACK}:{upstream.port}/shim", content=b'{"via": "shim"}',
                                headers={"content-type": "application/json"})
                assert r.status_code == 200
        finally:
            proc.terminate()
            proc.wait(30)
    assert "session 1 closed: 1 item(s) recorded" in log.read_text(), log.read_text()
    assert rows(db, "SELECT path, request_body FROM flows") == [{"path": "/shim", "request_body": b'{"via": "shim"}'}]
