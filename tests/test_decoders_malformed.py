"""Malformed input: truncation, wrong lengths, random bytes, deep nesting; hypothesis fuzzing of every
decoder. The contract: no exception escapes, and no input reaches the catch-all ("internal decoder error")
either: every failure is a recorded decode error with an offset inside the body."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teletap.decoders import (
    DecodeResult,
    Limits,
    aria,
    compression,
    decode_request,
    decode_response,
    generic,
    onecollector,
)
from teletap.decoders.appinsights import decode_appinsights
from teletap.decoders.model import DecodeError
from tests.bond_encoder import Prop, encode, record, ticks_from_unix_ms
from tests.test_decoders_formats import aria_body

# TELETAP_FUZZ_EXAMPLES=5000 for a longer local run; CI keeps each test to a few seconds.
FUZZ = settings(max_examples=int(os.environ.get("TELETAP_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
ONECOLLECTOR = "https://mobile.events.data.microsoft.com/OneCollector/1.0/"
TARGETS = [
    ("https://mobile.events.data.microsoft.com/OneCollector/1.0/", "application/bond-compact-binary"),
    ("https://browser.events.data.microsoft.com/OneCollector/1.0/", "application/x-json-stream"),
    ("https://browser.events.data.microsoft.com/OneCollector/1.0/?content-type=application/x-json-stream",
     "text/plain"),
    ("https://browser.pipe.aria.microsoft.com/Collector/3.0/?qsp=true&content-encoding=base64", "text/plain"),
    ("https://office.pipe.aria.microsoft.com/Collector/3.0/", "application/bond-compact-binary"),
    ("https://dc.services.visualstudio.com/v2/track", "application/json"),
    ("https://x.in.applicationinsights.azure.com/v2.1/track", "application/x-json-stream"),
    ("https://api.example.invalid/", "application/json"),
    ("https://api.example.invalid/", "application/x-www-form-urlencoded"),
    ("https://api.example.invalid/", "multipart/form-data; boundary=b"),
    ("https://api.example.invalid/", "application/x-protobuf"),
    ("https://api.example.invalid/", "application/grpc"),
    ("https://api.example.invalid/?a=1&b", ""),
]
ENCODINGS = ["", "gzip", "deflate", "br", "zstd", "base64", "gzip, br"]


def check(r: DecodeResult, body_len: int | None = None) -> None:
    assert isinstance(r, DecodeResult)
    assert not (r.error or "").startswith("internal decoder error"), r.error
    if r.error_offset is not None:
        limit = len(r.body) if r.body is not None else body_len
        assert r.error_offset >= 0 and (limit is None or r.error_offset <= limit)
    json.dumps([e.data for e in r.events])  # JSON-serialisable
    json.dumps([e.pii for e in r.events])


def sample_bond() -> bytes:
    return encode(record(time=ticks_from_unix_ms(1_764_072_000_000), ikey="o:t", ext={"app": {"id": "a"}},
                         data={"e": Prop("String", "x@example.invalid", pii=["SmtpAddress"]),
                               "n": Prop("Int64", 5), "g": Prop("Guid", "0f8fad5b-d9cb-469f-a165-70867728950e"),
                               "l": Prop("ArrayInt64", [1, 2])}))


SAMPLES = {
    "bond": (TARGETS[0], sample_bond() * 2),
    "aria": (TARGETS[4], aria_body()),
    "json": (TARGETS[1], b'{"name":"a","iKey":"o:t","ext":{"metadata":{"f":{"x":{"t":289}}}},"data":{"x":"y"}}\n'
                         b'{"name":"b"}'),
    "appinsights": (TARGETS[5], b'[{"name":"n","iKey":"k","tags":{},"data":{"baseData":{"name":"x"}}}]'),
}


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(TARGETS), st.sampled_from(ENCODINGS))
def test_random_bytes_everywhere(body: bytes, target: tuple[str, str], enc: str) -> None:
    url, ct = target
    headers = [("Content-Type", ct)] if ct else []
    if enc:
        headers.append(("Content-Encoding", enc))
    check(decode_request("POST", url, headers, body, Limits(max_depth=16)), len(body))


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mutated_valid_bodies(kind: str, data: st.DataObject) -> None:
    (url, ct), body = SAMPLES[kind]
    b = bytearray(body)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if not b:
            break
        i = data.draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del b[i : i + data.draw(st.integers(1, 8))]
    check(decode_request("POST", url, [("Content-Type", ct)], bytes(b)), len(b))


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_module_decoders_directly(data: bytes) -> None:
    limits = Limits(max_depth=16, max_events=50)
    for fn in (
        lambda: onecollector.decode_bond(data, {}, limits, []),
        lambda: onecollector.decode_json_lines(data, {}, limits, []),
        lambda: aria.decode_aria(data, {}, limits, []),
        lambda: decode_appinsights(data, limits, []),
    ):
        _events, err = fn()
        assert err is None or isinstance(err, DecodeError)
    for fn2 in (
        lambda: generic.decode_json(data, limits, []),
        lambda: generic.decode_form(data, limits, []),
        lambda: generic.decode_multipart(data, "multipart/form-data; boundary=b", limits, []),
        lambda: generic.decode_protobuf(data, False, limits, []),
        lambda: generic.decode_protobuf(data, True, limits, []),
    ):
        with contextlib.suppress(DecodeError):
            fn2()
    generic.find_jwts([("Authorization", "Bearer eyJ" + data.hex())], b"eyJ" + data, 0)
    d = compression.decode_body(data, ["gzip", "br", "deflate", "zstd", "base64"][len(data) % 5:][:1], limits)
    assert d.data is not None or d.error


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([
    "https://settings-win.data.microsoft.com/settings/v3.0/ns/feature?os=windows",
    "https://ecs.office.com/config/v1/Client/1.0?agents=A",
    "https://example.invalid/other",
]), st.sampled_from(["", "gzip"]))
def test_fuzz_responses(body: bytes, url: str, enc: str) -> None:
    headers = [("Content-Encoding", enc)] if enc else []
    check(decode_response("GET", url, 200, headers, body, Limits(max_depth=16)), len(body))


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                    max_leaves=20))
def test_fuzz_json_shapes(doc: object) -> None:
    # Valid JSON of any shape, where decoders expect objects: wrong types must not reach the catch-all.
    line = json.dumps(doc).encode()
    for url, ct in TARGETS[1:3] + TARGETS[5:8]:
        check(decode_request("POST", url, [("Content-Type", ct)], line))
        check(decode_request("POST", url, [("Content-Type", ct)], line + b"\n" + line))
    check(decode_response("GET", "https://ecs.office.com/config/v1/C/1", 200, [], line))
    check(decode_response("GET", "https://settings-win.data.microsoft.com/settings/v3.0/a/b", 200, [], line))


# --- specific malformed cases ---------------------------------------------------------------------------


def test_every_truncation_of_a_bond_batch() -> None:
    body = sample_bond() * 2
    one = len(body) // 2
    for cut in range(1, len(body)):
        r = decode_request("POST", ONECOLLECTOR, [("Content-Type", "application/bond-compact-binary")], body[:cut])
        check(r, cut)
        assert len(r.events) == (1 if cut >= one else 0)
        if cut not in (one,):
            assert r.error is not None and r.error_offset is not None and r.error_offset <= cut


def test_wrong_string_length_in_record() -> None:
    body = bytearray(sample_bond())
    assert body[5:7] == b"\x49\x0a"  # name: string field 2, 10 bytes ("Test.Event")
    body[6] = 0x7F  # claims 127 bytes
    r = decode_request("POST", ONECOLLECTOR, [("Content-Type", "application/bond-compact-binary")], bytes(body))
    check(r)
    assert r.error and r.error_offset is not None


def test_deep_json_nesting_in_every_json_decoder() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    for url, ct in [("https://api.example.invalid/", "application/json"),
                    ("https://dc.services.visualstudio.com/v2/track", "application/json")]:
        r = decode_request("POST", url, [("Content-Type", ct)], deep)
        check(r)
        assert r.error and r.events == []
    r = decode_response("GET", "https://ecs.office.com/config/v1/C/1", 200, [], b'{"a":' + deep + b"}")
    check(r)
    assert r.error and "nesting" in r.error


def test_deep_protobuf_nesting_bounded() -> None:
    msg = b"\x08\x01"
    for _ in range(200):
        n = len(msg)
        msg = b"\x0a" + (bytes([n]) if n < 128 else bytes([0x80 | (n & 0x7F), n >> 7])) + msg
    r = decode_request("POST", "https://api.example.invalid/", [("Content-Type", "application/x-protobuf")], msg,
                       Limits(max_depth=64))
    check(r)
    # Beyond the depth limit the tree stops and the rest is kept as bytes: bounded, not an error.
    depth = 0
    node = r.events[0].data["fields"]
    while isinstance(node, dict) and "1" in node:
        node = node["1"]
        depth += 1
    assert depth <= 64


def test_bomb_in_every_decoder_path() -> None:
    bomb = gzip.compress(b"{" + b" " * (30 * 1024 * 1024) + b"}")
    for url, ct in TARGETS:
        r = decode_request("POST", url, [("Content-Type", ct), ("Content-Encoding", "gzip")], bomb)
        check(r, len(bomb))
        assert r.bomb and r.body is None and not [e for e in r.events if e.format not in ("query", "jwt")]


def test_zlib_bomb_labelled_deflate() -> None:
    bomb = zlib.compress(b"\0" * (20 * 1024 * 1024), 9)
    r = decode_request("POST", ONECOLLECTOR, [("Content-Encoding", "deflate")], bomb)
    assert r.bomb


@pytest.mark.parametrize("n", [0, 1, 3])
def test_empty_and_whitespace_bodies(n: int) -> None:
    for url, ct in TARGETS:
        check(decode_request("POST", url, [("Content-Type", ct)], b" \n" * n))
