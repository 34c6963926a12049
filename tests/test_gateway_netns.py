"""A transparent gateway, for real: client and gateway network namespaces joined by veth.

teletap runs in transparent mode in the gateway namespace behind the iptables REDIRECT rules the README
documents; the client's HTTP and HTTPS traffic to an upstream (also inside the gateway namespace) must be
recorded with the client's address. The addresses exist only inside the namespaces this test creates and
removes; nothing leaves them.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import rows, self_signed_cert

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

CLIENT_IP, GATEWAY_IP, UPSTREAM_IP = "10.231.0.2", "10.231.0.1", "10.232.0.1"
PROXY_PORT = 8080

# The gateway's rules, exactly as README.md documents them (interface name aside).
GATEWAY_RULES = [
    "sysctl -w net.ipv4.ip_forward=1",
    "iptables -t nat -A PREROUTING -i {lan} -p tcp --dport 80 -j REDIRECT --to-port 8080",
    "iptables -t nat -A PREROUTING -i {lan} -p tcp --dport 443 -j REDIRECT --to-port 8080",
]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "iptables", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables curl)"
    probe = f"tt-probe-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"this machine forbids network namespaces: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    client, gateway = f"tt-client-{tag}", f"tt-gw-{tag}"
    veth_c, veth_g = f"ttc{tag}", f"ttg{tag}"
    try:
        sh("ip", "netns", "add", client)
        sh("ip", "netns", "add", gateway)
        sh("ip", "link", "add", veth_c, "type", "veth", "peer", "name", veth_g)
        sh("ip", "link", "set", veth_c, "netns", client)
        sh("ip", "link", "set", veth_g, "netns", gateway)
        for ns in (client, gateway):
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", veth_c, ns=client)
        sh("ip", "link", "set", veth_c, "up", ns=client)
        sh("ip", "route", "add", "default", "via", GATEWAY_IP, ns=client)
        sh("ip", "addr", "add", f"{GATEWAY_IP}/24", "dev", veth_g, ns=gateway)
        sh("ip", "link", "set", veth_g, "up", ns=gateway)
        # The "Internet" the gateway routes to: one extra address on the gateway namespace's own loopback.
        sh("ip", "addr", "add", f"{UPSTREAM_IP}/32", "dev", "lo", ns=gateway)
        for rule in GATEWAY_RULES:
            sh(*rule.format(lan=veth_g).split(), ns=gateway)
        yield client, gateway
    finally:
        for ns in (client, gateway):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False)


UPSTREAM_SERVER = """
import http.server, ssl, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"upstream says hi"
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
plain = http.server.ThreadingHTTPServer((sys.argv[1], 80), H)
tls = http.server.ThreadingHTTPServer((sys.argv[1], 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=tls.serve_forever, daemon=True).start()
print("ready", flush=True)
plain.serve_forever()
"""


def _wait_listening(ns: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = sh("ss", "-ltn", ns=ns, check=False).stdout
        if f":{port} " in out:
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} in {ns}")


def test_transparent_gateway_records_client_traffic(namespaces, tmp_path: Path):
    client, gateway = namespaces
    cert, key = self_signed_cert(tmp_path / "tls", "upstream.example.invalid")
    upstream = subprocess.Popen(["ip", "netns", "exec", gateway, sys.executable, "-c", UPSTREAM_SERVER,
                                 UPSTREAM_IP, str(cert), str(key)], stdout=subprocess.PIPE, text=True)
    db, confdir = tmp_path / "gateway.db", tmp_path / "conf"
    log = open(tmp_path / "teletap.log", "wb")  # noqa: SIM115 (closed below, after the process ends)
    teletap = subprocess.Popen(
        ["ip", "netns", "exec", gateway, sys.executable, "-m", "teletap", "run", "--mode", "transparent",
         "--listen-host", "0.0.0.0", "--listen-port", str(PROXY_PORT), "--db", str(db), "--confdir", str(confdir),
         "--session", "gateway", "--set", "ssl_insecure=true"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        assert upstream.stdout is not None and upstream.stdout.readline().strip() == "ready"
        _wait_listening(gateway, PROXY_PORT)
        deadline = time.monotonic() + 30
        while not (confdir / "mitmproxy-ca-cert.pem").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        plain = sh("curl", "-sS", "--max-time", "20", f"http://{UPSTREAM_IP}/gateway/plain", ns=client)
        assert plain.stdout == "upstream says hi"
        secure = sh("curl", "-sS", "--max-time", "20", "--cacert", str(confdir / "mitmproxy-ca-cert.pem"),
                    "--resolve", f"upstream.example.invalid:443:{UPSTREAM_IP}",
                    "https://upstream.example.invalid/gateway/secure", ns=client)
        assert secure.stdout == "upstream says hi"
    finally:
        teletap.terminate()
        assert teletap.wait(30) == 0, (tmp_path / "teletap.log").read_text()
        log.close()
        upstream.kill()
        upstream.wait()
    flows = {f["path"]: f for f in rows(db, "select * from flows")}
    assert set(flows) == {"/gateway/plain", "/gateway/secure"}
    for flow in flows.values():
        assert flow["client_address"] == CLIENT_IP
        assert flow["server_address"] == UPSTREAM_IP
        assert flow["status"] == 200
    assert flows["/gateway/plain"]["scheme"] == "http" and flows["/gateway/plain"]["host"] == UPSTREAM_IP
    assert flows["/gateway/secure"]["scheme"] == "https"
    assert flows["/gateway/secure"]["host"] == "upstream.example.invalid"
    assert flows["/gateway/secure"]["sni"] == "upstream.example.invalid"


FAKE_RESOLVER = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    query, peer = s.recvfrom(4096)
    end = 12
    while query[end]:
        end += query[end] + 1
    header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    answer = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(sys.argv[1])
    s.sendto(header + query[12:end + 5] + answer, peer)
"""


def _dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", 1, 1)


@pytest.fixture
def lone_namespace() -> Iterator[str]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    ns = f"tt-dns-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "set", "lo", "up", ns=ns)
        yield ns
    finally:
        for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_dns_mode_records_queries_and_answers(lone_namespace: str, tmp_path: Path):
    """teletap's DNS mode beside the proxy: the gateway's resolver is a fake one on 127.0.0.1:53 inside a
    namespace of the test's own (mitmproxy resolves through port 53 only), so nothing leaves it. The name is
    a documentation domain, not .invalid: mitmproxy's resolver answers special-use names itself."""
    ns = lone_namespace
    resolver = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", FAKE_RESOLVER, "192.0.2.44"],
                                stdout=subprocess.PIPE, text=True)
    db = tmp_path / "dns.db"
    log = open(tmp_path / "teletap.log", "wb")  # noqa: SIM115 (closed below, after the process ends)
    teletap = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "teletap", "run", "--db", str(db),
         "--confdir", str(tmp_path / "conf"), "--mode", "regular", "--mode", "dns@5353",
         "--set", "dns_name_servers=127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        assert resolver.stdout is not None and resolver.stdout.readline().strip() == "ready"
        _wait_listening(ns, 8080)
        query = ("import socket, sys; c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(10);"
                 "c.sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.1', 5353)); sys.stdout.write(c.recv(4096).hex())")
        reply = bytes.fromhex(sh(sys.executable, "-c", query, _dns_query("telemetry.example.org").hex(),
                                 ns=ns).stdout)
        assert socket.inet_aton("192.0.2.44") in reply
    finally:
        teletap.terminate()
        assert teletap.wait(30) == 0, (tmp_path / "teletap.log").read_text()
        log.close()
        resolver.kill()
        resolver.wait()
    (row,) = rows(db, "select * from dns")
    assert row["question"] == "telemetry.example.org" and row["question_type"] == "A"
    assert "192.0.2.44" in row["answers"] and row["response_code"] == "NOERROR"
    assert row["client_address"] == "127.0.0.1" and row["signature_id"] == "undocumented"
