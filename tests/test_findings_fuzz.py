"""Hypothesis fuzzing: scan() never raises, stays within time, and its output is well-formed."""

from __future__ import annotations

import logging
import string
import time
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teletap.findings import Finding, FindingsEngine, Identifier, blank_body

ENGINE = FindingsEngine(
    key=b"fuzz",
    identifiers=[Identifier("email", "jane.doe@example.invalid"), Identifier("canary", "TT-CANARY-1"),
                 Identifier("name", "Jan Pietersen"), Identifier("tenant", "8c3b2f1e-0d4a-4b5c-9e6f-7a8b9c0d1e2f")],
    org_hostnames=["corp.example.invalid"],
)
SEVERITIES = {"low", "medium", "high"}


class _Errors(logging.Handler):
    """scan() swallows a failing stage and logs it; for the fuzzer a logged failure is a failure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


ERRORS = _Errors()
logging.getLogger("teletap.findings").addHandler(ERRORS)

# Fragments that steer random text towards the detectors' anchors, so the fuzzer reaches validators.
FRAGMENTS = ["@", "%40", ".", ":", "::", "-", "S-1-5-21-", "C:\\Users\\", "/home/", ".docx", "sharepoint.com/",
             "+31 ", "NL91", "4111", "BSN ", "lat", "\"lon\":", "eyJ", "jane.doe@example.invalid", "TT-CANARY-1",
             "corp.example.invalid", "{", "}", "\"", "\\", "=", "&", "\x00", "é", "\ud800", "0" * 20]
text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12),
                          st.text(alphabet=string.hexdigits + "-:.", max_size=40)), max_size=40).map("".join)
json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text, st.binary(max_size=40)),
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(st.one_of(text, st.integers()), children, max_size=6)),
    max_leaves=40)
pii_item = st.one_of(
    st.fixed_dictionaries({"path": st.one_of(text, st.lists(st.one_of(text, st.integers()), max_size=5), st.none()),
                           "kind": st.one_of(st.integers(-5, 40), text, st.none(), st.booleans())}),
    json_like)
event = st.one_of(
    st.builds(SimpleNamespace, position=st.one_of(st.integers(), st.none()), data=json_like,
              pii=st.one_of(st.lists(pii_item, max_size=5), json_like)),
    json_like)
headers = st.lists(st.one_of(st.tuples(st.sampled_from(["Cookie", "Authorization", "X-Id", "Content-Type", "Referer"]),
                                       text),
                             st.tuples(text, text), st.tuples(st.binary(max_size=10), st.binary(max_size=30)),
                             st.none(), st.tuples(text)), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=st.one_of(text.map(lambda s: "https://c.example.invalid/p?" + s), text, st.none()),
       request_headers=headers,
       body=st.one_of(st.none(), st.binary(max_size=2000), text.map(lambda s: s.encode("utf-8", "surrogatepass"))),
       content_type=st.one_of(st.none(), st.sampled_from(["application/json", "image/png", "text/plain"]), text),
       events=st.lists(event, max_size=4),
       data_flow=st.one_of(st.none(), st.sampled_from(["first-party", "third-party"]), text))
def test_scan_never_raises_and_returns_well_formed_findings(url, request_headers, body, content_type, events,
                                                            data_flow):
    t0 = time.perf_counter()
    found = ENGINE.scan(url=url, request_headers=request_headers, body=body, content_type=content_type,
                        events=events, data_flow=data_flow)
    assert time.perf_counter() - t0 < 2.0
    assert not ERRORS.records, ERRORS.records
    for f in found:
        assert isinstance(f, Finding)
        assert f.severity in SEVERITIES and 0 <= f.confidence <= 1
        assert len(f.value_hash) == 64 and f.value is None
        if f.span is not None:
            assert f.location == "body" and body is not None and 0 <= f.span[0] < f.span[1] <= len(body)
        assert (f.event_position is None) or f.location.startswith("event:")
    if body:
        assert len(blank_body(body, found)) == len(body)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=50_000))
def test_large_random_bodies_are_fast(body):
    t0 = time.perf_counter()
    ENGINE.scan(url="https://c.example.invalid/", request_headers=[], body=body, content_type=None, events=[],
                data_flow=None)
    assert time.perf_counter() - t0 < 2.0


@settings(max_examples=100, deadline=None)
@given(prefix=st.binary(max_size=64), suffix=st.binary(max_size=64))
def test_planted_canary_is_found_whatever_surrounds_it(prefix, suffix):
    body = prefix + b" TT-CANARY-1 " + suffix
    found = ENGINE.scan(url="https://c.example.invalid/", request_headers=[], body=body, content_type=None,
                        events=[], data_flow=None)
    spans = [f.span for f in found if f.kind == "canary"] + [s for f in found if f.kind == "canary"
                                                             for s in f.extra_spans]
    assert (len(prefix) + 1, len(prefix) + 12) in spans
