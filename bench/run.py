"""teletap's benchmark suite: one command, one table, every figure next to a baseline measured in the same run.

    python bench/run.py --quick          # a few minutes: short proxy runs, 30k-flow memory run, 100k-flow DB
    python bench/run.py                  # full: 3 rounds per proxy case, 1M-flow memory run, 1M-flow/5M-event DB
    python bench/run.py --only proxy ingest     # a subset: proxy instructions ingest decoders match detect memory serve
    python bench/run.py --serve-db PATH  # time queries and reports on an already generated DB (bench_serve.py --keep)

Figures and their baselines (see docs/benchmarks.md for what each means):

- proxy: requests/s and p50/p99 latency of `teletap run` vs plain `mitmdump` under the same load
  (bench_proxy.py: alternating rounds, proxy pinned to CPU 1, load and upstream to CPU 0; see
  TELETAP_BENCH_PROXY_CPU), and requests/s vs mitmdump with teletap's event dispatch (teletap's own cost);
- instructions: the proxy process's instructions per request, teletap vs mitmdump, counted by callgrind
  (bench_instructions.py): noise-free where requests/s are not, but blind to copies and kernel time;
- ingest: events/s through teletap's own Pipeline (decode → match → detect) and Store, vs json.loads of the
  same events; decoders alone (bench_decoders.py);
- match: per-flow signature match with 10,000 signatures vs 10 (bench_match.py);
- detect: personal-data detection flows/s with 10,000 identifiers vs 10 (bench_findings.py);
- memory: RSS slope of a running `teletap run` over N flows vs plain mitmdump (bench_memory.py);
- serve: every canned query through a real `teletap serve` vs a trivial query, and `teletap report` HTML/JSON
  vs one plain scan of the same rows (bench_serve.py).

Each figure is printed with the target of issue 9 where one exists. Exit status 0 even if targets are missed:
the table is the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_decoders
import bench_findings
import bench_instructions
import bench_match
import bench_memory
import bench_proxy
import bench_serve

from teletap.ingest import ProcessIngest
from teletap.pipeline import build_pipeline
from teletap.records import Body, HttpFlowRecord
from teletap.store import FlowRows, Store

SECTIONS = ("proxy", "instructions", "ingest", "decoders", "match", "detect", "memory", "serve")


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    baseline: float | None = None  # same unit, measured in the same run
    baseline_name: str = ""
    ratio: float | None = None  # value / baseline unless given
    target: str = ""
    meets: bool | None = None
    note: str = ""


FIGURES: list[Figure] = []


def add(fig: Figure) -> None:
    if fig.ratio is None and fig.baseline:
        fig.ratio = fig.value / fig.baseline
    FIGURES.append(fig)
    print(f"  [{fig.section}] {fig.name}: {fig.value:,.2f} {fig.unit}"
          + (f" (baseline {fig.baseline:,.2f}, ratio {fig.ratio:.2f})" if fig.baseline else "")
          + (f" target {fig.target}: {'yes' if fig.meets else 'NO'}" if fig.target and fig.meets is not None else ""),
          flush=True)


# --- proxy ---------------------------------------------------------------------------------------------------


def _spread(interval: tuple[float, float], rounds: int) -> str:
    # One round has no spread to resample: a degenerate interval would look like certainty.
    return (f"95 % interval {interval[0]:.2f}–{interval[1]:.2f} over {rounds} paired rounds" if rounds > 1
            else "one round: no interval (the full mode runs three)")


def run_proxy(quick: bool) -> None:
    summary = bench_proxy.compare(list(bench_proxy.CASES), seconds=5 if quick else 15, rounds=1 if quick else 3,
                                  connections=20, own_cost=True)
    for s in summary:
        rounds = len(s.rounds["teletap"])
        note = (f"{_spread(s.interval, rounds)}; "
                f"CPU: proxy {s.proxy_cpu['teletap']:.0%} (mitmdump {s.proxy_cpu['mitmdump']:.0%}), "
                f"ingest worker {s.worker_cpu:.0%}")
        errors = s.errors["teletap"] + s.errors["mitmdump"]
        if errors:
            note += f"; {errors} client errors"
        if s.unrecorded_warnings:
            note += "; " + "; ".join(sorted(set(s.unrecorded_warnings)))[:200]
        add(Figure("proxy", f"{s.case}: req/s", s.rps["teletap"], "req/s", s.rps["mitmdump"], "mitmdump",
                   target=">= 0.90x", meets=s.ratio >= 0.9, note=note))
        # teletap run dispatches mitmproxy's events by index (addons/dispatch.py), which saves more than
        # teletap's own work costs; against mitmdump with the same dispatch, that cost shows on its own.
        add(Figure("proxy", f"{s.case}: req/s, teletap's own cost", s.rps["teletap"], "req/s",
                   s.rps["mitmdump-indexed"], "mitmdump with teletap's dispatch",
                   note=_spread(s.own_interval, rounds)))
        for q, values in (("p50", s.p50), ("p99", s.p99)):
            added = values["teletap"] - values["mitmdump"]
            add(Figure("proxy", f"{s.case}: {q} latency", values["teletap"], "ms", values["mitmdump"], "mitmdump",
                       note=f"added {added:+.1f} ms"))


def run_instructions(quick: bool) -> None:
    if not bench_instructions.available():
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    results = bench_instructions.compare(bench_instructions.PLAIN_CASES, requests=200 if quick else 400)
    for case, counts in results.items():
        add(Figure("instr", f"{case}: proxy instructions/request", counts["teletap"] / 1e6, "M instructions",
                   counts["mitmdump"] / 1e6, "mitmdump",
                   note="callgrind, proxy process only; repeatable to ~0.2 %; excludes kernel time and "
                        "the cost of memory copies"))
        add(Figure("instr", f"{case}: proxy instructions/request, teletap's own", counts["teletap"] / 1e6,
                   "M instructions", counts["mitmdump-indexed"] / 1e6, "mitmdump with teletap's dispatch"))


# --- ingest: teletap's own pipeline and store, vs json.loads of the same events -----------------------------


class _NoSummaries:
    """Stands in for ``Summaries`` in the baseline store: same writes, no summary upkeep."""

    def begin(self, flow_ids: object, connection_ids: object) -> None:
        pass

    def commit(self) -> None:
        pass


def _ingest_capacity(record: HttpFlowRecord, flows: int, workers: int) -> float:
    """Events/s through a real ProcessIngest: submit ``flows`` copies of ``record``, then wait until stored."""
    with tempfile.TemporaryDirectory(prefix="teletap-bench-capacity-") as tmp:
        # queue_size counts records, the queue holds batches of up to 64; outside an event loop each submit
        # sends a batch of one record, so this leaves room for every record.
        # Analysis capacity: with deferral on, the backlog this builds would only be stored, not analysed.
        front = ProcessIngest(Path(tmp) / "capacity.db", dict(findings_key=b"\x01" * 32), queue_size=64 * flows,
                              queue_bytes=1 << 40, workers=workers, session_label="bench", defer_analysis=False)
        front.start()
        t0 = time.perf_counter()
        for n in range(flows):
            front.submit(dataclasses.replace(record, id=f"c{n}"))
        stats = front.stop()
        elapsed = time.perf_counter() - t0
    if stats.recorded != flows:
        raise RuntimeError(f"ingest capacity run recorded {stats.recorded} of {flows}: {dict(stats.unrecorded)}")
    return flows * bench_decoders.BATCH / elapsed


def run_ingest(quick: bool) -> None:
    seconds = 2.0 if quick else 6.0
    pipeline, _ = build_pipeline(findings_key=b"\x01" * 32)  # what `teletap run` builds: bundled signatures
    json_body, json_lines = bench_decoders.json_batch()
    bond_body = bench_decoders.bond_batch()

    def record(body: bytes, headers: list[tuple[str, str]]) -> HttpFlowRecord:
        return HttpFlowRecord(
            id="bench", request_time=1_764_072_000.0, response_time=1_764_072_000.05, client_address="10.0.0.2",
            client_port=50000, server_address="192.0.2.1", server_port=443, scheme="https",
            host="mobile.events.data.microsoft.com", port=443, method="POST", path="/OneCollector/1.0/", query="",
            url=bench_decoders.URL, http_version="HTTP/1.1", status=200, request_headers=headers,
            response_headers=[("Content-Type", "application/json")], request_body=Body(raw=body, size_wire=len(body)),
            response_body=Body(raw=b'{"acc":50}', size_wire=10), tls_version="TLSv1.3",
            sni="mobile.events.data.microsoft.com")

    json_rec = record(json_body, bench_decoders.JSON_HEADERS)
    bond_rec = record(bond_body, bench_decoders.BOND_HEADERS)
    for rec in (json_rec, bond_rec):
        item = pipeline.process(rec, 1)
        assert len(item.events) == bench_decoders.BATCH, item.flow.get("decode_error")  # type: ignore[union-attr]
    ids = itertools.count()
    per_write = 10  # flows per transaction: 500 events, the batch size the ingest worker commits

    with tempfile.TemporaryDirectory(prefix="teletap-bench-ingest-") as tmp:
        store = Store(Path(tmp) / "ingest.db")
        session = store.start_session(label="bench", kind="live", options={}, signature_set_hash=None,
                                      mitmproxy_version=None)

        def ingest(rec: HttpFlowRecord, stage: Callable = pipeline.process) -> None:
            # stage=pipeline.defer: what ingest does while it is behind (store first, analyse later)
            store.write([stage(dataclasses.replace(rec, id=f"f{next(ids)}"), session) for _ in range(per_write)])

        # Store.write alone, with the summary tables kept and (the baseline) without: their cost on ingest.
        bare = Store(Path(tmp) / "bare.db")
        bare.summaries = _NoSummaries()  # type: ignore[assignment]
        processed = [pipeline.process(json_rec, session) for _ in range(per_write)]

        def write(target: Store) -> None:
            batch = []
            for item in processed:
                fid = f"f{next(ids)}"
                assert isinstance(item, FlowRows)
                batch.append(FlowRows(flow={**item.flow, "id": fid},
                                      events=[{**e, "flow_id": fid} for e in item.events],
                                      findings=[{**f, "flow_id": fid} for f in item.findings]))
            target.write(batch)

        rates = bench_decoders.best_rates({
            "floor": (lambda: [json.loads(x) for x in json_lines], bench_decoders.BATCH),
            "store": (lambda: write(store), bench_decoders.BATCH * per_write),
            "store_bare": (lambda: write(bare), bench_decoders.BATCH * per_write),
            "pipeline_json": (lambda: pipeline.process(json_rec, session), bench_decoders.BATCH),
            "pipeline_bond": (lambda: pipeline.process(bond_rec, session), bench_decoders.BATCH),
            "ingest_json": (lambda: ingest(json_rec), bench_decoders.BATCH * per_write),
            "ingest_bond": (lambda: ingest(bond_rec), bench_decoders.BATCH * per_write),
            "defer_json": (lambda: ingest(json_rec, pipeline.defer), bench_decoders.BATCH * per_write),
        }, seconds * 7, rounds=5)
        store.close()
        bare.close()
    add(Figure("ingest", "Store.write with summary tables, 1DS JSON", rates["store"], "events/s", rates["store_bare"],
               "Store.write without summaries", note="the cost of keeping the summaries (schema v3)"))
    # The whole ingest process (pipe, pipeline, store) as `teletap run` starts it, fed as fast as it takes
    # records: one process against --ingest-workers 2 (a pool of two decoding, this one writing).
    flows = 150 if quick else 600
    capacity = {w: _ingest_capacity(json_rec, flows, w) for w in (1, 2)}
    add(Figure("ingest", "ingest process, --ingest-workers 2, 1DS JSON", capacity[2], "events/s", capacity[1],
               "--ingest-workers 1", note=f"{flows} batches of 50 events through ProcessIngest; "
                                          f"{os.cpu_count()} CPUs shared with the feeding process"))
    add(Figure("ingest", "stored first (analysis deferred), 1DS JSON", rates["defer_json"], "events/s",
               rates["ingest_json"], "Pipeline + Store.write",
               note=f"= {rates['defer_json'] / bench_decoders.BATCH:,.0f} flows/s: what ingest takes while behind"))
    floor = rates["floor"]
    for key, name in (("pipeline_json", "Pipeline.process, 1DS JSON (gzip)"),
                      ("pipeline_bond", "Pipeline.process, 1DS Bond (deflate)"),
                      ("ingest_json", "Pipeline + Store.write, 1DS JSON"),
                      ("ingest_bond", "Pipeline + Store.write, 1DS Bond")):
        add(Figure("ingest", name, rates[key], "events/s", floor, "json.loads of the same events",
                   note=f"= {rates[key] / bench_decoders.BATCH:,.0f} flows/s of 50 events"))


def run_decoders(quick: bool) -> None:
    rates = bench_decoders.measure(1.5 if quick else 4.0)
    floor = rates["floor"]
    add(Figure("decoders", "1DS Bond decoder", rates["bond"], "events/s", floor, "json.loads",
               target=">= 20,000 events/s", meets=rates["bond"] >= bench_decoders.BOND_TARGET))
    add(Figure("decoders", "1DS JSON decoder", rates["json"], "events/s", floor, "json.loads",
               target=">= 50,000 events/s", meets=rates["json"] >= bench_decoders.JSON_TARGET))


def run_match(quick: bool) -> None:
    r = bench_match.measure(2000 if quick else 5000, 10 if quick else 40)
    add(Figure("match", "signature match, 10,000 signatures", r["large_ns"] / 1000, "us/flow", r["small_ns"] / 1000,
               "10 signatures", target="<= 1.5x", meets=r["ratio"] <= 1.5))


def run_detect(quick: bool) -> None:
    r = bench_findings.measure(3.0 if quick else 10.0, 30 if quick else 50, verbose=False)
    add(Figure("detect", "personal-data detection, 10,000 identifiers", r["rate_10k"], "flows/s", r["rate_10"],
               "10 identifiers", target=">= 0.5x", meets=r["ratio"] >= 0.5,
               note=f"flows of {bench_findings.EVENTS_PER_FLOW} events: {r['rate_10k'] * 20:,.0f} events/s"))


# --- memory --------------------------------------------------------------------------------------------------


def run_memory(quick: bool) -> None:
    flows, baseline = (30_000, 10_000) if quick else (1_000_000, 200_000)
    runs = bench_memory.memory_runs(flows, baseline, max_seconds=300 if quick else 3 * 3600,
                                    chunk_seconds=5 if quick else 20, progress=False)
    plain, ours = runs
    # "Flat": the proxy's growth per 100k flows stays within 2 MiB of plain mitmdump's, the worker's within 2 MiB.
    for col, who in ((1, "proxy process"), (2, "ingest worker")):
        slope = ours.slope(col)
        base = plain.slope(1) if col == 1 else 0.0
        add(Figure("memory", f"RSS slope, {who} ({ours.flows:,} flows)", slope, "MiB/100k flows",
                   None, "mitmdump" if col == 1 else "", ratio=None, target="flat (<= base + 2)",
                   meets=slope <= base + 2.0,
                   note=(f"mitmdump {base:+.2f} MiB/100k over {plain.flows:,} flows; " if col == 1 else "")
                   + f"RSS {ours.samples[0][col]:.0f} -> {ours.final(col):.0f} MiB"))
    add(Figure("memory", "RSS at the end, proxy + worker", ours.final(1) + ours.final(2), "MiB", plain.final(1),
               "mitmdump at the end", note=f"{ours.flows:,} flows (mitmdump {plain.flows:,})"))
    recorded = ours.recorded or 0  # None: the DB was not found
    add(Figure("memory", "flows recorded / flows answered", recorded / max(1, ours.flows), "",
               target="nothing lost", meets=recorded >= ours.flows,
               note=f"{recorded:,} rows for {ours.flows:,} responses"))


# --- serve and report ----------------------------------------------------------------------------------------


def _scan_floor(db: Path) -> float:
    """One plain pass over every flow and event (what any whole-DB summary must at least read), seconds."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    t0 = time.perf_counter()
    conn.execute("SELECT count(*), sum(length(host)), sum(event_count) FROM flows").fetchone()
    conn.execute("SELECT count(*), count(distinct name) FROM events").fetchone()
    conn.close()
    return time.perf_counter() - t0


def run_serve(quick: bool, db: Path | None, keep: Path | None) -> None:
    tmp = tempfile.TemporaryDirectory(prefix="teletap-bench-serve-")
    workdir = keep or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    if db is None:
        flows = 100_000 if quick else 1_000_000
        db = workdir / "bench.db"
        t0 = time.perf_counter()
        counts = bench_serve.generate(db, flows, 5 * flows, progress=False)
        print(f"  [serve] generated {counts} in {time.perf_counter() - t0:.0f} s", flush=True)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        n_flows = conn.execute("SELECT count(*) FROM flows").fetchone()[0]
        n_events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    size = f"{n_flows / 1e6:g}M flows, {n_events / 1e6:g}M events"
    trivial, timings = bench_serve.time_queries(db)
    at_target_size = n_flows >= 1_000_000
    for q in timings:
        meets = q.best_ms <= bench_serve.QUERY_TARGET_MS and not q.error
        add(Figure("serve", f"canned query {q.name}", q.best_ms, "ms", trivial, "select 1 via teletap serve",
                   target="<= 500 ms at 1M flows", meets=meets if at_target_size else None,
                   note=f"{size}; cold {q.cold_ms:,.0f} ms" + (f"; {q.error}" if q.error else "")))
    floor = _scan_floor(db)
    for fmt in ("html", "json"):
        seconds, error = bench_serve.time_report(db, fmt, workdir)
        add(Figure("serve", f"teletap report --format {fmt}", seconds, "s", floor, "one scan of flows + events",
                   note=size + (f"; {error}" if error else "")))
    tmp.cleanup()


# --- the table -----------------------------------------------------------------------------------------------


def print_table(mode: str, started: float) -> None:
    print()
    print(f"teletap benchmark suite ({mode}) on {platform.node()}: {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{time.time() - started:.0f} s")
    header = (f"{'section':<9}{'figure':<70}{'teletap':>12} {'unit':<15}{'baseline':>12}{'ratio':>7}  "
              f"{'target':<22}{'meets':<6}note")
    print(header)
    print("-" * len(header))
    for f in FIGURES:
        base = f"{f.baseline:,.1f}" if f.baseline is not None else "-"
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "-"
        meets = "-" if f.meets is None else "yes" if f.meets else "NO"
        print(f"{f.section:<9}{f.name[:69]:<70}{f.value:>12,.1f} {f.unit:<15}{base:>12}{ratio:>7}  "
              f"{f.target:<22}{meets:<6}{f.note}")
    missed = [f for f in FIGURES if f.meets is False]
    print(f"\n{len([f for f in FIGURES if f.meets])} figure(s) meet their target, {len(missed)} miss it"
          + (": " + ", ".join(f"{f.section}/{f.name}" for f in missed) if missed else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few minutes instead of about an hour or more")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--serve-db", type=Path, help="reuse a generated DB for the serve section")
    ap.add_argument("--keep", type=Path, help="keep the generated DB and reports in this directory")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    started = time.time()
    mode = "quick" if args.quick else "full"
    runners = {"proxy": run_proxy, "instructions": run_instructions, "ingest": run_ingest,
               "decoders": run_decoders, "match": run_match, "detect": run_detect, "memory": run_memory}
    for section in args.only:
        print(f"== {section}", flush=True)
        try:
            if section == "serve":
                run_serve(args.quick, args.serve_db, args.keep)
            else:
                runners[section](args.quick)
        except Exception as e:  # one broken section must not cost the figures of the others
            print(f"  [{section}] FAILED: {type(e).__name__}: {e}", flush=True)
            add(Figure(section, "section failed", float("nan"), "", note=f"{type(e).__name__}: {e}"[:200]))
    print_table(mode, started)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(f) for f in FIGURES], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
