"""Hostile traffic, small and fast: fuzzed bodies of every decoder family through the capture addon (on
mitmproxy's tflow), the ingest pipeline and the store, with nothing escaping and nothing swallowed.

The full run (100k bodies per family) is ``python bench/fuzz_addon.py``; see docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from fuzz_addon import FAMILIES, Tally, run_family

BODIES = 300  # per family: 10 families, a few seconds in all


def _explain(t: Tally) -> str:
    return "; ".join(t.samples) or "no samples"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fuzzed_bodies_neither_escape_nor_get_swallowed(family: str) -> None:
    t = run_family(family, BODIES, seed=7)
    assert t.bodies == BODIES and t.records == BODIES
    assert t.hook_escaped == 0 and t.pipeline_escaped == 0, _explain(t)
    assert t.guard_caught == 0 and t.pipeline_logged == 0, _explain(t)  # a logged failure hides a bug
    assert t.internal_decoder_errors == 0, _explain(t)
    assert t.store_failed == 0, _explain(t)


def test_fuzzing_is_reproducible() -> None:
    a, b = run_family("1ds-json", 50, seed=3), run_family("1ds-json", 50, seed=3)
    assert (a.decode_errors, a.events, a.records) == (b.decode_errors, b.events, b.records)


# Text with a lone surrogate used to reach a row, SQLite refused to encode it, and the whole batch (up to
# 500 flows) was counted as unrecorded. The store now escapes it, and a failing batch is retried item by item.


def test_non_utf8_header_bytes_are_storable() -> None:
    # mitmproxy hands a Latin-1 header byte over as a surrogate escape (\udce9)
    t = run_family("1ds-json", 20, seed=5, non_utf8_headers=1.0)
    assert t.store_surrogates == 0, _explain(t)


def test_json_with_an_escaped_lone_surrogate_is_storable(tmp_path: Path) -> None:
    # a JavaScript SDK that cuts a UTF-16 string between the halves of a pair sends exactly this
    from teletap.pipeline import build_pipeline
    from teletap.records import Body, HttpFlowRecord
    from teletap.store import Store

    body = b'{"name": "Fuzz", "data": {"title": "caf\\ud83d"}}'
    record = HttpFlowRecord(
        id="fuzz-1", request_time=1.0, response_time=2.0, client_address="127.0.0.1", client_port=1,
        server_address=None, server_port=None, scheme="https", host="api.example.invalid", port=443, method="POST",
        path="/v1", query="", url="https://api.example.invalid/v1", http_version="HTTP/1.1", status=200,
        request_headers=[("content-type", "application/json")], response_headers=[],
        request_body=Body(raw=body, size_wire=len(body)), response_body=None, error=None, sinkhole_rule=None,
        tls_version=None, sni=None)
    item = build_pipeline(findings_key=b"\x01" * 32)[0].process(record, 1)
    store = Store(tmp_path / "t.db")
    try:
        store.write([item])
    finally:
        store.close()
