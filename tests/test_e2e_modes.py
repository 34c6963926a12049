"""End to end through other proxy modes and capture paths: HTTP/2, socks5, reverse, passthrough."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .support import LOOPBACK, Upstream, free_port, rows, running_teletap, wait_for_port

pytestmark = pytest.mark.e2e


def test_http2_flows_are_recorded(tmp_path: Path):
    # mitmproxy mirrors the server's ALPN, so HTTP/2 needs an upstream that speaks it: a second, plain
    # mitmdump in reverse mode offers h2 over TLS in front of the HTTP/1.1 upstream.
    h2_port = free_port()
    with Upstream() as plain:
        upstream_h2 = subprocess.Popen(
            [str(Path(sys.executable).with_name("mitmdump")), "-q", "--mode", f"reverse:http://{LOOPBACK}:{plain.port}",
             "--listen-host", LOOPBACK, "--listen-port", str(h2_port), "--set", f"confdir={tmp_path / 'h2conf'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(h2_port, proc=upstream_h2)
            with running_teletap(tmp_path, "--set", "ssl_insecure=true") as tt:
                # curl offers h2 first (httpx's proxy tunnel prefers http/1.1, and mitmproxy honours the order)
                out = subprocess.run(["curl", "-sS", "--http2", "--max-time", "10", "-x", tt.proxy,
                                      "--cacert", str(tt.ca), "-d", "over h2", "-o", "/dev/null",
                                      "-w", "%{http_version} %{http_code}", f"https://localhost:{h2_port}/h2"],
                                     capture_output=True, text=True)
                assert out.stdout == "2 200", out.stderr
                assert tt.stop() == 0
        finally:
            upstream_h2.terminate()
            upstream_h2.wait(10)
    (flow,) = rows(tt.db, "select * from flows where path = '/h2'")
    assert flow["http_version"] == "HTTP/2.0" and flow["request_body"] == b"over h2" and flow["status"] == 200


def test_socks5_and_reverse_modes_are_recorded(tmp_path: Path):
    socks_port, reverse_port = free_port(), free_port()
    with Upstream() as plain, running_teletap(tmp_path, "--mode", "regular", "--mode", f"socks5@{socks_port}",
                         "--mode", f"reverse:http://{LOOPBACK}:{plain.port}@{reverse_port}") as tt:
        out = subprocess.run(["curl", "-sS", "--max-time", "10", "--socks5-hostname", f"{LOOPBACK}:{socks_port}",
                              f"http://{LOOPBACK}:{plain.port}/via-socks"], capture_output=True, text=True)
        assert '"path": "/via-socks"' in out.stdout, out.stderr
        r = httpx.get(f"http://{LOOPBACK}:{reverse_port}/via-reverse", timeout=10)
        assert r.status_code == 200
        assert tt.stop() == 0
    flows = {f["path"]: f for f in rows(tt.db, "select path, status, port from flows")}
    assert flows["/via-socks"]["status"] == 200 and flows["/via-reverse"]["status"] == 200
    assert flows["/via-reverse"]["port"] == plain.port


def _tls_client(proxy_port: int, target: str, sni: str, cafile: Path | None) -> bytes | Exception:
    """A TLS client through an HTTP CONNECT tunnel, with a chosen SNI; returns the answer or the error."""
    sock = socket.create_connection((LOOPBACK, proxy_port), timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED if cafile else ssl.CERT_NONE
    try:
        with context.wrap_socket(sock, server_hostname=sni) as tls:
            tls.sendall(f"GET /through HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            return data
    except (ssl.SSLError, OSError) as e:
        return e


def test_ignored_hosts_pass_through_and_are_recorded_with_sni_and_bytes(tmp_path: Path):
    with Upstream(tls_dir=tmp_path / "tls") as secure, \
            running_teletap(tmp_path, "--ignore-hosts", r"^localhost:\d+$") as tt:
        # teletap does not intercept: the client sees the upstream's own (self-signed) certificate.
        answer = _tls_client(tt.port, f"localhost:{secure.port}", "localhost", None)
        assert (isinstance(answer, bytes) and answer.startswith(b"HTTP/1.0 200")) or b"200 OK" in answer
        assert tt.stop() == 0
    (conn,) = rows(tt.db, "select * from connections where kind = 'passthrough'")
    assert conn["sni"] == "localhost" and conn["observable"] == 0 and conn["server_port"] == secure.port
    assert conn["bytes_from_client"] > 100 and conn["bytes_from_server"] > 100
    assert rows(tt.db, "select count(*) as n from flows") == [{"n": 0}]


def test_learn_pinned_passes_a_refusing_client_through_afterwards(tmp_path: Path):
    with Upstream(tls_dir=tmp_path / "tls") as secure, \
            running_teletap(tmp_path, "--learn-pinned", "--set", "ssl_insecure=true") as tt:
        target = f"localhost:{secure.port}"
        # 1st: a client that trusts only the system store refuses teletap's certificate (like a pinned app).
        first = _tls_client(tt.port, target, "localhost", Path(ssl.get_default_verify_paths().cafile or "/nonexistent"))
        assert isinstance(first, Exception)
        # 2nd: the host is now passed through; the same kind of client reaches the real server.
        second = _tls_client(tt.port, target, "localhost", None)
        assert isinstance(second, bytes) and b"200" in second.split(b"\r\n")[0]
        assert tt.stop() == 0
        assert "passing it through from now on" in tt.output()
    kinds = [r["kind"] for r in rows(tt.db, "select kind from connections order by started")]
    assert kinds == ["tls-failed-client", "passthrough"]


def test_upstream_mode_chains_to_another_proxy(tmp_path: Path):
    # teletap in front of an existing corporate proxy (here: a plain mitmdump on loopback).
    corporate = free_port()
    with Upstream() as plain:
        chained = subprocess.Popen(
            [str(Path(sys.executable).with_name("mitmdump")), "-q", "--listen-host", LOOPBACK,
             "--listen-port", str(corporate), "--set", f"confdir={tmp_path / 'corpconf'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(corporate, proc=chained)
            with running_teletap(tmp_path, "--mode", f"upstream:http://{LOOPBACK}:{corporate}") as tt:
                with httpx.Client(proxy=tt.proxy, timeout=10) as client:
                    assert client.get(f"http://{LOOPBACK}:{plain.port}/chained").status_code == 200
                assert tt.stop() == 0
        finally:
            chained.terminate()
            chained.wait(10)
    (flow,) = rows(tt.db, "select * from flows where path = '/chained'")
    assert flow["status"] == 200 and flow["server_port"] == corporate  # it went through the corporate proxy
    assert len(plain.requests) == 1


def test_wireguard_mode_starts_and_writes_the_client_configuration(tmp_path: Path):
    wg_port = free_port(kind=socket.SOCK_DGRAM)
    with running_teletap(tmp_path, "--mode", "regular", "--mode", f"wireguard@{wg_port}") as tt:
        assert tt.stop() == 0
        output = tt.output()
    assert "WireGuard server listening" in output and "[Interface]" in output  # the config to import
    assert (tt.confdir / "wireguard.conf").is_file()
