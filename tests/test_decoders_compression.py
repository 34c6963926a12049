"""Content-encoding removal: every encoding, stacking, mislabelled data, truncation and bombs."""

from __future__ import annotations

import base64
import gzip
import zlib

import brotli
import pytest
import zstandard

from teletap.decoders import Limits, decode_request, decode_response
from teletap.decoders.compression import decode_body

PLAIN = b'{"name":"Ms.Test","data":{"k":"' + b"v" * 200 + b'"}}'


def raw_deflate(b: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(b) + c.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": raw_deflate,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "base64": base64.b64encode,
}


@pytest.mark.parametrize("enc", sorted(ENCODERS))
def test_each_encoding(enc: str) -> None:
    d = decode_body(ENCODERS[enc](PLAIN), [enc], Limits())
    assert d.data == PLAIN and d.error is None and not d.bomb


def test_deflate_label_with_zlib_stream() -> None:
    d = decode_body(zlib.compress(PLAIN), ["deflate"], Limits())
    assert d.data == PLAIN


def test_gzip_labelled_deflate_is_sniffed() -> None:
    d = decode_body(gzip.compress(PLAIN), ["deflate"], Limits())
    assert d.data == PLAIN and "gzip data labelled deflate" in d.notes


def test_unlabelled_gzip_and_zstd_sniffed() -> None:
    assert decode_body(gzip.compress(PLAIN), [], Limits()).data == PLAIN
    assert decode_body(zstandard.ZstdCompressor().compress(PLAIN), [], Limits()).data == PLAIN


def test_plain_data_labelled_gzip_kept() -> None:
    d = decode_body(PLAIN, ["gzip"], Limits())
    assert d.data == PLAIN and "uncompressed data labelled gzip" in d.notes


def test_stacked_encodings_decoded_in_reverse() -> None:
    # "Content-Encoding: gzip, br" means gzip was applied first.
    body = brotli.compress(gzip.compress(PLAIN))
    r = decode_request("POST", "https://example.invalid/api", [("Content-Type", "application/json"),
                                                                ("Content-Encoding", "gzip, br")], body)
    assert r.body == PLAIN and r.format == "json" and r.error is None
    # Also as two header lines.
    r2 = decode_request("POST", "https://example.invalid/api", [("Content-Encoding", "gzip"),
                                                                 ("Content-Encoding", "br")], body)
    assert r2.body == PLAIN


def test_concatenated_gzip_members() -> None:
    body = gzip.compress(PLAIN[:50]) + gzip.compress(PLAIN[50:])
    assert decode_body(body, ["gzip"], Limits()).data == PLAIN


def test_unknown_encoding_is_an_error_not_an_exception() -> None:
    r = decode_request("POST", "https://example.invalid/", [("Content-Encoding", "compress")], b"abc")
    assert r.error and "unknown content-encoding" in r.error and r.body is None


def test_truncated_stream_keeps_partial_output() -> None:
    z = gzip.compress(PLAIN * 20)
    d = decode_body(z[: len(z) // 2], ["gzip"], Limits())
    assert d.error and "truncated" in d.error
    assert d.data and (PLAIN * 20).startswith(d.data)
    r = decode_request("POST", "https://example.invalid/", [("Content-Encoding", "gzip")], z[: len(z) // 2])
    assert r.error and r.error_offset == len(r.body or b"")


def test_corrupt_stream() -> None:
    r = decode_request("POST", "https://example.invalid/", [("Content-Encoding", "br")], b"\xff\xfe\xfd" * 10)
    assert r.error and r.body is None


# --- bombs -------------------------------------------------------------------------------------------

BIG = 50 * 1024 * 1024  # 50 MiB of zeros: compresses to a few KiB or less


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    zeros = b"\0" * BIG
    return {"gzip": gzip.compress(zeros, 9), "deflate": raw_deflate(zeros), "br": brotli.compress(zeros, quality=5),
            "zstd": zstandard.ZstdCompressor(level=3).compress(zeros)}


@pytest.mark.parametrize("enc", ["gzip", "deflate", "br", "zstd"])
def test_bomb_stopped_by_ratio(enc: str, bombs: dict[str, bytes]) -> None:
    body = bombs[enc]
    r = decode_request("POST", "https://mobile.events.data.microsoft.com/OneCollector/1.0/",
                       [("Content-Type", "application/bond-compact-binary"), ("Content-Encoding", enc)], body)
    assert r.bomb and r.body is None and r.events == []
    assert r.error and "exceeds" in r.error
    assert any("decompression bomb" in n for n in r.notes)


@pytest.mark.parametrize("enc", ["gzip", "zstd", "br"])
def test_bomb_stopped_by_output_size(enc: str, bombs: dict[str, bytes]) -> None:
    d = decode_body(bombs[enc], [enc], Limits(max_output_bytes=1024 * 1024, max_ratio=10**9))
    assert d.bomb and d.data is None and "1048576" in (d.error or "")


def test_limit_is_exact() -> None:
    data = b"a" * 10_000
    z = gzip.compress(data)
    assert decode_body(z, ["gzip"], Limits(max_output_bytes=10_000, max_ratio=10**6)).data == data
    assert decode_body(z, ["gzip"], Limits(max_output_bytes=9_999, max_ratio=10**6)).bomb


def test_response_bomb() -> None:
    body = gzip.compress(b"\0" * (2 * 1024 * 1024))
    r = decode_response("GET", "https://example.invalid/x", 200, [("Content-Encoding", "gzip")], body,
                        Limits(max_ratio=10))
    assert r.bomb and r.body is None
