"""Proxy throughput: plain mitmdump vs teletap run, same loopback load, same run.

    python bench/bench_proxy.py [--seconds 10] [--connections 20] [--rounds 2] [--cases ...]

Prints requests/s and p50/p99 latency per case and the ratio teletap / mitmdump (target ≥ 0.9). The two
proxies alternate (A B A B …) so a noisy machine affects both alike; when taskset exists, each proxy is
pinned to CPU 1 and the load generator and upstream to CPU 0; teletap's ingest worker process also goes
to CPU 0, where it competes with the load generator (so the ratio errs against teletap).
TELETAP_BENCH_PROXY_CPU=0 swaps the two cores. ``--own-cost`` adds a third proxy to every round, mitmdump with
teletap's event dispatch (mitmdump_indexed.py): teletap over it is what teletap's own work costs, where the
ratio to plain mitmdump also includes what that dispatch saves.

HTTPS cases: wrk cannot send requests through an explicit proxy's CONNECT tunnel, so they always use the
asyncio client in loadgen.py (CONNECT, then TLS inside the tunnel, certificates not verified) against an
HTTPS upstream (nginx with a throwaway certificate, or the Python upstream); both proxies run with
ssl_insecure=true to accept that certificate. "keep-alive" sends every request on long-lived TLS
connections; "new connection" pays CONNECT and both TLS handshakes for every request.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import (
    LoadResult,
    free_port,
    run_load,
    run_tls_load,
    self_signed_cert,
    serve_tls_upstream,
    serve_upstream,
    wait_port,
)

MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))


# The proxy under test gets a core of its own; the load generator, the upstream and teletap's ingest worker
# share the other one (TELETAP_BENCH_PROXY_CPU=0 swaps them).
PROXY_CPU = int(os.environ.get("TELETAP_BENCH_PROXY_CPU", "1"))
LOAD_CPU = 1 - PROXY_CPU


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def mitmdump_program(kind: str) -> list[str]:
    """The command of a baseline proxy: plain ``mitmdump``, or ``mitmdump-indexed`` (mitmdump with teletap's
    event dispatch, mitmdump_indexed.py), before mitmdump's own arguments."""
    if kind == "mitmdump":
        return [MITMDUMP]
    if kind == "mitmdump-indexed":
        return [sys.executable, str(Path(__file__).with_name("mitmdump_indexed.py"))]
    raise ValueError(f"not a baseline proxy: {kind}")


def start_proxy(kind: str, port: int, workdir: Path, teletap_set: Sequence[str] = (),
                env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a proxy pinned to PROXY_CPU: a baseline (``mitmdump_program``) or ``teletap``; ``teletap_set``:
    extra ``--set OPTION=VALUE`` for teletap."""
    confdir = workdir / "conf"
    if kind != "teletap":
        cmd = [*mitmdump_program(kind), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
               "--set", f"confdir={confdir}", "--set", "ssl_insecure=true"]
    else:
        cmd = [sys.executable, "-m", "teletap", "run", "--db", str(workdir / f"bench-{port}.db"),
               "--listen-port", str(port), "--confdir", str(confdir), "--set", "ssl_insecure=true"]
        cmd += [arg for option in teletap_set for arg in ("--set", option)]
    proc = subprocess.Popen(_pin(PROXY_CPU) + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir,
                            env=env)
    wait_port(port)
    if kind == "teletap":
        # The ingest worker starts after the proxy listens: wait for it, or it is neither pinned nor measured
        # (and, left on the proxy's core, it takes it: rounds at 0.5x with "worker CPU 0 %").
        deadline = time.monotonic() + 60
        while not any("spawn_main" in _cmdline(c) for c in _children(proc.pid)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("teletap's ingest worker did not start")
            time.sleep(0.05)
        if _pin(LOAD_CPU):
            # Give the worker the other core (shared with the load generator, which can only make teletap
            # look slower, never faster).
            for child in _children(proc.pid):
                subprocess.run(["taskset", "-a", "-pc", str(LOAD_CPU), str(child)], capture_output=True)
    return proc


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(c) for c in children]
    return found + [grandchild for child in found for grandchild in _children(child)]


def wait_ingest_idle(pid: int, timeout: float = 180) -> None:
    """Wait until the ingest worker of the teletap with this pid has written what was queued, and analysed
    what it stored first (no-op for mitmdump).

    Then what is measured next (another proxy's slice, a memory sample) does not include that backlog: after
    a 15 s slice of 1DS batches, catching up takes ingest about as long again on the reference VM.
    """
    workers = _children(pid)
    deadline = time.monotonic() + timeout
    used = _cpu_seconds(workers)
    while workers and time.monotonic() < deadline:
        time.sleep(0.2)
        now = _cpu_seconds(workers)
        if now - used < 0.01:  # under 5 % of a core: idle
            return
        used = now


def teletap_notes(stderr: str) -> list[str]:
    """What teletap said at shutdown about items lost, and about flows whose analysis waited for ingest."""
    marks = ("NOT recorded", "stored first", "not yet decoded")
    return [line.strip() for line in stderr.splitlines() if any(m in line for m in marks)]


def stop_proxy(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return err.decode(errors="replace")


def measure(kind: str, upstream: int, body: bytes, args: argparse.Namespace, workdir: Path,
            content_type: str, tls: str | None = None) -> tuple[LoadResult, str]:
    port = free_port()
    proc = start_proxy(kind, port, workdir, args.teletap_set)
    workers = _children(proc.pid)
    t0 = (time.monotonic(), _cpu_seconds([proc.pid]))
    wcpu0 = _cpu_seconds(workers)
    try:
        result = load(port, upstream, body=body, content_type=content_type, tls=tls, client=args.client,
                      connections=args.connections, seconds=args.seconds, workdir=workdir)
        # Share of a core each process used during the load (warm-up included): a proxy below ~95 % was
        # not the bottleneck, i.e. its core-0 neighbours (load generator, upstream, ingest worker) were.
        wall = time.monotonic() - t0[0]
        result.proxy_cpu = (_cpu_seconds([proc.pid]) - t0[1]) / wall  # type: ignore[attr-defined]
        result.worker_cpu = (_cpu_seconds(workers) - wcpu0) / wall  # type: ignore[attr-defined]
    finally:
        stderr = stop_proxy(proc)
        # A round of 200 KB POSTs records ≈ 1.5 GB: keep only what is being measured on the disk.
        for leftover in workdir.glob(f"bench-{port}.db*"):
            leftover.unlink()
    return result, stderr


def load(port: int, upstream: int, *, body: bytes, content_type: str, tls: str | None, client: str,
         connections: int, seconds: float, workdir: Path, warm_up: bool = True) -> LoadResult:
    """One case's load on the proxy at ``port``: wrk (or the Python client) for plain HTTP, the asyncio TLS
    client through CONNECT for HTTPS (``tls``: "keep-alive" or "new connection"), whose own start-up makes
    a warm-up needless."""
    if tls is not None:
        return _pinned_tls_load(port, upstream, body=body, connections=connections, seconds=seconds,
                                content_type=content_type, reconnect=tls == "new connection")
    if client == "wrk":
        return run_wrk(port, upstream, body=body, connections=connections, seconds=seconds,
                       content_type=content_type, workdir=workdir, warm_up=warm_up)
    return run_load(port, upstream, body=body, connections=connections, seconds=seconds, content_type=content_type)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(proxy_port: int, upstream_port: int, *, body: bytes, connections: int, seconds: float,
            content_type: str, workdir: Path, warm_up: bool = True) -> LoadResult:
    """wrk (C) drives the proxy with absolute-form requests; it needs far less CPU than a Python client.

    ``warm_up``: first a 1 s run that is not counted (a proxy that already carries load needs none).
    """
    body_file = workdir / "body.bin"
    body_file.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
        f'wrk.method = "POST"\nwrk.path = "http://127.0.0.1:{upstream_port}/post"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f'wrk.headers["Host"] = "127.0.0.1:{upstream_port}"\n'
    )
    if warm_up:
        subprocess.run([*_pin(LOAD_CPU), "wrk", "-t1", f"-c{connections}", "-d1s", "-s", str(script),
                        f"http://127.0.0.1:{proxy_port}"], capture_output=True, timeout=60)
    cmd = [*_pin(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(script),
           f"http://127.0.0.1:{proxy_port}"]
    out = subprocess.run(cmd,
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    requests = errors = 0
    p50 = p99 = float("nan")
    for line in out.splitlines():
        words = line.split()
        if "requests in" in line:
            requests = int(words[0])
        elif line.strip().startswith("Non-2xx"):
            errors += int(words[-1])
        elif line.strip().startswith("Socket errors"):
            errors += sum(int(w.rstrip(",")) for w in words if w.rstrip(",").isdigit())
        elif words[:1] == ["50%"]:
            p50 = _ms(words[1])
        elif words[:1] == ["99%"]:
            p99 = _ms(words[1])
    result = LoadResult(requests - errors, errors, seconds, [])
    result.fixed_percentiles = (p50, p99)  # type: ignore[attr-defined]
    return result


def _pinned_tls_load(port: int, upstream: int, **kwargs: Any) -> LoadResult:
    """The asyncio TLS client, in a child process on LOAD_CPU (with the upstream), like wrk."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        if _pin(LOAD_CPU):
            for child in pool._pool:  # type: ignore[attr-defined]
                subprocess.run(["taskset", "-pc", str(LOAD_CPU), str(child.pid)], capture_output=True)
        return pool.apply(_tls_load_job, (port, upstream, kwargs))


def _tls_load_job(port: int, upstream: int, kwargs: dict[str, Any]) -> LoadResult:
    return run_tls_load(port, upstream, **kwargs)


def _ms(text: str) -> float:
    for suffix, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


NGINX_CONF = """worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log stderr error;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {dir}; client_max_body_size 50m;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
  server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
    keepalive_requests 1000000; location / {{ return 200 "ok\\n"; }} }} }}
"""


def start_nginx(port: int, workdir: Path, tls_port: int) -> subprocess.Popen:
    """nginx answering plain HTTP on ``port`` and HTTPS on ``tls_port``."""
    cert, key = self_signed_cert(str(workdir))
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, tls_port=tls_port, cert=cert, key=key))
    proc = subprocess.Popen([*_pin(LOAD_CPU), "nginx", "-c", str(conf), "-p", str(workdir)], stderr=subprocess.PIPE)
    wait_port(port)
    wait_port(tls_port)
    return proc


def telemetry_batch(events: int = 50) -> bytes:
    lines = [json.dumps({"name": "Office.Bench.Event", "time": "2026-01-01T00:00:00.000Z", "ver": "4.0",
                         "iKey": "o:00000000000000000000000000000000", "data": {"n": i, "DeviceId":
                         "11111111-2222-3333-4444-555555555555", "Path": f"C:\\Users\\bench\\doc{i}.docx"}})
             for i in range(events)]
    return "\n".join(lines).encode()


# case → (body, content type, None for plain HTTP or the HTTPS variant)
CASES: dict[str, tuple[bytes, str, str | None]] = {
    "small POST (200 B)": (b"x" * 200, "application/octet-stream", None),
    "large POST (200 KB)": (os.urandom(100 * 1024).hex().encode(), "application/octet-stream", None),
    "1DS JSON batch (50 events)": (telemetry_batch(), "application/x-json-stream", None),
    "HTTPS small POST, keep-alive": (b"x" * 200, "application/octet-stream", "keep-alive"),
    "HTTPS small POST, new conn.": (b"x" * 200, "application/octet-stream", "new connection"),
}


@dataclass
class CaseSummary:
    """Means over the rounds of one case, for each proxy."""

    case: str
    rps: dict[str, float]
    p50: dict[str, float]
    p99: dict[str, float]
    errors: dict[str, int]
    unrecorded_warnings: list[str] = field(default_factory=list)
    proxy_cpu: dict[str, float] = field(default_factory=dict)  # share of a core, mean over rounds
    worker_cpu: float = 0.0  # teletap's ingest worker, share of a core
    rounds: dict[str, list[float]] = field(default_factory=dict)  # requests/s of each round, in order

    @property
    def ratio(self) -> float:
        return self.rps["teletap"] / self.rps["mitmdump"] if self.rps["mitmdump"] else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return ratio_interval(self.rounds["teletap"], self.rounds["mitmdump"])

    @property
    def own_ratio(self) -> float:
        """teletap over mitmdump with teletap's event dispatch: what teletap's own work costs the proxy."""
        base = self.rps["mitmdump-indexed"]
        return self.rps["teletap"] / base if base else float("nan")

    @property
    def own_interval(self) -> tuple[float, float]:
        return ratio_interval(self.rounds["teletap"], self.rounds["mitmdump-indexed"])


def ratio_interval(values: Sequence[float], baseline: Sequence[float], level: float = 0.95,
                   resamples: int = 4000) -> tuple[float, float]:
    """Bootstrap interval of sum(values) / sum(baseline) over paired rounds (round i of each, same minutes).

    On the shared reference VM one proxy's requests/s move by ±10–25 % between slices of a few seconds, as
    much as the gap the 0.9 target is about: a ratio means little without how far it could move. Resampling
    whole pairs keeps what a round's neighbours did to both sides. Seeded, so a table can be reproduced from
    its rounds. With few rounds the interval is rough (three rounds give at most ten distinct resamples).
    A round in which the baseline served nothing measured nothing, and is left out.
    """
    if len(values) != len(baseline):
        raise ValueError("ratio_interval needs the same number of rounds on both sides")
    kept = [(v, b) for v, b in zip(values, baseline, strict=True) if b > 0]
    if not kept:
        raise ValueError("ratio_interval needs at least one round in which the baseline served requests")
    rng, n = random.Random(0), len(kept)
    ratios = []
    for _ in range(resamples):
        picks = [kept[rng.randrange(n)] for _ in range(n)]
        ratios.append(sum(v for v, _ in picks) / sum(b for _, b in picks))
    ratios.sort()
    tail = (1 - level) / 2
    return ratios[int(tail * (resamples - 1))], ratios[int((1 - tail) * (resamples - 1))]


def default_client() -> str:
    return "wrk" if shutil.which("wrk") and shutil.which("nginx") else "python"


def compare(cases: list[str], *, seconds: float = 8, connections: int = 20, rounds: int = 2,
            client: str | None = None, verbose: bool = True, teletap_set: Sequence[str] = (),
            own_cost: bool = False) -> list[CaseSummary]:
    """Run every case against mitmdump and teletap (alternating, ``rounds`` each); returns the means.

    ``own_cost``: also run mitmdump with teletap's event dispatch in each round (``mitmdump-indexed``).
    """
    kinds = ("mitmdump", "mitmdump-indexed", "teletap") if own_cost else ("mitmdump", "teletap")
    args = argparse.Namespace(seconds=seconds, connections=connections, rounds=rounds,
                              client=client or default_client(), teletap_set=list(teletap_set))
    upstream_port, tls_port = free_port(), free_port()
    upstream_dir = tempfile.TemporaryDirectory(prefix="teletap-bench-nginx-")
    upstreams: list[Any] = []
    if args.client == "wrk":
        upstreams.append(start_nginx(upstream_port, Path(upstream_dir.name), tls_port))
    else:
        cert, key = self_signed_cert(upstream_dir.name)
        for target, target_args in ((serve_upstream, (upstream_port,)), (serve_tls_upstream, (tls_port, cert, key))):
            proc = multiprocessing.Process(target=target, args=target_args, daemon=True)
            proc.start()
            upstreams.append(proc)
            if _pin(LOAD_CPU):
                subprocess.run(["taskset", "-pc", str(LOAD_CPU), str(proc.pid)], capture_output=True)
        if _pin(LOAD_CPU):
            os.sched_setaffinity(0, {LOAD_CPU})
        wait_port(upstream_port)
        wait_port(tls_port)
    if verbose:
        print(f"load: {args.client} (HTTPS: asyncio TLS client), {args.connections} connections, "
              f"{args.seconds:.0f} s per run, {args.rounds} round(s) per proxy")
        print(f"{'case':<30} {'proxy':<16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
              f"{'proxy CPU':>9} {'worker CPU':>10}")
    summary = []
    try:
        with tempfile.TemporaryDirectory(prefix="teletap-bench-") as tmp:
            workdir = Path(tmp)
            for case in cases:
                body, ctype, tls = CASES[case]
                totals: dict[str, list[LoadResult]] = {k: [] for k in kinds}
                lat: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
                warnings = []
                for _ in range(args.rounds):
                    for kind in kinds:
                        result, stderr = measure(kind, tls_port if tls else upstream_port, body, args, workdir,
                                                 ctype, tls)
                        totals[kind].append(result)
                        if kind == "teletap":
                            for line in teletap_notes(stderr):
                                warnings.append(line)
                                if verbose:
                                    print(f"  warning: {line}")
                        p50, p99 = getattr(result, "fixed_percentiles", (result.p50, result.percentile(99)))
                        lat[kind].append((p50, p99))
                        if verbose:
                            print(f"{case:<30} {kind:<16} {result.rps:8.0f} {p50:8.1f} {p99:8.1f} "
                                  f"{result.errors:6d} {result.proxy_cpu:9.0%} {result.worker_cpu:10.0%}",
                                  flush=True)
                summary.append(CaseSummary(
                    case, rps={k: sum(r.rps for r in totals[k]) / args.rounds for k in kinds},
                    p50={k: sum(p for p, _ in lat[k]) / args.rounds for k in kinds},
                    p99={k: sum(p for _, p in lat[k]) / args.rounds for k in kinds},
                    errors={k: sum(r.errors for r in totals[k]) for k in kinds}, unrecorded_warnings=warnings,
                    proxy_cpu={k: sum(r.proxy_cpu for r in totals[k]) / args.rounds for k in kinds},
                    worker_cpu=sum(r.worker_cpu for r in totals["teletap"]) / args.rounds,
                    rounds={k: [r.rps for r in totals[k]] for k in kinds}))
    finally:
        for upstream in upstreams:
            upstream.terminate()
        upstream_dir.cleanup()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--client", choices=["wrk", "python"], default=default_client(),
                        help="load generator and upstream: wrk + nginx (Debian packages wrk, nginx-light; "
                             "default when installed) or the pure-Python fallback in loadgen.py")
    parser.add_argument("--teletap-set", action="append", default=[], metavar="OPTION=VALUE",
                        help="run teletap with this option too (repeatable), e.g. teletap_max_body=65536")
    parser.add_argument("--own-cost", action="store_true",
                        help="also run mitmdump with teletap's event dispatch (mitmdump_indexed.py) in every "
                             "round: teletap over it is what teletap's own work costs")
    args = parser.parse_args()
    summary = compare(args.cases, seconds=args.seconds, connections=args.connections, rounds=args.rounds,
                      client=args.client, teletap_set=args.teletap_set, own_cost=args.own_cost)
    print("\nteletap / mitmdump requests/s (target >= 0.90), 95 % interval over the paired rounds")
    for s in summary:
        low, high = s.interval
        print(f"  {s.case:<30} {s.ratio:5.2f}   {low:.2f}–{high:.2f}")
    if args.own_cost:
        print("\nteletap / mitmdump with teletap's dispatch (teletap's own cost), 95 % interval")
        for s in summary:
            low, high = s.own_interval
            print(f"  {s.case:<30} {s.own_ratio:5.2f}   {low:.2f}–{high:.2f}")


if __name__ == "__main__":
    main()
