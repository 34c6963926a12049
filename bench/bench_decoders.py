"""Decoder throughput on one core: Bond records/s and 1DS JSON events/s, each next to plain ``json.loads``
over the same events (a floor reference measured in the same run, so figures compare across machines).

Run: python bench/bench_decoders.py [--seconds S]. Targets: >= 20k Bond records/s, >= 50k JSON events/s.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bond_encoder import Prop, encode, record, ticks_from_unix_ms

from teletap.decoders import decode_request

BATCH = 50  # events per request, as the 1DS SDKs batch
BOND_TARGET = 20_000
JSON_TARGET = 50_000


def _props(i: int) -> dict[str, Prop]:
    return {
        "Activity.Name": Prop("String", "Office.Word.FileOpen"),
        "Activity.Duration": Prop("Int64", 1234 + i),
        "Activity.Success": Prop("Bool", True),
        "Activity.Count": Prop("Int32", 7),
        "Data.Size": Prop("Double", 12.5),
        "Data.DocumentId": Prop("Guid", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        "Data.UserEmail": Prop("String", f"user{i}@example.invalid", pii=["SmtpAddress"]),
        "Data.FileName": Prop("String", "report.docx", cc=[1]),
        "Data.Started": Prop("DateTime", ticks_from_unix_ms(1_764_072_000_000 + i)),
        "Session.Id": Prop("String", "a1b2c3d4-0000-4000-8000-000000000001"),
        "App.Build": Prop("String", "16.0.18025.20000"),
        "App.Flags": Prop("ArrayInt64", [1, 2, 3]),
    }


_EXT = {
    "app": {"id": "Word", "ver": "16.0.18025.20000", "name": "WINWORD.EXE", "sesId": "sess-1"},
    "os": {"name": "Windows", "ver": "10.0.22631", "locale": "en-US"},
    "device": {"localId": "s:00000000-0000-4000-8000-000000000abc", "make": "Example", "model": "Model 1",
               "deviceClass": "Windows.Desktop"},
    "user": {"localId": "m:0000000000000001", "locale": "en-US"},
    "sdk": {"ver": "EVT-Windows-C++-No-3.7.62.1", "seq": 42, "epoch": "1234", "installId": "inst-1"},
    "utc": {"popSample": 100.0, "flags": 0},
}


def _distinct(i: int) -> tuple[dict, dict[str, Prop]]:
    """Every ext struct and property value different in each record: nothing for the memo to reuse."""
    ext = {k: {f: (f"{v}-{i}" if isinstance(v, str) else v + i if isinstance(v, int) else v) for f, v in e.items()}
           for k, e in _EXT.items()}
    props = {k: (Prop(p.kind, f"{p.value}-{i}", p.pii, p.cc) if p.kind == "String"
                 else Prop(p.kind, p.value + i) if p.kind in ("Int64", "Int32", "Double", "DateTime") else p)
             for k, p in _props(i).items()}
    props["Data.DocumentId"] = Prop("Guid", f"0f8fad5b-d9cb-469f-a165-{i:012d}")
    return ext, props


def bond_batch(distinct: bool = False) -> bytes:
    recs = []
    for i in range(BATCH):
        ext, props = _distinct(i) if distinct else (_EXT, _props(i))
        recs.append(encode(record(time=ticks_from_unix_ms(1_764_072_000_000 + i), ikey="o:0000benchtenant",
                                  flags=0x00400101, ext=ext, data=props)))
    c = zlib.compressobj(wbits=-15)
    return c.compress(b"".join(recs)) + c.flush()


def json_batch() -> tuple[bytes, list[bytes]]:
    lines = []
    for i in range(BATCH):
        data = {k: p.value for k, p in _props(i).items()}
        data["Data.Started"] = "2026-11-25T12:00:00.000Z"
        ev = {"name": "Office.Word.FileOpen", "time": "2026-11-25T12:00:00.123Z", "ver": "4.0",
              "iKey": "o:0000benchtenant",
              "ext": {**_EXT, "metadata": {"f": {"Data.UserEmail": {"t": 289}, "Data.FileName": {"t": 8193},
                                                 "Activity.Duration": {"t": 4}}}},
              "data": data}
        lines.append(json.dumps(ev, separators=(",", ":")).encode())
    return gzip.compress(b"\n".join(lines)), lines


def rate(fn, n_events: int, seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    while True:
        fn()
        done += n_events
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def best_rates(cases: dict, seconds: float, rounds: int = 8) -> dict[str, float]:
    """Round-robin short runs, best of each: on a shared machine this approaches the uncontended speed
    and exposes every case to the same background load."""
    best = dict.fromkeys(cases, 0.0)
    for _ in range(rounds):
        for name, (fn, n) in cases.items():
            best[name] = max(best[name], rate(fn, n, seconds / rounds))
    return best


URL = "https://mobile.events.data.microsoft.com/OneCollector/1.0/"
BOND_HEADERS = [("Content-Type", "application/bond-compact-binary"), ("Content-Encoding", "deflate"),
                ("APIKey", "0000benchtenant-token"), ("Client-Id", "NO_AUTH")]
JSON_HEADERS = [("Content-Type", "application/x-json-stream"), ("Content-Encoding", "gzip"),
                ("apikey", "0000benchtenant-token"), ("client-version", "1DS-Web-JS-4.4.4")]


def measure(seconds: float = 3.0) -> dict[str, float]:
    """Events/s of json.loads (floor), the Bond and JSON decoders, and Bond with all-distinct records."""
    bond_body = bond_batch()
    distinct_body = bond_batch(distinct=True)
    json_body, json_lines = json_batch()
    url, bond_hdrs, json_hdrs = URL, BOND_HEADERS, JSON_HEADERS
    r = decode_request("POST", url, bond_hdrs, bond_body)
    assert len(r.events) == BATCH and r.error is None, (r.error, r.notes)
    r = decode_request("POST", url, bond_hdrs, distinct_body)
    assert len(r.events) == BATCH and r.error is None, (r.error, r.notes)
    r = decode_request("POST", url, json_hdrs, json_body)
    assert len(r.events) == BATCH and r.error is None, (r.error, r.notes)

    return best_rates({
        # The floor: json.loads of the same events, already uncompressed and split.
        "floor": (lambda: [json.loads(x) for x in json_lines], BATCH),
        "bond": (lambda: decode_request("POST", url, bond_hdrs, bond_body), BATCH),
        "json": (lambda: decode_request("POST", url, json_hdrs, json_body), BATCH),
        "distinct": (lambda: decode_request("POST", url, bond_hdrs, distinct_body), BATCH),
    }, seconds)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="time per case, split into rounds")
    args = ap.parse_args()
    bond_body = bond_batch()
    distinct_body = bond_batch(distinct=True)
    json_body, _ = json_batch()
    rates = measure(args.seconds)
    floor, bond, js, distinct = rates["floor"], rates["bond"], rates["json"], rates["distinct"]

    rows = [
        ("json.loads (floor)", floor, None),
        ("1DS Bond records", bond, BOND_TARGET),
        ("1DS JSON events", js, JSON_TARGET),
        # Informational: a batch in which no two records share an ext struct or a property value.
        ("Bond, all distinct", distinct, None),
    ]
    print(f"{'decoder':<22}{'events/s':>12}{'x json.loads':>14}{'target':>10}  ok")
    ok = True
    for name, r_, target in rows:
        good = target is None or r_ >= target
        ok &= good
        print(f"{name:<22}{r_:>12,.0f}{r_ / floor:>14.2f}{(f'{target:,}' if target else '-'):>10}  "
              f"{'yes' if good else 'NO'}")
    print(f"batch: {BATCH} events; bond body {len(bond_body)} B deflated ({len(distinct_body)} B all distinct), "
          f"json body {len(json_body)} B gzip; best of round-robin runs, {args.seconds:g} s per case")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
