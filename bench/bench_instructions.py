"""Proxy CPU work per request, counted in instructions: teletap run vs plain mitmdump, and vs mitmdump with
teletap's event dispatch (mitmdump_indexed.py, which leaves teletap's own work), free of machine noise.

    python bench/bench_instructions.py [--requests 400] [--cases ...]

Requests/s on a shared 2-core VM move by ±5–10 % from one run to the next; the ratio that issue 9 targets
is within that noise. Instructions do not depend on what else the machine is doing: each proxy runs under
valgrind's callgrind with counting switched off, gets a warm-up, then counting is switched on for exactly
``--requests`` requests (20 keep-alive connections, so requests queue up as under load) and off again.
Only the proxy process is counted: teletap's ingest worker is a separate process that valgrind does not
follow, and it runs at full speed. The same count for the same code is repeatable to ≈ 0.2 %.

What instructions do not show: memory copies and page faults cost far more time per instruction than
Python's interpreter loop, and time in the kernel (the pipe to the ingest worker) is not counted at all.
So this figure is the floor of teletap's extra cost; the wall-clock ratio of bench_proxy.py includes the
rest.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_proxy import CASES, mitmdump_program, start_nginx
from loadgen import free_port, wait_port

CONNECTIONS = 20


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def _load(proxy_port: int, upstream_port: int, body: bytes, content_type: str, requests: int) -> None:
    """``requests`` POSTs through the proxy on CONNECTIONS keep-alive connections; every answer must be 200."""
    errors: list[str] = []

    def client(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=600)
        try:
            for _ in range(count):
                conn.request("POST", f"http://127.0.0.1:{upstream_port}/post", body=body,
                             headers={"Content-Type": content_type, "Host": f"127.0.0.1:{upstream_port}"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors.append(f"status {response.status}")
        except OSError as e:
            errors.append(str(e))
        finally:
            conn.close()

    shares = [requests // CONNECTIONS + (i < requests % CONNECTIONS) for i in range(CONNECTIONS)]
    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed through the proxy: {errors[0]}")


def count(kind: str, case: str, requests: int, workdir: Path, upstream_port: int) -> float:
    """Instructions per request of one proxy process for one case."""
    body, content_type, tls = CASES[case]
    if tls is not None:
        raise ValueError("HTTPS cases are not counted here (the TLS client would need the proxy's CA)")
    port = free_port()
    out = workdir / f"callgrind-{kind}-{port}.out"
    if kind != "teletap":
        command = [*mitmdump_program(kind), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port)]
    else:
        command = [sys.executable, "-m", "teletap", "run", "--db", str(workdir / f"instr-{port}.db"),
                   "--listen-port", str(port), "--confdir", str(workdir / "conf")]
    log = open(workdir / f"proxy-{port}.log", "w+")  # noqa: SIM115  (closed below, after the process)
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                             *command], stdout=subprocess.DEVNULL, stderr=log, cwd=workdir)
    try:
        wait_port(port, timeout=600)  # ≈ 50× slower under valgrind: starting takes a minute or more
        deadline = time.monotonic() + 600
        while kind == "teletap" and "recording session" not in Path(log.name).read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"teletap did not start under valgrind:\n{Path(log.name).read_text()[-2000:]}")
            time.sleep(0.5)
        _load(port, upstream_port, body, content_type, 100)  # warm-up: imports, caches, first connections
        time.sleep(1)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
        _load(port, upstream_port, body, content_type, requests)
        time.sleep(1)  # let the last batch go out to the ingest worker: part of these requests' cost
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(300)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    total = 0
    for dump in workdir.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    if not total:
        raise RuntimeError(f"no instruction count in {out}*")
    return total / requests


KINDS = ("mitmdump", "mitmdump-indexed", "teletap")


def compare(cases: list[str], requests: int) -> dict[str, dict[str, float]]:
    """{case: {kind: instructions/request}} for each of KINDS."""
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="teletap-bench-instr-") as tmp:
        workdir = Path(tmp)
        upstream_port, tls_port = free_port(), free_port()
        nginx = start_nginx(upstream_port, workdir, tls_port)
        try:
            for case in cases:
                results[case] = {kind: count(kind, case, requests, workdir, upstream_port) for kind in KINDS}
                r = results[case]
                print(f"{case:<30} mitmdump {r['mitmdump'] / 1e6:7.3f} M  with teletap's dispatch "
                      f"{r['mitmdump-indexed'] / 1e6:7.3f} M  teletap {r['teletap'] / 1e6:7.3f} M instructions/request"
                      f"  ratios {r['teletap'] / r['mitmdump']:.3f}, {r['teletap'] / r['mitmdump-indexed']:.3f}",
                      flush=True)
        finally:
            nginx.terminate()
            nginx.wait(10)
    return results


PLAIN_CASES = [case for case, (_, _, tls) in CASES.items() if tls is None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--cases", nargs="*", default=PLAIN_CASES, choices=PLAIN_CASES)
    args = parser.parse_args()
    if not available():
        print("valgrind (with callgrind_control) is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    if not shutil.which("nginx"):
        print("nginx is needed as the upstream: apt-get install nginx", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in every run
    compare(args.cases, args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
