"""Memory over a long run: RSS of a running `teletap run` (proxy and ingest worker) while N small flows pass.

    python bench/bench_memory.py [--flows 1000000] [--baseline-flows 200000] [--max-seconds 3600]

wrk (or the Python client) sends small POSTs through the proxy in chunks of --chunk-seconds; after each
chunk, once the ingest worker is idle, the RSS of the proxy process and of the worker is read from /proc.
The slope of a least-squares line through the samples after the first 20 % of flows (warm-up: caches, the
SQLite page cache, mitmproxy's certificate store filling) says whether memory is flat: MiB per 100k flows,
target ~0.
Plain mitmdump runs the same load for --baseline-flows as the baseline. At the end, teletap's flows table
must hold every flow sent (nothing lost). Every run stops at --flows or --max-seconds, whichever first.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_proxy import (
    LOAD_CPU,
    _children,
    _pin,
    default_client,
    start_nginx,
    start_proxy,
    stop_proxy,
    wait_ingest_idle,
)
from loadgen import free_port, run_load

BODY = b"x" * 200


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class MemoryRun:
    kind: str
    flows: int = 0  # responses the client received
    seconds: float = 0.0
    samples: list[tuple[int, float, float]] = field(default_factory=list)  # (flows, proxy MiB, worker MiB)
    recorded: int | None = None  # teletap only: rows in flows
    stderr_tail: str = ""

    def slope(self, column: int) -> float:
        """MiB per 100k flows, least squares over the samples after the first 20 % of flows."""
        pts = [(s[0], s[column]) for s in self.samples if s[0] >= 0.2 * self.flows]
        if len(pts) < 3:
            return float("nan")
        n = len(pts)
        mx = sum(x for x, _ in pts) / n
        my = sum(y for _, y in pts) / n
        var = sum((x - mx) ** 2 for x, _ in pts)
        return sum((x - mx) * (y - my) for x, y in pts) / var * 100_000 if var else float("nan")

    def final(self, column: int) -> float:
        return self.samples[-1][column] if self.samples else float("nan")


def _wrk_chunk(proxy_port: int, upstream_port: int, seconds: int, connections: int, workdir: Path) -> int:
    """Completed 2xx responses in one wrk run (no warm-up: every request counts as a flow)."""
    script = workdir / "mem.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {len(BODY)})\n'
                      f'wrk.path = "http://127.0.0.1:{upstream_port}/post"\n'
                      f'wrk.headers["Host"] = "127.0.0.1:{upstream_port}"\n')
    out = subprocess.run([*_pin(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
                          f"http://127.0.0.1:{proxy_port}"], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    requests = errors = 0
    for line in out.splitlines():
        words = line.split()
        if "requests in" in line:
            requests = int(words[0])
        elif line.strip().startswith("Non-2xx"):
            errors += int(words[-1])
    return requests - errors


def measure(kind: str, flows: int, max_seconds: float, *, client: str, upstream_port: int, workdir: Path,
            chunk_seconds: int = 10, connections: int = 20, progress: bool = True) -> MemoryRun:
    port = free_port()
    proc = start_proxy(kind, port, workdir)
    run = MemoryRun(kind)
    db = workdir / f"bench-{port}.db"
    start = time.monotonic()
    try:
        time.sleep(1)
        pid = proc.pid  # taskset execs the proxy, and `teletap run` runs mitmdump in-process
        workers = _children(pid)  # the ingest worker (and multiprocessing's resource tracker)
        run.samples.append((0, rss_mib(pid), sum(rss_mib(w) for w in workers)))
        while run.flows < flows and time.monotonic() - start < max_seconds:
            if client == "wrk":
                done = _wrk_chunk(port, upstream_port, chunk_seconds, connections, workdir)
            else:
                done = run_load(port, upstream_port, body=BODY, connections=connections, seconds=chunk_seconds,
                                warmup=0).requests
            run.flows += done
            # Sampled once ingest has written the chunk's tail: what stays, not the batches still in flight
            # (the worker takes up to 16 of them ahead, a few MiB that come and go).
            wait_ingest_idle(pid, timeout=10)
            run.samples.append((run.flows, rss_mib(pid), sum(rss_mib(w) for w in workers)))
            if progress:
                print(f"  {kind}: {run.flows:,} flows, proxy {run.samples[-1][1]:.0f} MiB, "
                      f"ingest worker {run.samples[-1][2]:.0f} MiB", file=sys.stderr, flush=True)
            if done == 0:
                break  # the proxy stopped answering: no point in going on
    finally:
        run.seconds = time.monotonic() - start
        run.stderr_tail = stop_proxy(proc).strip()[-500:]
    if kind == "teletap" and db.exists():
        with sqlite3.connect(db) as conn:
            run.recorded = conn.execute("SELECT COUNT(*) FROM flows").fetchone()[0]
    return run


def memory_runs(flows: int, baseline_flows: int, max_seconds: float, client: str | None = None,
                chunk_seconds: int = 10, progress: bool = True) -> list[MemoryRun]:
    client = client or default_client()
    upstream_port, tls_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="teletap-bench-mem-") as tmp:
        workdir = Path(tmp)
        upstream = None
        if client == "wrk":
            upstream = start_nginx(upstream_port, workdir, tls_port)
        else:
            import multiprocessing

            from loadgen import serve_upstream, wait_port

            upstream = multiprocessing.Process(target=serve_upstream, args=(upstream_port,), daemon=True)
            upstream.start()
            wait_port(upstream_port)
        try:
            runs = [measure("mitmdump", baseline_flows, max_seconds, client=client, upstream_port=upstream_port,
                            workdir=workdir, chunk_seconds=chunk_seconds, progress=progress)]
            runs.append(measure("teletap", flows, max_seconds, client=client, upstream_port=upstream_port,
                                workdir=workdir, chunk_seconds=chunk_seconds, progress=progress))
        finally:
            upstream.terminate()
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--baseline-flows", type=int, default=200_000)
    ap.add_argument("--max-seconds", type=float, default=3600, help="per proxy")
    ap.add_argument("--chunk-seconds", type=int, default=10)
    args = ap.parse_args()
    runs = memory_runs(args.flows, args.baseline_flows, args.max_seconds, chunk_seconds=args.chunk_seconds)
    print(f"{'proxy':<10}{'flows':>10}{'s':>7}{'RSS start':>10}{'RSS end':>9}{'MiB/100k':>10}"
          f"{'worker end':>11}{'MiB/100k':>10}{'recorded':>10}")
    for r in runs:
        print(f"{r.kind:<10}{r.flows:>10,}{r.seconds:>7.0f}{r.samples[0][1]:>10.0f}{r.final(1):>9.0f}"
              f"{r.slope(1):>10.2f}{r.final(2):>11.0f}{r.slope(2):>10.2f}"
              f"{r.recorded if r.recorded is not None else '-':>10}")


if __name__ == "__main__":
    main()
