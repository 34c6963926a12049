"""Import throughput and memory: ``teletap import`` of a generated HAR of N flows (default 100k).

The HAR mixes what an Office/Windows capture holds: 1DS Bond batches (as mitmproxy writes them: latin-1
text), 1DS JSON batches with personal data, Application-Insights-like JSON, form posts and plain GETs.
The import runs as a real ``teletap import`` child process; its wall time gives flows/s and events/s (both
passes: check and import), and its ``ru_maxrss`` the peak memory, which must not grow with the file.

Run: python bench/bench_import.py [--flows N] [--jobs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bond_encoder import Prop, encode, record

IKEY = "o:0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _bond_batch(i: int) -> bytes:
    return b"".join(encode(record(name=f"Office.Bench.Event{j}", ikey=IKEY, data={
        "Data.UserEmail": Prop("String", f"user{i}@example.invalid"), "Data.Seq": Prop("Int64", i * 10 + j)}))
        for j in range(5))


def _entry(i: int) -> dict:
    kind = i % 5
    started = f"2026-11-25T10:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}Z"
    headers = [{"name": "Host", "value": "self.events.data.microsoft.com"}]
    post: dict | None = None
    url = "https://self.events.data.microsoft.com/OneCollector/1.0/"
    if kind == 0:
        post = {"mimeType": "application/bond-compact-binary", "text": _bond_batch(i).decode("latin-1")}
    elif kind == 1:
        lines = "\n".join(json.dumps({"ver": "4.0", "name": f"Office.Bench.Json{j}", "iKey": IKEY,
                                      "time": started, "data": {"mail": f"user{i}@example.invalid", "n": j}})
                          for j in range(5))
        post = {"mimeType": "application/x-json-stream", "text": lines}
    elif kind == 2:
        url = "https://dc.services.visualstudio.com/v2/track"
        post = {"mimeType": "application/json", "text": json.dumps([
            {"name": "Microsoft.ApplicationInsights.Event", "time": started, "iKey": "00000000-0000-4000-8000-"
             "000000000001", "data": {"baseType": "EventData", "baseData": {"name": f"Bench{i}"}}}])}
    elif kind == 3:
        url = "https://login.example.invalid/form"
        post = {"mimeType": "application/x-www-form-urlencoded", "text": f"user=user{i}%40example.invalid&x=1"}
    else:
        url = f"https://config.example.invalid/settings?id={i}&client=bench"
    if post is not None:
        headers.append({"name": "Content-Type", "value": post["mimeType"]})
    return {
        "startedDateTime": started, "time": 12.5,
        "request": {"method": "POST" if post else "GET", "url": url, "httpVersion": "HTTP/1.1", "cookies": [],
                    "headers": headers, "queryString": [], "headersSize": -1, "bodySize": -1,
                    **({"postData": post} if post else {})},
        "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1", "cookies": [],
                     "headers": [{"name": "Content-Type", "value": "application/json"}],
                     "content": {"size": 2, "mimeType": "application/json", "text": "{}"}, "redirectURL": "",
                     "headersSize": -1, "bodySize": 2},
        "cache": {}, "timings": {"send": 0, "wait": 12.5, "receive": 0},
    }


def generate(path: Path, flows: int) -> None:
    """Written entry by entry: the generator's memory does not grow with the file either."""
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"log": {"version": "1.2", "creator": {"name": "mitmproxy", "version": "11.0.2"}, "pages": [], '
                '"entries": [\n')
        for i in range(flows):
            f.write(("" if i == 0 else ",\n") + json.dumps(_entry(i), indent=1))
        f.write("\n]}}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="directory to keep the HAR and database in")
    parser.add_argument("--jobs", type=int, default=0, help="teletap import --jobs (0: one per CPU, at most 8)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="teletap-bench-import-"))
    work.mkdir(parents=True, exist_ok=True)
    har, db = work / "bench.har", work / "bench.db"
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    generate(har, args.flows)
    print(f"generated {args.flows} flows, {har.stat().st_size / 1e6:.1f} MB HAR in {time.perf_counter() - t0:.1f}s")

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "teletap", "import", str(har), "--db", str(db),
                           "--jobs", str(args.jobs)],
                          capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"import failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the import process and its workers
    peak_kib = usage.ru_maxrss  # Linux: KiB
    cpu = usage.ru_utime + usage.ru_stime

    conn = sqlite3.connect(db)
    flows, events, findings = (conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                               for t in ("flows", "events", "findings"))
    conn.close()
    print(proc.stdout.strip())
    print(f"import (check + import passes, --jobs {args.jobs or min(8, os.cpu_count() or 1)}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}): {elapsed:.1f}s")
    print(f"  {flows / elapsed:,.0f} flows/s, {events / elapsed:,.0f} events/s "
          f"({flows} flows, {events} events, {findings} findings)")
    print(f"  CPU time {cpu:.1f}s: {flows / cpu:,.0f} flows and {events / cpu:,.0f} events per CPU-second "
          "(independent of other load on the host; wall-clock rates above are not)")
    print(f"  peak memory (ru_maxrss, largest of the import process and its workers): {peak_kib / 1024:.0f} MiB "
          f"for a {har.stat().st_size / 1e6:.0f} MB file")
    if flows != args.flows:
        sys.exit(f"expected {args.flows} flows, found {flows}")
    if not args.keep:
        for p in work.iterdir():
            p.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
