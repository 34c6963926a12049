"""Proxy throughput: plain mitmdump vs teletap run, same loopback load, same run.

    python bench/bench_proxy.py [--seconds 10] [--connections 20] [--rounds 2]

Prints requests/s and p50/p99 latency per case and the ratio teletap / mitmdump (target ≥ 0.9). The two
proxies alternate (A B A B …) so a noisy machine affects both alike; when taskset exists, each proxy is
pinned to CPU 1 and the load generator and upstream to CPU 0, so teletap's ingest thread shares the
proxy's core, as it would on a busy gateway.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import LoadResult, free_port, run_load, serve_upstream, wait_port  # noqa: E402

MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def start_proxy(kind: str, port: int, workdir: Path) -> subprocess.Popen:
    confdir = workdir / "conf"
    if kind == "mitmdump":
        cmd = [MITMDUMP, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
               "--set", f"confdir={confdir}"]
    else:
        cmd = [sys.executable, "-m", "teletap", "run", "--db", str(workdir / f"bench-{port}.db"),
               "--listen-port", str(port), "--confdir", str(confdir)]
    proc = subprocess.Popen(_pin(1) + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir)
    wait_port(port)
    return proc


def stop_proxy(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return err.decode(errors="replace")


def measure(kind: str, upstream: int, body: bytes, args: argparse.Namespace, workdir: Path,
            content_type: str) -> tuple[LoadResult, str]:
    port = free_port()
    proc = start_proxy(kind, port, workdir)
    try:
        result = run_load(port, upstream, body=body, connections=args.connections, seconds=args.seconds,
                          content_type=content_type)
    finally:
        stderr = stop_proxy(proc)
    return result, stderr


def telemetry_batch(events: int = 50) -> bytes:
    lines = [json.dumps({"name": "Office.Bench.Event", "time": "2026-01-01T00:00:00.000Z", "ver": "4.0",
                         "iKey": "o:00000000000000000000000000000000", "data": {"n": i, "DeviceId":
                         "11111111-2222-3333-4444-555555555555", "Path": f"C:\\Users\\bench\\doc{i}.docx"}})
             for i in range(events)]
    return "\n".join(lines).encode()


CASES = {
    "small POST (200 B)": (b"x" * 200, "application/octet-stream"),
    "large POST (200 KB)": (os.urandom(100 * 1024).hex().encode(), "application/octet-stream"),
    "1DS JSON batch (50 events)": (telemetry_batch(), "application/x-json-stream"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()

    upstream_port = free_port()
    upstream = multiprocessing.Process(target=serve_upstream, args=(upstream_port,), daemon=True)
    upstream.start()
    if _pin(0):
        subprocess.run(["taskset", "-pc", "0", str(upstream.pid)], capture_output=True)
        os.sched_setaffinity(0, {0})
    wait_port(upstream_port)

    print(f"{'case':<30} {'proxy':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    summary = []
    with tempfile.TemporaryDirectory(prefix="teletap-bench-") as tmp:
        workdir = Path(tmp)
        for case in args.cases:
            body, ctype = CASES[case]
            totals: dict[str, list[LoadResult]] = {"mitmdump": [], "teletap": []}
            for _ in range(args.rounds):
                for kind in ("mitmdump", "teletap"):
                    result, stderr = measure(kind, upstream_port, body, args, workdir, ctype)
                    totals[kind].append(result)
                    if kind == "teletap" and "NOT recorded" in stderr:
                        print(f"  warning: {stderr.strip().splitlines()[-1]}")
                    print(f"{case:<30} {kind:<9} {result.rps:8.0f} {result.p50:8.1f} "
                          f"{result.percentile(99):8.1f} {result.errors:6d}", flush=True)
            plain = sum(r.rps for r in totals["mitmdump"]) / args.rounds
            ours = sum(r.rps for r in totals["teletap"]) / args.rounds
            summary.append((case, ours / plain if plain else float("nan")))
    upstream.terminate()
    print("\nteletap / mitmdump requests/s (target >= 0.90)")
    for case, ratio in summary:
        print(f"  {case:<30} {ratio:5.2f}")


if __name__ == "__main__":
    main()
