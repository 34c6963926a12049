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
