"""The benchmark's second baseline, mitmdump with teletap's event dispatch, must proxy like mitmdump."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from .support import LOOPBACK, Upstream, free_port, wait_for_port

SCRIPT = Path(__file__).parent.parent / "bench" / "mitmdump_indexed.py"
REPORT = """
from mitmproxy import ctx


class Report:
    def response(self, flow):
        flow.response.headers["x-dispatch"] = type(ctx.master.addons).__name__


addons = [Report()]
"""


def test_mitmdump_with_teletaps_dispatch_proxies_through_it(tmp_path: Path):
    port = free_port()
    (tmp_path / "report.py").write_text(REPORT)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "-q", "--listen-host", LOOPBACK, "--listen-port",
                             str(port), "--set", f"confdir={tmp_path / 'conf'}", "-s", str(tmp_path / "report.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_port(port, proc=proc)
        with Upstream() as upstream, httpx.Client(proxy=f"http://{LOOPBACK}:{port}", timeout=10) as client:
            answers = [client.post(f"http://{LOOPBACK}:{upstream.port}/bench/{i}", content=b"x" * 200)
                       for i in range(3)]
            received = upstream.requests
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert [a.status_code for a in answers] == [200] * 3, output
    assert {a.headers["x-dispatch"] for a in answers} == {"IndexedAddonManager"}
    assert [path for _, path, _ in received] == ["/bench/0", "/bench/1", "/bench/2"]
