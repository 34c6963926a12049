"""Personal-data detection throughput: flows/s with 10 and with 10,000 known identifiers, in one run;
then the full ingest pipeline (decode -> match -> detect) on a 50-event 1DS batch next to a json.loads floor.

Each flow is a 1DS JSON batch (URL with query, realistic headers including a bearer token, an NDJSON
body) plus its decoded events, decoded once up front: only `FindingsEngine.scan` is timed. The ratio of
the two rates is the figure that matters: Aho-Corasick plus digest lookup should make thousands of
identifiers cost little per flow (target: 10k identifiers at >= 0.5x the rate of 10).

The pipeline figure is the one the ingest worker lives by: ms of CPU per flow (time.process_time, which
other jobs on a shared machine disturb less than the wall clock) for `Pipeline.process` on the batch of
bench_proxy.telemetry_batch (50 NDJSON events, each with a device GUID, a C:\\Users\\name path and a
document name), alternated pass by pass with `json.loads` of the same 50 lines; medians are reported.

Run: python bench/bench_findings.py [--seconds S] [--flows N] [--only identifiers|pipeline]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from teletap.decoders import decode_request
from teletap.findings import FindingsEngine, Identifier

EVENTS_PER_FLOW = 20
TARGET_RATIO = 0.5


def identifiers(n: int) -> list[Identifier]:
    kinds = ("email", "name", "device", "upn", "canary")
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        value = {"email": f"user{i}.bench@example.invalid", "name": f"Person{i} Benchmark",
                 "device": f"DESKTOP-{i:07d}", "upn": f"u{i}@tenant{i % 7}.example.invalid",
                 "canary": f"tt-canary-{i:08x}"}[kind]
        out.append(Identifier(kind, value))
    return out


def _jwt(i: int) -> str:
    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    claims = {"oid": f"{i:08x}-0000-4000-8000-000000000001", "upn": f"user{i}.bench@example.invalid"}
    return f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.sig"


def flows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for f in range(n):
        lines = []
        for e in range(EVENTS_PER_FLOW):
            i = rng.randrange(10_000)
            lines.append(json.dumps({
                "ver": "4.0", "name": "Office.Word.FileOpen", "time": "2026-11-25T12:00:00.000Z",
                "iKey": "o:0000benchtenant",
                "ext": {"app": {"id": "Word", "ver": "16.0.18025.20000", "sesId": f"{f:08x}-1111-4000-8000-{e:012x}"},
                        "device": {"localId": f"s:{i:08x}-2222-4000-8000-000000000abc",
                                   "deviceClass": "Windows.Desktop"},
                        "user": {"localId": f"m:{hashlib.md5(str(i).encode()).hexdigest()}"},
                        "os": {"name": "Windows", "ver": "10.0.22631"}},
                "data": {"Activity.Name": "Office.Word.FileOpen", "Activity.Duration": rng.randrange(10**6),
                         "Data.DocumentId": f"{rng.getrandbits(32):08x}-3333-4000-8000-000000000000",
                         "Data.EventId": f"{rng.getrandbits(32):08x}-4444-4000-8000-000000000000",
                         "Data.FileName": rng.choice(["report.docx", "budget.xlsx", "notes.txt"]),
                         "Data.Path": rng.choice(["C:\\Users\\bench\\Documents", "D:\\Data"]),
                         "Data.UserEmail": f"user{i}.bench@example.invalid" if e % 5 == 0 else "",
                         "Data.Ip": f"10.{e}.{f % 256}.{i % 250 + 1}",
                         "Data.Build": "16.0.18025.20000", "Data.Count": rng.randrange(1000)},
            }))
        body = ("\n".join(lines)).encode()
        url = (f"https://self.events.data.microsoft.com/OneCollector/1.0/?cors=true&content-type="
               f"application/x-json-stream&client-id=NO_AUTH&client-version=1DS-Web-JS-3.2.13&upload-time={f}")
        headers = [("Content-Type", "application/x-json-stream"), ("User-Agent", "Mozilla/5.0 Chrome/120.0.0.0"),
                   ("Authorization", f"Bearer {_jwt(f)}"), ("Cookie", f"MUID={f:032x}; MC1=GUID=abc"),
                   ("Accept-Encoding", "gzip"), ("Client-Id", "NO_AUTH"), ("APIKey", "0000benchtenant-1234")]
        result = decode_request("POST", url, headers, body, None)
        events = result.events if result is not None and result.events else [
            SimpleNamespace(position=k, data=json.loads(line), pii=[]) for k, line in enumerate(lines)]
        out.append({"url": url, "request_headers": headers, "body": body, "content_type": headers[0][1],
                    "events": events, "data_flow": "first-party"})
    return out


def one_pass(engine: FindingsEngine, corpus: list[dict]) -> tuple[float, int]:
    found = 0
    t0 = time.perf_counter()
    for flow in corpus:
        found += len(engine.scan(**flow))
    return time.perf_counter() - t0, found


def measure(seconds: float = 6.0, n_flows: int = 50, verbose: bool = True) -> dict[str, float]:
    """flows/s with 10 and 10,000 known identifiers (median passes) and their ratio."""
    corpus = flows(n_flows)
    size = sum(len(f["body"]) for f in corpus) / len(corpus)
    if verbose:
        print(f"corpus: {len(corpus)} flows, {EVENTS_PER_FLOW} events and {size / 1024:.1f} KiB body each")
    engines = {}
    for n in (10, 10_000):
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        engines[n] = FindingsEngine(identifiers=identifiers(n), org_hostnames=["corp.example.invalid"], key=b"bench")
        build = time.perf_counter() - t0
        rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        if verbose:
            print(f"{n:>6} identifiers: automaton and digests built in {build:.2f} s, +{rss:.1f} MiB peak RSS")
        one_pass(engines[n], corpus[:5])  # warm-up
    # Alternate the two configurations pass by pass so that load from other processes hits both alike;
    # the median pass is reported (and the best, the figure least disturbed by other processes).
    times: dict[int, list[float]] = {n: [] for n in engines}
    per_flow: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times[10]) < 3:
        for n, engine in engines.items():
            elapsed, found = one_pass(engine, corpus)
            times[n].append(elapsed)
            per_flow[n] = found // len(corpus)
    rates = {}
    for n, ts in times.items():
        ts.sort()
        rates[n] = len(corpus) / ts[len(ts) // 2]
        best = len(corpus) / ts[0]
        if verbose:
            print(f"{n:>6} identifiers: {rates[n]:7.1f} flows/s median, {best:7.1f} best "
                  f"({rates[n] * EVENTS_PER_FLOW:6.0f} events/s, {len(ts)} passes), {per_flow[n]} findings/flow")
    return {"rate_10": rates[10], "rate_10k": rates[10_000], "ratio": rates[10_000] / rates[10]}


PIPELINE_EVENTS = 50
PIPELINE_TARGET_MS = 2.5  # per flow: >= 20k events/s through decode + match + detect


def measure_pipeline(seconds: float = 6.0, verbose: bool = True) -> dict[str, float]:
    """Full pipeline, 50-event 1DS batch: ms of CPU per flow and events/s (median passes), next to
    json.loads of the same events measured alternately."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_proxy import telemetry_batch

    from teletap.pipeline import build_pipeline
    from teletap.records import Body, HttpFlowRecord

    body = telemetry_batch(PIPELINE_EVENTS)
    lines = body.split(b"\n")
    pipeline, _ = build_pipeline(findings_key=b"k" * 32)
    record = HttpFlowRecord(
        id="bench", request_time=1_700_000_000.0, response_time=1_700_000_000.5, client_address="127.0.0.1",
        client_port=50000, server_address="127.0.0.1", server_port=443, scheme="https",
        host="self.events.data.microsoft.com", port=443, method="POST", path="/OneCollector/1.0/", query="",
        url="https://self.events.data.microsoft.com/OneCollector/1.0/", http_version="HTTP/1.1", status=200,
        request_headers=[("content-type", "application/x-json-stream"), ("client-id", "NO_AUTH")],
        response_headers=[("content-type", "application/json")],
        request_body=Body(raw=body, size_wire=len(body)), response_body=Body(raw=b'{"acc":50}', size_wire=10))
    item = pipeline.process(record, 1)  # warm-up (caches, lazy imports)
    if verbose:
        print(f"\nfull pipeline, {PIPELINE_EVENTS}-event 1DS batch ({len(body) / 1024:.1f} KiB): "
              f"{len(item.events)} event rows, {len(item.findings)} findings per flow")

    def run_pipeline(n: int) -> float:
        t0 = time.process_time()
        for _ in range(n):
            pipeline.process(record, 1)
        return (time.process_time() - t0) / n

    def run_json(n: int) -> float:
        t0 = time.process_time()
        for _ in range(n):
            for line in lines:
                json.loads(line)
        return (time.process_time() - t0) / n

    flow_t: list[float] = []
    json_t: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(flow_t) < 5:
        flow_t.append(run_pipeline(20))  # alternate, so that load from other jobs hits both alike
        json_t.append(run_json(100))
    flow_ms = sorted(flow_t)[len(flow_t) // 2] * 1000
    json_ms = sorted(json_t)[len(json_t) // 2] * 1000
    if verbose:
        verdict = "OK" if flow_ms <= PIPELINE_TARGET_MS else "ABOVE TARGET"
        print(f"  pipeline  : {flow_ms:6.3f} ms CPU per flow, {PIPELINE_EVENTS / flow_ms * 1000:8.0f} events/s "
              f"(median of {len(flow_t)} passes; target <= {PIPELINE_TARGET_MS} ms) {verdict}")
        print(f"  json.loads: {json_ms:6.3f} ms CPU per flow, {PIPELINE_EVENTS / json_ms * 1000:8.0f} events/s "
              f"(the floor: parsing the same events); pipeline / json.loads = {flow_ms / json_ms:.1f}x")
    return {"flow_ms": flow_ms, "events_per_s": PIPELINE_EVENTS / flow_ms * 1000, "json_ms": json_ms,
            "ratio_to_json": flow_ms / json_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0, help="measuring time per section")
    ap.add_argument("--flows", type=int, default=50, help="distinct flows in the identifiers corpus")
    ap.add_argument("--only", choices=["identifiers", "pipeline"], help="run one section")
    args = ap.parse_args()
    if args.only != "pipeline":
        identifiers_bench(args)
    if args.only != "identifiers":
        measure_pipeline(args.seconds)


def identifiers_bench(args: argparse.Namespace) -> None:
    ratio = measure(args.seconds, args.flows)["ratio"]
    verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio 10,000 / 10 identifiers (median rates): {ratio:.2f} (target >= {TARGET_RATIO}) {verdict}")


if __name__ == "__main__":
    main()
