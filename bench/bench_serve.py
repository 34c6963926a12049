"""Datasette canned-query latency and report time on a generated evidence DB (default 1M flows, 5M events).

    python bench/bench_serve.py [--flows 1000000] [--events-per-flow 5] [--keep DIR] [--db EXISTING]

The DB is written with plain ``sqlite3.executemany`` into the schema ``teletap.store.connect`` creates
(indexes dropped during the load and recreated from ``teletap.schema`` afterwards, as fast as SQLite can
go); rows look like an office's capture: ~2,000 hosts, most of them matched to bundled signatures, 1DS
event batches (to a dozen collector hosts) with stored bodies, findings on a fifth of the flows (50,000
distinct values), pinned/passthrough connections. The summary tables are counted once after the load.
No ANALYZE is run: a live teletap DB has no statistics either.

Every canned query of ``teletap.datasette_meta.QUERIES`` is then fetched through a real ``teletap serve``
on 127.0.0.1 (JSON API, default parameters: everything): the first (cold) time and the best of the
following runs are printed against the 500 ms target. Finally ``teletap report`` writes HTML and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import free_port, wait_port

from teletap import summaries
from teletap.datasette_meta import QUERIES
from teletap.findings.model import severity_for
from teletap.schema import TABLES_BY_NAME
from teletap.signatures import SignatureSet, signature_rows
from teletap.store import Store, connect, iso

QUERY_TARGET_MS = 500.0
LEVELS = ("office-required", "office-essential-service", "windows-required", "undocumented", None)
FINDING_KINDS = ("email", "ipv4-public", "known-email", "vendor-pii:SmtpAddress", "device-name", "canary",
                 "windows-sid", "file-path-user")


def _insert_sql(table: str) -> str:
    cols = TABLES_BY_NAME[table].column_names
    return f"INSERT INTO [{table}] ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def _row(table: str, values: dict) -> tuple:
    return tuple(values.get(c) for c in TABLES_BY_NAME[table].column_names)


def generate(path: Path, flows: int, events: int | None = None, seed: int = 5,
             progress: bool = True) -> dict[str, int]:
    """Write a DB of ``flows`` flows and ``events`` events (default 5 per flow); returns row counts."""
    rnd = random.Random(seed)
    events = 5 * flows if events is None else events
    telemetry_flows = flows - (flows + 1) // 5  # every flow but i % 5 == 4 carries a batch
    events_per_flow = -(-events // max(1, telemetry_flows))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    sigset = SignatureSet.load()
    store = Store(path)  # the real schema, signatures table and session rows
    store.replace_signatures(signature_rows(sigset))
    sessions = [store.start_session(label=f"bench session {i}", kind="live", options={}, signature_set_hash=sigset.hash,
                                    mitmproxy_version="11.0.2") for i in (1, 2)]
    store.close()
    sigs = list(sigset.signatures)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # generation only: a crash here just means generating again
    conn.execute("PRAGMA cache_size = -262144")
    indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")]
    for name in indexes:  # bulk load first, index after: several times faster than updating 4 indexes per row
        conn.execute(f"DROP INDEX [{name}]")

    # ~2,000 destinations: 80 % of traffic to signature hosts (some third-party), the rest undocumented.
    hosts: list[tuple[str, dict]] = []
    for i in range(2000):
        if i < 1600 and sigs:
            s = sigs[i % len(sigs)]
            sig = {"signature_id": s.id, "category": s.category, "vendor": s.vendor, "data_flow": s.data_flow}
        else:
            sig = {"signature_id": "undocumented", "category": None, "vendor": None, "data_flow": None}
        hosts.append((f"h{i}.svc{i % 97}.example.invalid", sig))
    weights = [1.0 / (1 + i) ** 0.8 for i in range(len(hosts))]  # a few hosts carry most traffic
    # 1DS batches go to a dozen collector endpoints, as in a real capture (Microsoft documents a handful of
    # OneCollector hosts); the other flows spread over all hosts.
    collectors = 12
    names = [(f"Office.Bench.Area{i % 40}.Event{i}", LEVELS[i % len(LEVELS)]) for i in range(3000)]
    name_weights = [1.0 / (1 + i) ** 0.9 for i in range(len(names))]
    bodies = [json.dumps([{"name": names[k][0], "data": {"n": k, "DeviceId": "11111111-2222-3333-4444-"
                                                         f"{k:012d}", "Path": "C:\\Users\\bench\\doc.docx"}}
                          for k in range(j, j + events_per_flow)]).encode() for j in range(200)]
    datas = [json.dumps({"name": n, "data": {"Activity.Duration": k, "Data.DeviceId": f"s:{k:08x}-2222-4000-8000-"
                                             "000000000abc", "Data.FileName": "report.docx"}}) for k, (n, _) in
             enumerate(names[:500])]
    start = 1_764_000_000.0  # spread over one week
    flow_sql, event_sql, finding_sql = _insert_sql("flows"), _insert_sql("events"), _insert_sql("findings")
    conn_sql = _insert_sql("connections")
    counts = {"flows": 0, "events": 0, "findings": 0, "connections": 0}
    t0 = time.perf_counter()
    chunk = 20_000
    event_id = finding_id = 0
    for base in range(0, flows, chunk):
        flow_rows, event_rows, finding_rows, conn_rows = [], [], [], []
        picks = rnd.choices(range(len(hosts)), weights, k=min(chunk, flows - base))
        collector_picks = rnd.choices(range(collectors), weights[:collectors], k=len(picks))
        for n, h in enumerate(picks):
            i = base + n
            telemetry = i % 5 != 4
            if telemetry:
                h = collector_picks[n]
            host, sig = hosts[h]
            session = sessions[0] if i < flows // 2 else sessions[1]
            t = start + i * (7 * 86400 / flows)
            fid = f"{i:08x}-bench-4000-8000-{rnd.getrandbits(48):012x}"
            # events spread evenly over the telemetry flows, so the total is exactly `events`
            k_tel = i - (i + 1) // 5
            nev = events * (k_tel + 1) // telemetry_flows - events * k_tel // telemetry_flows if telemetry else 0
            body = bodies[i % len(bodies)] if telemetry else None
            nfind = 2 if i % 5 == 0 else 0
            flow_rows.append(_row("flows", {
                "id": fid, "session_id": session, "request_time": iso(t), "response_time": iso(t + 0.05),
                "duration_ms": 50.0, "client_address": f"10.0.{h % 8}.{i % 200 + 1}", "client_port": 40000 + i % 20000,
                "server_address": f"192.0.2.{h % 250 + 1}", "server_port": 443, "scheme": "https", "host": host,
                "port": 443, "method": "POST" if telemetry else "GET", "path": "/OneCollector/1.0/",
                "query": "", "url": f"https://{host}/OneCollector/1.0/", "http_version": "HTTP/1.1", "status": 200,
                "request_headers": '[["Content-Type", "application/x-json-stream"]]',
                "response_headers": '[["Content-Type", "application/json"]]',
                "request_content_type": "application/x-json-stream" if telemetry else None,
                "response_content_type": "application/json", "request_size_wire": len(body or b"") // 3,
                "request_size": len(body or b""), "response_size_wire": 9, "response_size": 9,
                "request_sha256": "0" * 64 if body else None, "response_sha256": "1" * 64,
                "request_body": body, "request_body_truncated": 0, "response_body": b'{"acc":1}',
                "response_body_truncated": 0, "answered_by_teletap": 0, "tls_version": "TLSv1.3", "sni": host,
                **sig, "decode_format": "1ds-json" if telemetry else None, "event_count": nev,
                "finding_count": nfind, "source": "live"}))
            if nev:
                for pos, k in enumerate(rnd.choices(range(len(names)), name_weights, k=nev)):
                    event_id += 1
                    name, level = names[k]
                    event_rows.append(_row("events", {
                        "id": event_id, "flow_id": fid, "session_id": session, "direction": "request",
                        "position": pos, "format": "1ds-json", "name": name, "time": iso(t), "ikey": "o:bench",
                        "sdk_version": "1DS-Web-JS-4.4.4", "app_id": "Word", "app_version": "16.0",
                        "os_name": "Windows", "os_version": "10.0.22631", "device_id": f"s:{h:08x}",
                        "user_id": f"m:{i % 5000:016x}", "documented_level": level,
                        "data": datas[k % len(datas)], "pii": None, **sig}))
            for j in range(nfind):
                finding_id += 1
                value = (i * 7 + j) % 50000  # a value keeps its kind; severity follows kind and data flow
                kind = FINDING_KINDS[value % len(FINDING_KINDS)]
                finding_rows.append(_row("findings", {
                    "id": finding_id, "flow_id": fid, "event_id": event_id if nev else None, "session_id": session,
                    "location": "event:data.Data.UserEmail", "kind": kind, "detector": "regex:email",
                    "confidence": 0.9, "severity": severity_for(kind, sig["data_flow"]),
                    "preview": "u***@example.invalid", "value_hash": f"{value:064x}", "host": host, **sig}))
            if i % 20 == 0:
                conn_rows.append(_row("connections", {
                    "id": f"c{i:08x}-bench", "session_id": session,
                    "kind": ("tls-failed-client", "passthrough", "tls-failed-server")[i % 3], "started": iso(t),
                    "ended": iso(t + 1), "duration_ms": 1000.0, "client_address": f"10.0.{h % 8}.{i % 200 + 1}",
                    "client_port": 40000, "server_address": f"192.0.2.{h % 250 + 1}", "server_port": 443,
                    "sni": f"pinned{h % 300}.example.invalid", "observable": 0,
                    "reason": "the client refused the proxy's certificate", "bytes_from_client": 517,
                    "bytes_from_server": 0, **hosts[-1 - h % 400][1]}))
        conn.execute("BEGIN")
        conn.executemany(flow_sql, flow_rows)
        conn.executemany(event_sql, event_rows)
        conn.executemany(finding_sql, finding_rows)
        conn.executemany(conn_sql, conn_rows)
        conn.execute("COMMIT")
        counts["flows"] += len(flow_rows)
        counts["events"] += len(event_rows)
        counts["findings"] += len(finding_rows)
        counts["connections"] += len(conn_rows)
        if progress and (base // chunk) % 10 == 9:
            print(f"  generated {counts['flows']:,} flows, {counts['events']:,} events "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    for table in TABLES_BY_NAME.values():  # the schema's own index definitions, recreated after the load
        for statement in table.create_sql()[1:]:
            conn.execute(statement)
    # The summaries ingest keeps batch by batch, counted here once from the bulk-loaded rows (same SQL).
    conn.execute("BEGIN")
    summaries.rebuild(conn)
    conn.execute("COMMIT")
    conn.execute("UPDATE sessions SET ended = started, items_recorded = ?", (counts["flows"],))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    connect(path).close()  # teletap accepts it as its own
    return counts


@dataclass
class QueryTiming:
    name: str
    cold_ms: float
    best_ms: float
    rows: int
    error: str | None = None


def _get(url: str, timeout: float = 120) -> tuple[float, dict]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        data = {"ok": False, "error": f"HTTP {e.code}: {e.read()[:200].decode(errors='replace')}"}
    return (time.perf_counter() - t0) * 1000, data


def time_queries(db: Path, repeat: int = 3, verbose: bool = False) -> tuple[float, list[QueryTiming]]:
    """Time every canned query through a real `teletap serve` over HTTP on 127.0.0.1.

    Returns the best time of a trivial query (``select 1``: Datasette's own round trip, the baseline) and
    the timings of the canned queries.
    """
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "teletap", "serve", "--db", str(db), "--port", str(port),
                             # time-limit raised so slow queries are measured instead of cut off at 5 s
                             "--setting", "sql_time_limit_ms", "120000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: list[QueryTiming] = []
    trivial = float("nan")
    try:
        wait_port(port, timeout=60)
        dbname = db.stem
        _get(f"http://127.0.0.1:{port}/{dbname}.json")  # warm Datasette itself
        trivial = min(_get(f"http://127.0.0.1:{port}/{dbname}.json?sql=select+1&_shape=objects")[0]
                      for _ in range(5))
        for name, query in QUERIES.items():
            params = {p: "" for p in query.get("params", [])}
            if "session_a" in params:
                params.update(session_a="1", session_b="2")
            url = (f"http://127.0.0.1:{port}/{dbname}/{name}.json?_shape=objects&"
                   + urllib.parse.urlencode(params))
            times, rows, error = [], 0, None
            for _ in range(repeat):
                ms, data = _get(url)
                times.append(ms)
                if data.get("ok") is False or data.get("error"):
                    error = str(data.get("error"))[:120]
                rows = len(data.get("rows", []))
            out.append(QueryTiming(name, times[0], min(times[1:] or times), rows, error))
            if verbose:
                print(f"  {name}: cold {times[0]:.0f} ms, best {out[-1].best_ms:.0f} ms", file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    return trivial, out


def time_report(db: Path, fmt: str, outdir: Path, timeout: float = 1800) -> tuple[float, str | None]:
    """Wall time of `teletap report --format FMT` on the DB (a child process, as an officer runs it)."""
    out = outdir / f"report.{fmt}"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "teletap", "report", "--db", str(db), "--format", fmt,
                               "--out", str(out), "--generated-at", "2026-11-25T12:00:00Z"],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return timeout, f"timed out after {timeout:.0f} s"
    elapsed = time.perf_counter() - t0
    error = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
    return elapsed, error


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, help="events in all (default: 5 per flow)")
    ap.add_argument("--keep", type=Path, help="directory to keep the DB in (reused by --db)")
    ap.add_argument("--db", type=Path, help="use this generated DB instead of generating one")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="teletap-bench-serve-")
    workdir = args.keep or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    db = args.db or workdir / "bench.db"
    if args.db is None:
        t0 = time.perf_counter()
        counts = generate(db, args.flows, args.events)
        print(f"generated {counts} in {time.perf_counter() - t0:.0f} s, "
              f"{os.path.getsize(db) / 2**30:.2f} GiB")
    trivial, timings = time_queries(db, verbose=True)
    print(f"select 1 through teletap serve: {trivial:.1f} ms")
    print(f"{'canned query':<26}{'cold ms':>10}{'best ms':>10}{'rows':>7}  <= {QUERY_TARGET_MS:.0f} ms")
    for q in timings:
        ok = "yes" if q.best_ms <= QUERY_TARGET_MS and not q.error else "NO"
        print(f"{q.name:<26}{q.cold_ms:>10.0f}{q.best_ms:>10.0f}{q.rows:>7}  {ok}{'  ' + q.error if q.error else ''}")
    if not args.no_report:
        for fmt in ("html", "json"):
            seconds, error = time_report(db, fmt, workdir)
            print(f"teletap report --format {fmt}: {seconds:.1f} s{'  ' + error if error else ''}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
