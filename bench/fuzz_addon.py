"""Hostile traffic: fuzzed bodies through the capture addon and the whole ingest pipeline, zero exceptions.

    python bench/fuzz_addon.py [--count 100000] [--jobs 2] [--seed 1] [--families bond json ...]

For each decoder family (1DS Bond, 1DS JSON, Aria, Application Insights, generic JSON, form, multipart,
protobuf, OneSettings/ECS responses) a seeded generator mutates valid bodies (truncation, bit flips,
insertions, splices, random bytes, deep nesting, huge lengths, lone surrogates, NaN) and wraps them in
gzip/deflate/br/zstd/base64 (also stacked, mislabelled and corrupted) or swaps in a decompression bomb.
Each body goes through ``teletap.capture.Capture`` hooks on a mitmproxy ``tflow`` (as the proxy calls
them), then ``teletap.pipeline.Pipeline.process`` (decode → match → detect, with the bundled signatures and
catalogue), and the rows are written with ``teletap.store.Store`` in batches.

Counted per family: exceptions escaping a hook, the pipeline or the store (must be 0); errors a guard
caught and logged (a hook or pipeline stage that failed: must be 0 too, they mean a bug was hidden);
'internal decoder error' results (the decoders' catch-all: 0); ordinary decode errors (expected);
the slowest body. Exit status 1 if any must-be-zero count is not. Same seed, same bodies.
"""

from __future__ import annotations

import argparse
import base64
import functools
import gzip
import json
import logging
import multiprocessing
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import zstandard

# tests.bond_encoder and the Aria sample builder are shared with the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mitmproxy import http
from mitmproxy.test import taddons, tflow

from teletap.capture import Capture
from teletap.pipeline import Pipeline, build_pipeline
from teletap.records import HttpFlowRecord, Record
from teletap.store import Store
from tests.bond_encoder import Prop, encode, record, ticks_from_unix_ms
from tests.test_decoders_formats import aria_body

ONECOLLECTOR = "https://mobile.events.data.microsoft.com/OneCollector/1.0/"


def _bond() -> bytes:
    return b"".join(encode(record(
        time=ticks_from_unix_ms(1_764_072_000_000 + i), ikey="o:fuzztenant", name=f"Office.Fuzz.Event{i}",
        ext={"app": {"id": "Word", "ver": "16.0"}, "device": {"localId": "s:00000000-0000-4000-8000-000000000abc"},
             "user": {"localId": "m:0000000000000001"}},
        data={"Data.UserEmail": Prop("String", f"user{i}@example.invalid", pii=["SmtpAddress"]),
              "Data.N": Prop("Int64", i), "Data.G": Prop("Guid", "0f8fad5b-d9cb-469f-a165-70867728950e"),
              "Data.L": Prop("ArrayInt64", [1, 2, 3]), "Data.D": Prop("Double", 1.5)}))
        for i in range(3))


def _json_lines() -> bytes:
    return b"\n".join(json.dumps({
        "ver": "4.0", "name": f"Office.Fuzz.Json{i}", "time": "2026-11-25T12:00:00.000Z", "iKey": "o:fuzztenant",
        "ext": {"app": {"id": "Word"}, "metadata": {"f": {"mail": {"t": 289}}}},
        "data": {"mail": f"user{i}@example.invalid", "ip": "203.0.113.7", "n": i,
                 "path": "C:\\Users\\jane\\doc.docx"}}).encode() for i in range(3))


def _appinsights() -> bytes:
    return json.dumps([{"name": "Microsoft.ApplicationInsights.Event", "time": "2026-11-25T12:00:00.000Z",
                        "iKey": "00000000-0000-4000-8000-000000000001", "tags": {"ai.user.id": "u1"},
                        "data": {"baseType": "EventData", "baseData": {"name": "Fuzz", "properties": {
                            "mail": "jane.doe@example.invalid"}}}}]).encode()


def _protobuf() -> bytes:
    # field 1 string, field 2 varint, field 3 nested message with a string: enough structure to mutate
    inner = b"\x0a\x15jane@example.invalid"
    return b"\x0a\x05hello\x10\x96\x01\x1a" + bytes([len(inner)]) + inner


def _multipart() -> bytes:
    return (b"--b\r\nContent-Disposition: form-data; name=\"mail\"\r\n\r\njane@example.invalid\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.json\"\r\n"
            b"Content-Type: application/json\r\n\r\n{\"a\": [1, 2, {\"b\": null}]}\r\n--b--\r\n")


@dataclass(frozen=True)
class Family:
    url: str
    content_type: str
    sample: Callable[[], bytes]
    response: bool = False  # the body is a response to a GET (configuration services)


FAMILIES: dict[str, Family] = {
    "1ds-bond": Family(ONECOLLECTOR, "application/bond-compact-binary", _bond),
    "1ds-json": Family("https://browser.events.data.microsoft.com/OneCollector/1.0/?cors=true",
                       "application/x-json-stream", _json_lines),
    "aria": Family("https://browser.pipe.aria.microsoft.com/Collector/3.0/?qsp=true&content-type=application"
                   "%2Fbond-compact-binary", "application/bond-compact-binary", aria_body),
    "appinsights": Family("https://dc.services.visualstudio.com/v2/track", "application/json", _appinsights),
    "json": Family("https://api.example.invalid/v1/collect", "application/json",
                   lambda: json.dumps({"user": {"mail": "jane@example.invalid", "tags": [1, 2.5, None, True]},
                                       "token": "eyJhbGciOiJub25lIn0.eyJ1cG4iOiJqQGV4YW1wbGUuaW52YWxpZCJ9."})
                   .encode()),
    "form": Family("https://login.example.invalid/form?x=1", "application/x-www-form-urlencoded",
                   lambda: b"user=jane%40example.invalid&pwd=x&n=1&list=a&list=b"),
    "multipart": Family("https://upload.example.invalid/", "multipart/form-data; boundary=b", _multipart),
    "protobuf": Family("https://api.example.invalid/rpc", "application/x-protobuf", _protobuf),
    "onesettings": Family("https://settings-win.data.microsoft.com/settings/v3.0/fuzz/feature?os=10&tenantid=t1",
                          "application/json",
                          lambda: json.dumps({"settings": {"a": "1", "b": {"c": [1, 2]}}, "etag": "x"}).encode(),
                          response=True),
    "ecs": Family("https://ecs.office.com/config/v1/Office/16.0?agents=Word", "application/json",
                  lambda: json.dumps({"Word": {"Flight": True, "Id": "1"}, "ECS": {"CacheExpiry": 3600}}).encode(),
                  response=True),
}

# Byte strings that steer mutations towards the decoders' edge cases.
INTERESTING = [b"\xff" * 12, b"\x00" * 16, b"\x80" * 11 + b"\x01", b"{" * 2000, b"[" * 5000, b"\"\\ud800\"",
               b"NaN", b"1e999999", b"-0", b"\x1a\x1b\x0f", b"\x0b\x09\x0a" * 50, b"\r\n\r\n", b"--b--",
               b"%", b"%ZZ", b"=&=&", b"\xc3\x28", b"\xed\xa0\x80", b"\"" + b"a" * 70000 + b"\"",
               b"\x0a\xff\xff\xff\xff\x0f", b"\x2d" + b"\xff\xff\xff\xff\x7f", b"\xef\xbb\xbf"]

ENCODINGS = ["", "", "", "gzip", "deflate", "deflate-raw", "br", "zstd", "base64", "gzip, br", "wrong-label",
             "corrupt-gzip", "identity", "x-unknown"]


@functools.cache
def _bombs() -> dict[str, bytes]:
    """Small on the wire, huge decompressed: each must stop at the decoders' limits, quickly."""
    zeros = b"\0" * (64 * 1024 * 1024)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    return {"gzip": gzip.compress(zeros, 9), "deflate": zlib.compress(zeros, 9),
            "deflate-raw": deflater.compress(zeros) + deflater.flush(),
            "br": brotli.compress(zeros, quality=5), "zstd": zstandard.ZstdCompressor(level=3).compress(zeros),
            "json-gzip": gzip.compress(b"{\"a\":\"" + b" " * (48 * 1024 * 1024) + b"\"}", 9)}


def mutate(rnd: random.Random, body: bytes, others: list[bytes]) -> bytes:
    op = rnd.randrange(11)
    n = len(body)
    if op == 0 or not n:
        return body if op == 0 else rnd.randbytes(rnd.randrange(4096))
    if op == 1:
        return body[:rnd.randrange(n + 1)]
    if op == 2:
        out = bytearray(body)
        for _ in range(rnd.randint(1, 8)):
            out[rnd.randrange(n)] ^= 1 << rnd.randrange(8)
        return bytes(out)
    if op == 3:
        i = rnd.randrange(n + 1)
        return body[:i] + rnd.choice([rnd.randbytes(rnd.randint(1, 64)), rnd.choice(INTERESTING)]) + body[i:]
    if op == 4:
        i = rnd.randrange(n)
        return body[:i] + body[i + rnd.randint(1, 64):]
    if op == 5:
        other = rnd.choice(others)
        return body[:rnd.randrange(n + 1)] + other[rnd.randrange(len(other) + 1):]
    if op == 6:
        return rnd.randbytes(rnd.randrange(1, 4096))
    if op == 7:
        return body * rnd.randint(2, 8)
    if op == 8:
        i = rnd.randrange(n)
        s = rnd.choice(INTERESTING)
        return body[:i] + s + body[i + len(s):]
    if op == 9:
        # several mutations stacked
        return mutate(rnd, mutate(rnd, body, others), others)
    # text-level: change a JSON-ish value into something odd
    return body.replace(b"1", rnd.choice([b"1e400", b"NaN", b"-9223372036854775809", b"\"\\udc00\"", b"[[[[1]]]]"]),
                        rnd.randint(1, 3))


def wrap(rnd: random.Random, body: bytes, bombs: dict[str, bytes]) -> tuple[bytes, str | None, str]:
    """Returns (wire body, Content-Encoding header or None, what was done)."""
    if rnd.random() < 0.002:
        kind = rnd.choice(list(bombs))
        label = {"deflate-raw": "deflate", "json-gzip": "gzip"}.get(kind, kind)
        return bombs[kind], label, f"bomb:{kind}"
    enc = rnd.choice(ENCODINGS)
    if enc in ("", "identity"):
        return body, enc or None, "plain"
    if enc == "gzip":
        return gzip.compress(body, 1), "gzip", enc
    if enc == "deflate":
        return zlib.compress(body, 1), "deflate", enc
    if enc == "deflate-raw":
        c = zlib.compressobj(1, zlib.DEFLATED, -15)
        return c.compress(body) + c.flush(), "deflate", enc
    if enc == "br":
        return brotli.compress(body, quality=1), "br", enc
    if enc == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(body), "zstd", enc
    if enc == "base64":
        return base64.b64encode(body), "base64", enc
    if enc == "gzip, br":
        return brotli.compress(gzip.compress(body, 1), quality=1), "gzip, br", enc
    if enc == "wrong-label":
        return body, rnd.choice(["gzip", "br", "zstd", "deflate"]), enc
    if enc == "corrupt-gzip":
        wire = bytearray(gzip.compress(body, 1))
        for _ in range(rnd.randint(1, 4)):
            wire[rnd.randrange(len(wire))] = rnd.randrange(256)
        return bytes(wire[:rnd.randrange(len(wire) + 1)]), "gzip", enc
    return body, enc, enc


@dataclass
class Tally:
    family: str
    bodies: int = 0
    records: int = 0
    hook_escaped: int = 0
    guard_caught: int = 0
    pipeline_escaped: int = 0
    pipeline_logged: int = 0
    internal_decoder_errors: int = 0
    store_failed: int = 0
    store_surrogates: int = 0  # rows SQLite refused for a lone surrogate in their text (a known teletap bug)
    decode_errors: int = 0
    events: int = 0
    bombs: int = 0
    slowest_ms: float = 0.0
    seconds: float = 0.0
    samples: list[str] = field(default_factory=list)  # first few failures, for the report

    @property
    def must_be_zero(self) -> int:
        return (self.hook_escaped + self.guard_caught + self.pipeline_escaped + self.pipeline_logged
                + self.internal_decoder_errors + self.store_failed + self.store_surrogates)

    def note(self, text: str) -> None:
        if len(self.samples) < 5:
            self.samples.append(text[:300])


class _ErrorLog(logging.Handler):
    """Hooks and pipeline stages swallow their failures and log them: for a fuzzer that is a failure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, rec: logging.LogRecord) -> None:
        self.messages.append(rec.getMessage())


def _flow(fam: Family, rnd: random.Random, wire: bytes, encoding: str | None,
          non_utf8_headers: float) -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    ctype = rnd.choice([fam.content_type] * 6 + ["", "text/plain", "application/octet-stream", "a/b; c=\"d\""])
    headers: list[tuple[bytes, bytes]] = [(b"host", b"x")]
    if ctype:
        headers.append((b"content-type", ctype.encode()))
    if encoding:
        headers.append((b"content-encoding", encoding.encode()))
    if rnd.random() < 0.1:  # hostile headers too: a huge cookie, a bogus bearer token
        headers += [(b"authorization", b"Bearer " + base64.urlsafe_b64encode(rnd.randbytes(90)) + b".e30.x"),
                    (b"cookie", b"MUID=" + rnd.randbytes(40).hex().encode() * 50)]
    if rnd.random() < non_utf8_headers:
        # a Latin-1 byte in a header (a file name, a user agent): mitmproxy hands it over as a lone surrogate
        headers.append((b"x-file-name", "r\xe9sum\xe9.docx".encode("latin-1")))
    url = fam.url if rnd.random() < 0.9 else fam.url + "&q=%E9%ZZ&" + rnd.randbytes(8).hex() + "=%00"
    if fam.response:
        f.request.method = "GET"
        f.request.url = url
        f.request.raw_content = b""
        assert f.response is not None
        f.response.headers = http.Headers(headers[1:])
        f.response.raw_content = wire
    else:
        f.request.method = "POST"
        f.request.url = url
        f.request.headers = http.Headers(headers)
        f.request.host_header = f.request.host
        f.request.raw_content = wire
    return f


@functools.cache
def _pipeline() -> Pipeline:
    """The pipeline `teletap run` builds (bundled signatures, catalogue, detectors); once per process."""
    return build_pipeline(findings_key=b"\x01" * 32)[0]


def run_family(name: str, count: int, seed: int = 1, db_dir: str | None = None,
               deadline: float | None = None, non_utf8_headers: float = 0.0) -> Tally:
    """Fuzz one family with ``count`` bodies (stops early at ``deadline``, a time.monotonic() value).

    ``non_utf8_headers``: the share of flows that also carry a header with a non-UTF-8 byte.
    """
    fam = FAMILIES[name]
    rnd = random.Random(f"{seed}:{name}")
    tally = Tally(name)
    errors = _ErrorLog()
    tlog = logging.getLogger("teletap")
    tlog.addHandler(errors)
    tlog.propagate = False  # counted here, not printed thousands of times
    bombs = _bombs()
    seeds = [fam.sample()] + [FAMILIES[o].sample() for o in FAMILIES if o != name]
    pipeline = _pipeline()
    records: list[Record] = []
    capture = Capture(records.append)
    tmp = tempfile.TemporaryDirectory(prefix="teletap-fuzz-", dir=db_dir)
    store = Store(Path(tmp.name) / "fuzz.db")
    pending: list = []
    t_start = time.perf_counter()
    try:
        with taddons.context(capture) as tctx:
            tctx.configure(capture, teletap_stream_threshold=32 * 1024 * 1024)
            for _ in range(count):
                if deadline is not None and time.monotonic() > deadline:
                    break
                body = mutate(rnd, seeds[0], seeds[1:])
                wire, encoding, how = wrap(rnd, body, bombs)
                tally.bombs += how.startswith("bomb")
                f = _flow(fam, rnd, wire, encoding, non_utf8_headers)
                records.clear()
                n_log = len(errors.messages)
                t0 = time.perf_counter()
                try:
                    capture.requestheaders(f)
                    if rnd.random() < 0.03:
                        f.error = tflow.terr()  # a flow that fails after the request: the error hook records it
                        capture.error(f)
                    else:
                        capture.response(f)
                except Exception as e:  # guarded hooks must never raise
                    tally.hook_escaped += 1
                    tally.note(f"hook raised {type(e).__name__}: {e}")
                if len(errors.messages) > n_log:
                    tally.guard_caught += len(errors.messages) - n_log
                    tally.note(f"hook logged: {errors.messages[-1]}")
                    n_log = len(errors.messages)
                tally.bodies += 1
                for rec in records:
                    tally.records += 1
                    try:
                        item = pipeline.process(rec, 1)
                    except Exception as e:
                        tally.pipeline_escaped += 1
                        tally.note(f"pipeline raised {type(e).__name__}: {e} ({how})")
                        continue
                    flow = getattr(item, "flow", {})
                    err = flow.get("decode_error") or ""
                    tally.decode_errors += bool(err)
                    tally.internal_decoder_errors += "internal decoder error" in err
                    if "internal decoder error" in err:
                        tally.note(f"internal decoder error: {err} ({how})")
                    tally.events += len(getattr(item, "events", []))
                    pending.append(item)
                    assert isinstance(rec, HttpFlowRecord)
                if len(errors.messages) > n_log:
                    tally.pipeline_logged += len(errors.messages) - n_log
                    tally.note(f"pipeline logged: {errors.messages[-1]} ({how})")
                tally.slowest_ms = max(tally.slowest_ms, (time.perf_counter() - t0) * 1000)
                if len(pending) >= 200:
                    _write(store, pending, tally)
            _write(store, pending, tally)
    finally:
        store.close()
        tmp.cleanup()
        tlog.removeHandler(errors)
        tlog.propagate = True
    tally.seconds = time.perf_counter() - t_start
    return tally


def _write(store: Store, pending: list, tally: Tally) -> None:
    """Rows built from hostile input must still be storable (lone surrogates, huge ints, odd bytes)."""
    try:
        store.write(pending)
    except Exception as e:
        for item in pending:  # find the culprit(s): one bad row must not hide the others
            try:
                store.write([item])
            except Exception as e1:
                if isinstance(e1, UnicodeEncodeError) and "surrogates" in str(e1):
                    tally.store_surrogates += 1
                else:
                    tally.store_failed += 1
                tally.note(f"store raised {type(e1).__name__}: {e1} [{_culprit(item)}]")
        if not tally.store_failed and not tally.store_surrogates:
            tally.store_failed += 1
            tally.note(f"store raised {type(e).__name__}: {e}")
    pending.clear()


def _culprit(item: object) -> str:
    """Which table.column holds text SQLite cannot store (a lone surrogate cannot be encoded as UTF-8)."""
    rows = [("flows", getattr(item, "flow", {}))] + [("events", e) for e in getattr(item, "events", [])]
    rows += [("findings", f) for f in getattr(item, "findings", [])]
    for table, row in rows:
        for column, value in row.items():
            if isinstance(value, str):
                try:
                    value.encode()
                except UnicodeEncodeError:
                    return f"{table}.{column}"
    return "?"


def _run_star(args: tuple[str, int, int, float | None, float]) -> Tally:
    name, count, seed, seconds, non_utf8 = args
    return run_family(name, count, seed, deadline=time.monotonic() + seconds if seconds else None,
                      non_utf8_headers=non_utf8)


def run(families: list[str], count: int, seed: int = 1, jobs: int = 1, seconds: float | None = None,
        non_utf8_headers: float = 0.0) -> list[Tally]:
    work = [(name, count, seed, seconds, non_utf8_headers) for name in families]
    if jobs <= 1:
        return [_run_star(w) for w in work]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.map(_run_star, work, chunksize=1)


def print_table(tallies: list[Tally]) -> None:
    print(f"{'family':<12}{'bodies':>9}{'records':>9}{'escaped':>8}{'logged':>7}{'internal':>9}{'store':>6}{'surr.':>6}"
          f"{'dec.err':>8}{'events':>9}{'bombs':>6}{'slowest ms':>11}{'bodies/s':>9}")
    for t in tallies:
        print(f"{t.family:<12}{t.bodies:>9}{t.records:>9}{t.hook_escaped + t.pipeline_escaped:>8}"
              f"{t.guard_caught + t.pipeline_logged:>7}{t.internal_decoder_errors:>9}{t.store_failed:>6}"
              f"{t.store_surrogates:>6}"
              f"{t.decode_errors:>8}{t.events:>9}{t.bombs:>6}{t.slowest_ms:>11.0f}"
              f"{t.bodies / t.seconds if t.seconds else 0:>9.0f}")
        for s in t.samples:
            print(f"    {s}")
    total = sum(t.must_be_zero for t in tallies)
    print(f"exceptions escaping or swallowed: {total} (must be 0) over {sum(t.bodies for t in tallies):,} bodies")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000, help="bodies per family")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2, help="families fuzzed in parallel (processes)")
    ap.add_argument("--seconds", type=float, help="stop each family after this long (bounded runs)")
    ap.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--non-utf8-headers", type=float, default=0.0, metavar="SHARE",
                    help="share of flows that also carry a Latin-1 byte in a header (e.g. 0.01)")
    args = ap.parse_args()
    tallies = run(args.families, args.count, args.seed, args.jobs, args.seconds, args.non_utf8_headers)
    print_table(tallies)
    return 1 if any(t.must_be_zero for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
