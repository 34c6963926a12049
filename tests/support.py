"""Real parts for tests: local upstream servers, a running teletap, and helpers. Loopback only."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


# -- processes (Linux /proc): teletap's ingest worker and its pool ------------------------------------------

def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def ingest_process(proxy_pid: int) -> int:
    """The ingest worker that ``teletap run`` spawned (not multiprocessing's resource tracker)."""
    (worker,) = [c for c in child_pids(proxy_pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    return worker


def is_gone(pid: int) -> bool:
    """Exited. A reparented child lingers as a zombie until init reaps it: that counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not all(is_gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def free_port(host: str = LOOPBACK, kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with a JSON echo of what arrived (so tests can check what was forwarded)."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = json.dumps({"method": self.command, "path": self.path, "received": len(body)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.server.requests.append((self.command, self.path, body))  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Upstream:
    """A threaded HTTP (or HTTPS, with a self-signed certificate) server on loopback."""

    def __init__(self, tls_dir: Path | None = None):
        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _EchoHandler)
        self.server.daemon_threads = True
        self.server.requests = []  # type: ignore[attr-defined]
        if tls_dir is not None:
            cert, key = self_signed_cert(tls_dir, "localhost")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[tuple[str, str, bytes]]:
        return self.server.requests  # type: ignore[attr-defined]

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_cert(directory: Path, hostname: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{hostname}.crt", directory / f"{hostname}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Teletap:
    proc: subprocess.Popen
    port: int
    db: Path
    confdir: Path
    log_path: Path

    @property
    def proxy(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ca(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def teletap_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "teletap", *args]


@contextlib.contextmanager
def running_teletap(tmp: Path, *extra: str, db: Path | None = None, port: int | None = None) -> Iterator[Teletap]:
    """Start ``teletap run`` as a real process on a free loopback port; SIGTERM it afterwards."""
    port = port or free_port()
    db = db or tmp / "teletap.db"
    confdir = tmp / "mitmproxy-conf"
    log_path = tmp / f"teletap-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            teletap_command("run", "--db", str(db), "--listen-host", LOOPBACK, "--listen-port", str(port),
                            "--confdir", str(confdir), *extra),
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
        )
    tt = Teletap(proc, port, db, confdir, log_path)
    try:
        wait_for_port(port, proc=proc)
        deadline = time.monotonic() + 30
        while "recording session" not in tt.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"teletap did not start recording:\n{tt.output()}")
            time.sleep(0.05)
        yield tt
    finally:
        if proc.poll() is None:
            tt.stop()


def rows(db: Path, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (mount's syntax: 1m, 16m) at ``mount``; skips the test where mounting needs root."""
    import pytest

    mount.mkdir(exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
