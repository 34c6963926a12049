"""What a busy neighbour on the other core costs plain mitmdump: the machine's part of the proxy gap.

    python bench/bench_interference.py [--pairs 12] [--slice 2] [--rate 550] [--neighbours cpu memory sqlite]

teletap's ingest worker runs on the core the proxy does not use. On a VM whose vCPUs share the last-level
cache and the memory bandwidth, what ingest does there can slow the proxy although nothing else runs on
the proxy's core. This measures that for plain mitmdump, with no teletap code at all, under bench_proxy's
200 KB POST load: a neighbour process on the load core is resumed and paused (SIGCONT/SIGSTOP) between short
wrk slices, so every slice with it has a slice without it right before, and each figure is the median of
those pairs' ratios (a noisy machine moves both slices of a pair alike).

Neighbours (each pinned to the load core, with wrk and nginx):
  cpu     a copy loop within 1 MiB, which stays in its core's own cache: the control, expect ≈ 1.0
  memory  the same loop through 64 MiB, more than the shared cache holds
  sqlite  --rate 200 KB blobs per second inserted into a WAL database with teletap's page size and
          synchronous=FULL, committed every 16 MiB as ingest does: teletap's store without teletap

If sqlite costs mitmdump about what teletap loses in the 200 KB case, that part of the gap is the price of
writing the bodies on this machine, not of teletap's proxy code (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_proxy
from loadgen import free_port

CASE = "large POST (200 KB)"
NEIGHBOURS = ("cpu", "memory", "sqlite")
COMMIT_BYTES = 16 * 1024 * 1024  # ingest's default batch_bytes: what one transaction holds at most


def neighbour(kind: str, rate: float, workdir: Path) -> None:
    """Run one neighbour until SIGTERM (in its own process)."""
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    if kind in ("cpu", "memory"):
        size = (1 if kind == "cpu" else 64) * 1024 * 1024
        src, dst, chunk = bytearray(b"x" * size), bytearray(size), 256 * 1024
        offset = 0
        while not stop:
            dst[offset:offset + chunk] = src[offset:offset + chunk]
            offset = (offset + chunk) % size
        return
    from teletap.store import PAGE_SIZE

    db = sqlite3.connect(workdir / "neighbour.db", isolation_level=None)
    db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE bodies (id INTEGER PRIMARY KEY, body BLOB)")
    body, _, _ = bench_proxy.CASES[CASE]
    pending: list[tuple[bytes]] = []
    start, made = time.monotonic(), 0
    while not stop:
        pending.append((bytes(bytearray(body)),))  # a body of its own, as ingest has one per flow
        made += 1
        if len(pending) * len(body) >= COMMIT_BYTES:
            db.execute("BEGIN")
            db.executemany("INSERT INTO bodies (body) VALUES (?)", pending)
            db.execute("COMMIT")
            pending = []
        ahead = made / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    db.close()


def measure(kind: str, args: argparse.Namespace, port: int, upstream: int, workdir: Path) -> tuple[float, float, float]:
    """mitmdump requests/s without and with the neighbour (means over pairs), and the median pair ratio."""
    body, ctype, _ = bench_proxy.CASES[CASE]
    cmd = [sys.executable, __file__, "--neighbour", kind, "--rate", str(args.rate), "--workdir", str(workdir)]
    proc = subprocess.Popen([*bench_proxy._pin(bench_proxy.LOAD_CPU), *cmd], start_new_session=True)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGSTOP)
    without, with_, ratios = [], [], []

    def slice_rps() -> float:
        time.sleep(0.3)  # the neighbour's pause or resume settles
        return bench_proxy.run_wrk(port, upstream, body=body, connections=20, seconds=args.slice,
                                   content_type=ctype, workdir=workdir, warm_up=False).rps

    try:
        for _ in range(args.pairs):
            off = slice_rps()
            os.killpg(proc.pid, signal.SIGCONT)
            on = slice_rps()
            os.killpg(proc.pid, signal.SIGSTOP)
            without.append(off)
            with_.append(on)
            ratios.append(on / off if off else float("nan"))
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        for leftover in workdir.glob("neighbour.db*"):
            leftover.unlink()
    return statistics.mean(without), statistics.mean(with_), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--slice", type=float, default=2, help="seconds of load per slice")
    parser.add_argument("--rate", type=float, default=550,
                        help="sqlite neighbour: 200 KB bodies stored per second (teletap's rate in that case)")
    parser.add_argument("--neighbours", nargs="*", choices=NEIGHBOURS, default=list(NEIGHBOURS))
    parser.add_argument("--neighbour", choices=NEIGHBOURS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.neighbour:
        neighbour(args.neighbour, args.rate, args.workdir)
        return
    if bench_proxy.default_client() != "wrk":
        sys.exit("bench_interference needs wrk and nginx (Debian packages wrk, nginx-light)")
    if not bench_proxy._pin(bench_proxy.LOAD_CPU):
        sys.exit("bench_interference needs taskset and two cores: it is about what one core does to the other")
    upstream, tls_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="teletap-bench-interference-") as tmp:
        workdir = Path(tmp)
        nginx = bench_proxy.start_nginx(upstream, workdir, tls_port)
        port = free_port()
        proxy = bench_proxy.start_proxy("mitmdump", port, workdir)
        try:
            body, ctype, _ = bench_proxy.CASES[CASE]
            bench_proxy.run_wrk(port, upstream, body=body, connections=20, seconds=2, content_type=ctype,
                                workdir=workdir)  # warm-up
            print(f"plain mitmdump on CPU {bench_proxy.PROXY_CPU}, {CASE}, wrk -c20; neighbour on CPU "
                  f"{bench_proxy.LOAD_CPU}; {args.pairs} pairs of {args.slice:.0f} s slices")
            print(f"{'neighbour':<10} {'req/s without':>14} {'req/s with':>11} {'median ratio':>13}")
            for kind in args.neighbours:
                off, on, ratio = measure(kind, args, port, upstream, workdir)
                print(f"{kind:<10} {off:14.0f} {on:11.0f} {ratio:13.3f}", flush=True)
        finally:
            bench_proxy.stop_proxy(proxy)
            nginx.terminate()
            nginx.wait(10)


if __name__ == "__main__":
    main()
