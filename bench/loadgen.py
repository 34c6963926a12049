"""A small loopback load generator and upstream for proxy benchmarks (no tools beyond Python).

The upstream answers every request with a tiny 200; the client keeps N HTTP/1.1 keep-alive connections
busy sending absolute-form requests through an explicit proxy, and records per-request latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
from dataclasses import dataclass


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            return int(line[15:])
    return 0


async def _upstream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def serve_upstream(port: int) -> None:
    """Run the upstream forever (meant for a separate process)."""

    async def main() -> None:
        server = await asyncio.start_server(_upstream_handler, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


async def _client(proxy_port: int, request: bytes, stop_at: float, warm_until: float, result: LoadResult) -> None:
    reader = writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        while time.monotonic() < stop_at:
            start = time.monotonic()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            if length:
                await reader.readexactly(length)
            ok = head.startswith(b"HTTP/1.1 200")
            if start >= warm_until:
                if ok:
                    result.requests += 1
                    result.latencies_ms.append((time.monotonic() - start) * 1000)
                else:
                    result.errors += 1
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        result.errors += 1
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def run_load(proxy_port: int, upstream_port: int, *, body: bytes, connections: int, seconds: float,
             warmup: float = 1.0, path: str = "/post", content_type: str = "application/octet-stream") -> LoadResult:
    request = (f"POST http://127.0.0.1:{upstream_port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{upstream_port}\r\n"
               f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    async def main() -> LoadResult:
        result = LoadResult(0, 0, seconds, [])
        now = time.monotonic()
        await asyncio.gather(*(_client(proxy_port, request, now + warmup + seconds, now + warmup, result)
                               for _ in range(connections)))
        return result

    return asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing on 127.0.0.1:{port}")


# --- HTTPS through an explicit proxy: CONNECT, then TLS inside the tunnel ------------------------------------
# wrk cannot do this (it speaks TLS only to its target, never through a proxy's CONNECT), so HTTPS cases use
# this client. Certificates are not verified: the proxy's CA is per run and everything stays on 127.0.0.1.


async def _tls_client(proxy_port: int, upstream_port: int, request: bytes, stop_at: float, warm_until: float,
                      result: LoadResult, reconnect: bool) -> None:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    while time.monotonic() < stop_at:
        writer = None
        try:
            start = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
            writer.write(f"CONNECT 127.0.0.1:{upstream_port} HTTP/1.1\r\nHost: 127.0.0.1:{upstream_port}\r\n\r\n"
                         .encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                result.errors += 1
                return
            await writer.start_tls(ctx, server_hostname="localhost")
            while time.monotonic() < stop_at:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if start >= warm_until:
                    if head.startswith(b"HTTP/1.1 200"):
                        result.requests += 1
                        result.latencies_ms.append((time.monotonic() - start) * 1000)
                    else:
                        result.errors += 1
                if reconnect:
                    break  # a new connection (CONNECT + handshake) for the next request
                start = time.monotonic()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            result.errors += 1
            await asyncio.sleep(0.01)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


def run_tls_load(proxy_port: int, upstream_port: int, *, body: bytes, connections: int, seconds: float,
                 warmup: float = 1.0, path: str = "/post", content_type: str = "application/octet-stream",
                 reconnect: bool = False) -> LoadResult:
    """HTTPS POSTs through the proxy: keep-alive TLS connections, or one connection per request."""
    request = (f"POST {path} HTTP/1.1\r\nHost: localhost:{upstream_port}\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def main() -> LoadResult:
        result = LoadResult(0, 0, seconds, [])
        now = time.monotonic()
        await asyncio.gather(*(_tls_client(proxy_port, upstream_port, request, now + warmup + seconds,
                                           now + warmup, result, reconnect) for _ in range(connections)))
        return result

    return asyncio.run(main())


def self_signed_cert(directory: str) -> tuple[str, str]:
    """A throwaway certificate for the HTTPS upstream (localhost, 127.0.0.1); returns (cert, key) paths."""
    import datetime
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "upstream.crt"), os.path.join(directory, "upstream.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def serve_tls_upstream(port: int, cert: str, key: str) -> None:
    """The pure-Python upstream, over TLS (when nginx is not installed)."""
    import ssl

    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        server = await asyncio.start_server(_upstream_handler, "127.0.0.1", port, backlog=1024, ssl=ctx)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
