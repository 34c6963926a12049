"""A HAR larger than the memory the import may use: the import streams it (peak RSS well below the file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .support import rows, teletap_command

pytestmark = pytest.mark.e2e

ENTRIES = 150
BODY = 2 * 1024 * 1024  # 2 MiB per request body: a 300 MB file


def _entry(i: int) -> str:
    return json.dumps({
        "startedDateTime": "2026-11-25T10:00:00.000Z", "time": 1,
        "request": {"method": "POST", "url": f"http://upload.example.invalid/u{i}", "httpVersion": "HTTP/1.1",
                    "headers": [{"name": "content-type", "value": "text/plain"}], "cookies": [], "queryString": [],
                    "headersSize": -1, "bodySize": BODY,
                    "postData": {"mimeType": "text/plain", "text": f"{i:08d}" + "x" * (BODY - 8)}},
        "response": {"status": 204, "statusText": "", "httpVersion": "HTTP/1.1", "cookies": [], "headers": [],
                     "content": {"size": 0, "mimeType": ""}, "redirectURL": "", "headersSize": -1, "bodySize": 0},
        "cache": {}, "timings": {"send": 0, "wait": 1, "receive": 0},
    })


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_300_mb_har_is_imported_in_bounded_memory(tmp_path: Path, jobs: str) -> None:
    har = tmp_path / "big.har"
    with open(har, "w") as f:
        f.write('{"log": {"version": "1.2", "creator": {"name": "test", "version": "1"}, "entries": [')
        f.write(",".join(_entry(i) for i in range(ENTRIES)))
        f.write("]}}")
    size = har.stat().st_size
    assert size > 300_000_000
    db = tmp_path / "t.db"
    # An intermediate process reports the peak RSS of the import alone (RUSAGE_CHILDREN of this test
    # process would include every child the test run ever had).
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    try:
        r = subprocess.run([sys.executable, "-c", probe, *teletap_command("import", str(har), "--db", str(db),
                                                                           "--jobs", jobs)],
                           capture_output=True, text=True, timeout=600)
    finally:
        har.unlink()  # pytest keeps old tmp dirs: do not leave 300 MB behind
    assert r.returncode == 0, r.stderr
    peak_mib = int(r.stdout.strip().splitlines()[-1]) / 1024
    # measured ~70 MiB; loading the file whole (json.load) would need well over its 300 MB
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB for a {size / 1e6:.0f} MB file"
    flows = rows(db, "SELECT request_size, request_body_truncated, length(request_body) AS kept FROM flows")
    assert len(flows) == ENTRIES
    assert all(f["request_size"] == BODY and f["request_body_truncated"] == 1 and f["kept"] == 1024 * 1024
               for f in flows)
