"""teletap import on HAR variants and mitmproxy flow files: what tools write, and what broken files do."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from teletap.cli import main
from teletap.importer import CaptureFileError, check, import_files
from teletap.pipeline import Pipeline

from .support import rows

EMAIL = "jane.doe@example.invalid"


def entry(url: str = "http://collector.example.invalid/collect?x=1", *, body: str | None = f'{{"email": "{EMAIL}"}}',
          status: int = 200, extra: dict | None = None, **response: Any) -> dict:
    e: dict[str, Any] = {
        "startedDateTime": "2026-11-25T10:00:00.123Z", "time": 5,
        "request": {"method": "POST" if body is not None else "GET", "url": url, "httpVersion": "HTTP/1.1",
                    "headers": [{"name": "content-type", "value": "application/json"}], "cookies": [],
                    "queryString": [], "headersSize": -1, "bodySize": -1},
        "response": {"status": status, "statusText": "", "httpVersion": "HTTP/1.1", "cookies": [],
                     "headers": [{"name": "content-type", "value": "application/json"}],
                     "content": {"mimeType": "application/json", "text": "{}", **response}, "redirectURL": "",
                     "headersSize": -1, "bodySize": -1},
        "cache": {}, "timings": {"send": 0, "wait": 5, "receive": 0},
    }
    if body is not None:
        e["request"]["postData"] = {"mimeType": "application/json", "text": body}
    e.update(extra or {})
    return e


def har(*entries: dict, creator: str = "test") -> bytes:
    return json.dumps({"log": {"version": "1.2", "creator": {"name": creator, "version": "1"}, "pages": [],
                               "entries": list(entries)}}, indent=1).encode()


def pipeline() -> Pipeline:
    from teletap.pipeline import build_pipeline

    return build_pipeline(findings_key=b"k" * 32)[0]


def run_import(db: Path, *paths: Path, **kw: Any):
    from teletap.store import connect

    connect(db).close()  # as the CLI does before importing: the DB exists even if no file passes the check
    return import_files(db, list(paths), pipeline(), **kw)


def count(db: Path, table: str) -> int:
    return rows(db, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# -- HAR variants ------------------------------------------------------------------------------------------

def test_har_import_runs_the_pipeline_and_reimport_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a.har"
    path.write_bytes(har(entry(), entry("http://collector.example.invalid/page", body=None)))
    db = tmp_path / "t.db"
    result = run_import(db, path)
    assert not result.failed
    flows = rows(db, "SELECT * FROM flows ORDER BY source")
    assert [f["source"] for f in flows] == ["a.har#0", "a.har#1"]
    assert flows[0]["decode_format"] == "json" and flows[0]["finding_count"] >= 1
    assert flows[1]["method"] == "GET" and flows[1]["request_body"] is None
    before = (count(db, "flows"), count(db, "events"), count(db, "findings"), count(db, "sessions"))
    assert before[1] >= 1 and before[2] >= 1
    run_import(db, path)
    assert (count(db, "flows"), count(db, "events"), count(db, "findings"), count(db, "sessions")) == before


def test_devtools_style_entries(tmp_path: Path) -> None:
    """Chrome/Edge/Firefox: HTTP/2 pseudo-headers, base64 binary responses, status 0 with _error, a BOM."""
    binary = bytes(range(256))
    ok = entry("https://collector.example.invalid/v1?a=b", text=base64.b64encode(binary).decode(), encoding="base64")
    ok["request"]["headers"] = [{"name": ":authority", "value": "collector.example.invalid"},
                                {"name": ":method", "value": "POST"},
                                {"name": "content-type", "value": "application/json"}]
    ok["request"]["httpVersion"] = "h2"
    failed = entry("https://blocked.example.invalid/x", body=None, status=0, extra={"_error": "net::ERR_BLOCKED"})
    path = tmp_path / "chrome.har"
    path.write_bytes(b"\xef\xbb\xbf" + har(ok, failed, creator="WebInspector"))
    db = tmp_path / "t.db"
    assert not run_import(db, path).failed
    a, b = rows(db, "SELECT * FROM flows ORDER BY source")
    assert a["response_body"] == binary and a["port"] == 443 and a["query"] == "a=b"
    assert [h[0] for h in json.loads(a["request_headers"])] == ["content-type"]
    assert b["status"] is None and b["error"] == "net::ERR_BLOCKED" and b["response_headers"] is None


def test_mitmproxy_latin1_request_text_is_byte_exact(tmp_path: Path) -> None:
    """mitmproxy writes binary request bodies as latin-1 text; the import restores the bytes."""
    body = bytes(range(256))
    e = entry(body=body.decode("latin-1"))
    e["request"]["postData"]["mimeType"] = "application/octet-stream"
    e["request"]["headers"] = [{"name": "content-type", "value": "application/octet-stream"}]
    path = tmp_path / "m.har"
    path.write_bytes(har(e, creator="mitmproxy"))
    db = tmp_path / "t.db"
    assert not run_import(db, path).failed
    assert rows(db, "SELECT request_body FROM flows")[0]["request_body"] == body


def test_wire_encoded_bodies_keep_their_content_encoding(tmp_path: Path) -> None:
    """A tool that exported the compressed bytes (base64 gzip): the header stays and the pipeline decodes."""
    plain = json.dumps({"email": EMAIL}).encode()
    e = entry(body=None)
    e["request"]["method"] = "POST"
    e["request"]["headers"] = [{"name": "content-type", "value": "application/json"},
                               {"name": "content-encoding", "value": "gzip"}]
    e["request"]["postData"] = {"mimeType": "application/json", "encoding": "base64",
                                "text": base64.b64encode(gzip.compress(plain)).decode()}
    decoded = entry()
    decoded["request"]["headers"].append({"name": "Content-Encoding", "value": "gzip"})  # decoded text, header kept
    path = tmp_path / "w.har"
    path.write_bytes(har(e, decoded))
    db = tmp_path / "t.db"
    assert not run_import(db, path).failed
    a, b = rows(db, "SELECT * FROM flows ORDER BY source")
    assert a["request_content_encoding"] == "gzip" and a["request_body"] == plain and a["decode_error"] is None
    assert b["request_content_encoding"] is None and b["decode_error"] is None


@pytest.mark.parametrize("suffix,pack", [(".zhar", lambda d: zlib.compress(d, 9)), (".har.gz", gzip.compress)])
def test_compressed_har(tmp_path: Path, suffix: str, pack: Any) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_bytes(pack(har(entry(), entry())))
    db = tmp_path / "t.db"
    result = run_import(db, path)
    assert not result.failed and count(db, "flows") == 2
    assert result.files[0].info.compression in ("zlib", "gzip")


# -- broken HAR files: a clear error, nothing written ---------------------------------------------------------

def assert_nothing_written(db: Path) -> None:
    assert count(db, "flows") == 0 and count(db, "events") == 0 and count(db, "findings") == 0


def test_truncated_har(tmp_path: Path) -> None:
    data = har(*(entry() for _ in range(20)))
    path = tmp_path / "cut.har"
    path.write_bytes(data[: len(data) * 2 // 3])
    db = tmp_path / "t.db"
    result = run_import(db, path)
    [failed] = result.failed
    assert "ends early" in failed.error and f"byte {len(data) * 2 // 3}" in failed.error
    assert_nothing_written(db)
    assert count(db, "sessions") == 0


def test_a_bad_file_next_to_good_ones_is_recorded_in_the_session(tmp_path: Path) -> None:
    good, cut = tmp_path / "good.har", tmp_path / "cut.har"
    good.write_bytes(har(entry()))
    cut.write_bytes(har(entry(), entry())[:-40])
    db = tmp_path / "t.db"
    result = run_import(db, good, cut)
    assert [f.info.path.name for f in result.failed] == ["cut.har"]
    [session] = rows(db, "SELECT * FROM sessions")
    assert session["items_recorded"] == 1 and session["items_unrecorded"] >= 1
    assert "cut.har: not imported" in session["unrecorded_reasons"]
    assert [f["source"] for f in rows(db, "SELECT source FROM flows")] == ["good.har#0"]


def test_syntax_error_reports_the_exact_byte(tmp_path: Path) -> None:
    data = har(*(entry() for _ in range(50)))
    bad = data.index(b'"time"', len(data) // 2)
    data = data[:bad] + b"@" + data[bad + 1:]
    path = tmp_path / "bad.har"
    path.write_bytes(data)
    db = tmp_path / "t.db"
    [failed] = run_import(db, path).failed
    assert f"at byte {bad}" in failed.error, failed.error
    assert "after entry" in failed.error
    assert_nothing_written(db)


def test_bad_entry_names_its_index_and_stops_the_whole_file(tmp_path: Path) -> None:
    broken = entry(text="!!! not base64 !!!", encoding="base64")
    path = tmp_path / "e.har"
    path.write_bytes(har(entry(), entry(), broken, entry()))
    db = tmp_path / "t.db"
    [failed] = run_import(db, path).failed
    assert "entry 2" in failed.error and "base64" in failed.error
    assert_nothing_written(db)


@pytest.mark.parametrize(("content", "message"), [
    (b'{"hello": "world"}', "no log.entries"),
    (b'[1, 2, 3]', "not an object"),
    (b'', "empty"),
    (b'\x00\x01garbage', "neither a HAR"),
    (b'{"log": {"entries": [{"request": {"url": "no-scheme", "method": "GET"}}]}}', "entry 0"),
    (b'{"log": {"entries": []}} trailing', "trailing garbage"),
])
def test_not_a_har(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.har"
    path.write_bytes(content)
    with pytest.raises(CaptureFileError, match=message):
        check(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(har(*(entry() for _ in range(200))))
    path = tmp_path / "cut.har.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaptureFileError, match="gzip stream ends early"):
        check(path)


def test_entry_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.har"
    path.write_bytes(har(entry(), entry(body="x" * 300_000)))
    with pytest.raises(CaptureFileError, match=r"entry 1 .*larger than 100000 bytes"):
        check(path, max_entry_bytes=100_000)


def test_cli_good_and_bad_files(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.har", tmp_path / "bad.har"
    good.write_bytes(har(entry()))
    bad.write_bytes(har(entry(), entry())[:-30])
    db = tmp_path / "t.db"
    r = cli("import", str(good), str(bad), "--db", str(db))
    assert r.exit_code == 1
    assert "good.har: 1 entries → 1 flows" in r.output
    assert "bad.har" in r.output and "ends early" in r.output and "Traceback" not in r.output
    assert count(db, "flows") == 1


# -- mitmproxy flow files --------------------------------------------------------------------------------------

def write_flows(path: Path, flows: list) -> None:
    from mitmproxy.io import FlowWriter

    with open(path, "wb") as f:
        w = FlowWriter(f)
        for fl in flows:
            w.add(fl)


def sample_flows() -> list:
    from mitmproxy.test import tflow

    post = tflow.tflow(resp=True)
    post.request.method = "POST"
    post.request.headers["content-type"] = "application/json"
    post.request.content = json.dumps({"email": EMAIL}).encode()
    failed = tflow.tflow(err=True)
    ws = tflow.twebsocketflow()
    return [post, failed, ws, tflow.ttcpflow(), tflow.tdnsflow(resp=True)]


def test_flow_file_import(tmp_path: Path) -> None:
    path = tmp_path / "dump.mitm"
    flows = sample_flows()
    write_flows(path, flows)
    db = tmp_path / "t.db"
    result = run_import(db, path)
    assert not result.failed, result.failed[0].error
    assert count(db, "flows") == 3 and count(db, "connections") == 1 and count(db, "dns") == 1
    ws_messages = count(db, "websocket_messages")
    assert ws_messages == len(flows[2].websocket.messages) > 0
    post = rows(db, "SELECT * FROM flows WHERE method = 'POST'")[0]
    assert post["finding_count"] >= 1 and post["source"] == "dump.mitm#0"
    assert post["request_sha256"] is not None
    failed = rows(db, "SELECT * FROM flows WHERE error IS NOT NULL")
    assert len(failed) == 1
    snapshot = [count(db, t) for t in ("flows", "events", "findings", "connections", "dns", "websocket_messages")]
    run_import(db, path)
    assert [count(db, t) for t in ("flows", "events", "findings", "connections", "dns",
                                   "websocket_messages")] == snapshot


def test_same_flow_twice_in_a_file_is_one_flow(tmp_path: Path) -> None:
    """mitmdump -w can write a flow at response and again at error: the last version wins, once."""
    from mitmproxy import flow as mflow

    ws = sample_flows()[2]
    again = ws.copy()
    again.id = ws.id
    again.error = mflow.Error("connection closed")
    path = tmp_path / "twice.mitm"
    write_flows(path, [ws, again])
    db = tmp_path / "t.db"
    assert not run_import(db, path).failed
    assert count(db, "flows") == 1 and count(db, "websocket_messages") == len(ws.websocket.messages)
    assert rows(db, "SELECT error FROM flows")[0]["error"] == "connection closed"


def test_truncated_flow_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.mitm"
    write_flows(path, sample_flows())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    db = tmp_path / "t.db"
    [failed] = run_import(db, path).failed
    assert "flow 4" in failed.error and "incomplete" in failed.error and "truncated" in failed.error
    assert_nothing_written(db)
    assert count(db, "connections") == 0 and count(db, "dns") == 0


@pytest.mark.parametrize("content,message", [
    (b"5:hello,", "flow 0 at byte 0 cannot be read"),
    (b"12:not a flow,", "flow 0 starting at byte 0 is incomplete"),
    (b"999999999999:x", "flow 0 starting at byte 0 is incomplete"),  # read up to the cap, never 1 TB
    (b"5:hello,}", "flow 0 at byte 0 cannot be read"),
])
def test_corrupt_flow_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.mitm"
    path.write_bytes(content)
    with pytest.raises(CaptureFileError, match=message):
        check(path)


def test_flow_size_limit(tmp_path: Path) -> None:
    flows = sample_flows()
    flows[0].request.content = b"x" * 300_000
    path = tmp_path / "big.mitm"
    write_flows(path, flows)
    with pytest.raises(CaptureFileError, match=r"flow 0 .*larger than 100000 bytes"):
        check(path, max_entry_bytes=100_000)
    assert check(path).entries == len(flows)


def test_export_then_import_keeps_flows_and_websocket_messages(tmp_path: Path) -> None:
    """Flow file → DB → teletap export har → fresh DB: the same HTTP flows, bodies and WebSocket messages."""
    path = tmp_path / "dump.mitm"
    write_flows(path, sample_flows())
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    assert not run_import(first, path).failed
    out = tmp_path / "out.har"
    r = cli("export", "har", "--db", str(first), "--out", str(out))
    assert r.exit_code == 0, r.output
    har_doc = json.loads(out.read_text())
    assert len(har_doc["log"]["entries"]) == count(first, "flows") == 3
    assert not run_import(second, out).failed
    query = ("SELECT method, url, status, request_body, response_body, request_sha256, error, event_count, "
             "finding_count FROM flows ORDER BY url, method, error")
    assert rows(second, query) == rows(first, query)
    ws = "SELECT direction, time, is_text, size, content FROM websocket_messages ORDER BY time, direction"
    assert rows(second, ws) == rows(first, ws) and count(second, "websocket_messages") > 0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("time", 1e308, "not a usable time"),
    ("status", 2**63 - 1, "status .* is out of range"),  # fits JSON int64, not the store
    ("startedDateTime", "not a date", "not an ISO 8601 time"),
])
def test_values_the_store_cannot_hold_are_caught_by_the_check(tmp_path: Path, field: str, value: Any,
                                                              message: str) -> None:
    bad = entry()
    if field == "status":
        bad["response"]["status"] = value
    else:
        bad[field] = value
    path = tmp_path / "hostile.har"
    path.write_bytes(har(entry(), bad))
    db = tmp_path / "t.db"
    [failed] = run_import(db, path).failed
    assert "entry 1" in failed.error and __import__("re").search(message, failed.error), failed.error
    assert_nothing_written(db)


def test_flow_file_with_an_infinite_timestamp(tmp_path: Path) -> None:
    flows = sample_flows()
    flows[1].request.timestamp_start = float("inf")
    path = tmp_path / "inf.mitm"
    write_flows(path, flows)
    db = tmp_path / "t.db"
    [failed] = run_import(db, path).failed
    assert "flow 1" in failed.error and "not a usable time" in failed.error, failed.error
    assert_nothing_written(db)


def test_parallel_pipeline_gives_the_same_rows(tmp_path: Path) -> None:
    """--jobs N runs Pipeline.process in forked workers: same rows, same order, as in-process."""
    path = tmp_path / "many.har"
    path.write_bytes(har(*(entry(f"http://collector.example.invalid/c{i}?n={i}") for i in range(150))))
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    assert not run_import(one, path, jobs=1).failed
    assert not run_import(two, path, jobs=2).failed
    for sql in ("SELECT * FROM flows ORDER BY rowid", "SELECT * FROM events ORDER BY id",
                "SELECT * FROM findings ORDER BY id"):
        assert rows(one, sql) == rows(two, sql)
    assert count(one, "flows") == 150 and count(one, "findings") >= 150


def test_body_left_out_by_the_exporter_is_marked_truncated(tmp_path: Path) -> None:
    """DevTools "Save all as HAR" without content: sizes stay, the body is absent and flagged as such."""
    e = entry(body=None)
    del e["response"]["content"]["text"]
    e["response"]["bodySize"] = 5000
    path = tmp_path / "nocontent.har"
    path.write_bytes(har(e))
    db = tmp_path / "t.db"
    assert not run_import(db, path).failed
    flow = rows(db, "SELECT * FROM flows")[0]
    assert flow["response_size_wire"] == 5000 and flow["response_body"] is None
    assert flow["response_body_truncated"] == 1 and flow["response_sha256"] is None
