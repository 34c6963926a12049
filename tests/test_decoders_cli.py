"""``teletap decode FILE``."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

from click.testing import CliRunner

from teletap.cli_decode import decode
from tests.bond_encoder import Prop, encode, record


def run(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(decode, list(args))
    return res.exit_code, json.loads(res.output)


def test_decode_deflated_bond_file(tmp_path: Path) -> None:
    c = zlib.compressobj(wbits=-15)
    body = c.compress(encode(record(name="A", data={"x": Prop("Int64", 5)})) * 3) + c.flush()
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    code, out = run(str(f), "--content-type", "application/bond-compact-binary", "--content-encoding", "deflate",
                    "--url", "https://mobile.events.data.microsoft.com/OneCollector/1.0/")
    assert code == 0
    assert out["format"] == "1ds-bond" and out["error"] is None
    assert [e["name"] for e in out["events"]] == ["A", "A", "A"]
    assert out["events"][0]["data"]["data"]["x"] == 5
    assert "3 records, CS 4.0, Compact Binary v1" in out["notes"]


def test_decode_ndjson_query_params_and_header_option(tmp_path: Path) -> None:
    f = tmp_path / "b.json.gz"
    f.write_bytes(gzip.compress(b'{"name":"E","iKey":"o:t","ver":"4.0"}'))
    url = "https://browser.events.data.microsoft.com/OneCollector/1.0/?content-encoding=gzip&apikey=t-1"
    code, out = run(str(f), "--url", url, "-t", "text/plain", "-H", "client-version: 1DS-Web-JS-4.4.4")
    assert code == 0 and out["events"][0]["format"] == "1ds-json"
    assert out["events"][0]["sdk_version"] == "1DS-Web-JS-4.4.4"


def test_decode_response_and_error_exit(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text('{"A": {"x": 1}}')
    code, out = run(str(f), "--response", "--method", "GET", "--url", "https://ecs.office.com/config/v1/C/1.0")
    assert code == 0 and out["format"] == "ecs" and out["events"][0]["name"] == "C/A"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x29\x03")
    code, out = run(str(bad), "-t", "application/bond-compact-binary")
    assert code == 1 and out["error"] and out["error_offset"] is not None


def test_bad_header_option(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"")
    res = CliRunner().invoke(decode, [str(f), "-H", "no-colon"])
    assert res.exit_code == 2 and "NAME: VALUE" in res.output


def test_decode_from_stdin() -> None:
    res = CliRunner().invoke(decode, ["-", "-t", "application/json"], input=b'{"name":"from-stdin"}')
    assert res.exit_code == 0
    assert json.loads(res.output)["events"][0]["name"] == "from-stdin"
