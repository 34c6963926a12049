"""1DS OneCollector: CsProtocol Bond records (every field, every value kind, annotations) and CS JSON."""

from __future__ import annotations

import base64
import gzip
import json
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teletap.decoders import Limits, decode_request
from tests.bond_encoder import (
    EXT_FIELDS,
    INT64,
    STRING,
    F,
    Prop,
    encode,
    record,
    ticks_from_unix_ms,
)

URL = "https://mobile.events.data.microsoft.com/OneCollector/1.0/"
BOND_HEADERS = [("Content-Type", "application/bond-compact-binary"), ("Client-Id", "NO_AUTH"),
                ("SDK-Version", "EVT-Windows-C++-No-3.7.62.1"), ("APIKey", "tenant1-token,tenant2-token"),
                ("Upload-Time", "1764072000000")]
T0 = ticks_from_unix_ms(1_764_072_000_123)
GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
GUID2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def raw_deflate(b: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(b) + c.flush()


def sample_ext_values() -> dict[str, dict]:
    """One value for every field of every ext struct, typed as the IDL says."""
    out: dict[str, dict] = {}
    for name, fields in EXT_FIELDS.items():
        vals: dict = {}
        for fname, (_fid, t) in fields.items():
            if fname in ("claims", "mscom"):
                vals[fname] = {"k": "v"}
            elif fname == "ticketKeys":
                vals[fname] = [["t1", "t2"]]
            elif t == STRING:
                vals[fname] = f"{name}.{fname}"
            elif t == 2:  # bool
                vals[fname] = True
            elif t == 8:  # double
                vals[fname] = 50.0
            else:
                vals[fname] = 300 + len(fname)
        out[name] = vals
    return out


ALL_KINDS = {
    "i64": Prop("Int64", -(2**40)),
    "u64": Prop("UInt64", 2**64 - 2),
    "i32": Prop("Int32", -7),
    "u32": Prop("UInt32", 4_000_000_000),
    "dbl": Prop("Double", 3.25),
    "str": Prop("String", "hello"),
    "empty": Prop("String", ""),
    "yes": Prop("Bool", True),
    "no": Prop("Bool", False),
    "when": Prop("DateTime", T0),
    "guid": Prop("Guid", GUID),
    "ai64": Prop("ArrayInt64", [1, -2, 3]),
    "au64": Prop("ArrayUInt64", [2**64 - 1, 5]),
    "ai32": Prop("ArrayInt32", [-1]),
    "au32": Prop("ArrayUInt32", [7, 8]),
    "adbl": Prop("ArrayDouble", [0.5, -1.5]),
    "astr": Prop("ArrayString", ["a", "b"]),
    "abool": Prop("ArrayBool", [1, 0]),
    "adt": Prop("ArrayDateTime", [T0]),
    "aguid": Prop("ArrayGuid", [GUID, GUID2]),
    "zero": Prop("Int64", 0),
}
EXPECTED_VALUES = {
    "i64": -(2**40), "u64": 2**64 - 2, "i32": -7, "u32": 4_000_000_000, "dbl": 3.25, "str": "hello",
    "empty": "", "yes": True, "no": False, "when": "2025-11-25T12:00:00.123000Z", "guid": GUID,
    "ai64": [1, -2, 3], "au64": [2**64 - 1, 5], "ai32": [-1], "au32": [7, 8], "adbl": [0.5, -1.5],
    "astr": ["a", "b"], "abool": [True, False], "adt": ["2025-11-25T12:00:00.123000Z"],
    "aguid": [GUID, GUID2], "zero": 0,
}


def full_record(**kw) -> list:
    args = dict(
        ver="4.0", name="Office.Test.Full", time=T0, pop_sample=50.0, ikey="o:tenant1", flags=0x00480201,
        cv="cv.1.2", ext=sample_ext_values(), tags={"tag1": "v1"}, base_type="Ms.Base",
        base_data={"baseProp": Prop("String", "b", pii=["Uri"])},
        data={**ALL_KINDS,
              "UserEmail": Prop("String", "someone@example.invalid", pii=["SmtpAddress"]),
              "UserId": Prop("String", "user-0001", pii=["Identity", "GenericData"]),
              "DocTitle": Prop("String", "Quarterly plan", cc=[1]),
              "Both": Prop("String", "x", pii=["MailSubject"], cc=[1])},
        ext_data={"extProp": Prop("Int32", 5)},
        extra=[F(90, STRING, "future field"), F(300, INT64, -3)],
    )
    args.update(kw)
    return record(**args)


def test_every_record_field_ext_struct_and_value_kind() -> None:
    body = raw_deflate(encode(full_record()) + encode(full_record(name="Second", ver="3.0")))
    r = decode_request("POST", URL, [*BOND_HEADERS, ("Content-Encoding", "deflate")], body)
    assert r.error is None, r.error
    assert r.format == "1ds-bond"
    assert any("2 records, CS 3.0, 4.0, Compact Binary v1" in n for n in r.notes)
    assert r.body is not None and r.body.startswith(b"\x29\x034.0")
    ev = r.events[0]
    d = ev.data
    assert (ev.format, ev.position, ev.name) == ("1ds-bond", 0, "Office.Test.Full")
    assert ev.time == "2025-11-25T12:00:00.123000Z" == d["time"]
    assert d["_meta"]["time"] == {"kind": "DateTime", "ticks": T0}
    assert d["ver"] == "4.0" and d["popSample"] == 50.0 and d["iKey"] == "o:tenant1" and d["cV"] == "cv.1.2"
    assert d["flags"] == 0x00480201
    assert d["_meta"]["flags"]["names"] == ["MARK_PII", "SCRUB_IP"]
    assert d["tags"] == {"tag1": "v1"}
    # Every ext struct and every one of its fields, by name.
    expected_ext = sample_ext_values()
    assert set(d["ext"]) == set(expected_ext)
    for name, vals in expected_ext.items():
        assert d["ext"][name] == vals, name
    # Every value kind as its plain value, the kind in _meta (absent for plain strings).
    for k, v in EXPECTED_VALUES.items():
        assert d["data"][k] == v, k
    assert d["_meta"]["data.u64"]["kind"] == "UInt64"
    assert d["_meta"]["data.aguid"]["kind"] == "ArrayGuid"
    assert "data.str" not in d["_meta"]
    assert d["data"]["baseType"] == "Ms.Base"
    assert d["data"]["baseData"] == {"baseProp": "b"}
    assert d["extData"] == {"extProp": 5}
    # Unknown record fields are kept by id and type.
    assert d["_unknown"] == [{"id": 90, "type": "string", "value": "future field"},
                             {"id": 300, "type": "int64", "value": -3}]
    # Promoted columns.
    assert ev.ikey == "o:tenant1"
    assert ev.sdk_version == "sdk.ver"
    assert (ev.app_id, ev.app_version) == ("app.id", "app.ver")
    assert (ev.os_name, ev.os_version) == ("os.name", "os.ver")
    assert ev.device_id == "device.localId" and ev.user_id == "user.localId"
    assert ev.tenant_id == "m365.enrolledTenantId"
    # Collector parameters from the headers.
    assert d["_collector"]["apikey"] == "tenant1-token,tenant2-token"
    assert d["_collector"]["upload-time-iso"] == "2025-11-25T12:00:00.000000Z"
    assert r.events[1].name == "Second" and r.events[1].position == 1
    json.dumps([e.data for e in r.events])  # JSON-serialisable


def test_pii_and_customer_content_annotations() -> None:
    r = decode_request("POST", URL, BOND_HEADERS, encode(full_record()))
    pii = r.events[0].pii
    assert {"path": "data.UserEmail", "kind": "SmtpAddress", "source": "1ds-pii-kind"} in pii
    assert {"path": "data.UserId", "kind": "Identity", "source": "1ds-pii-kind"} in pii
    assert {"path": "data.UserId", "kind": "GenericData", "source": "1ds-pii-kind"} in pii
    assert {"path": "data.DocTitle", "kind": "CustomerContent", "detail": "GenericContent",
            "source": "1ds-customer-content"} in pii
    assert {"path": "data.baseData.baseProp", "kind": "Uri", "source": "1ds-pii-kind"} in pii
    kinds = {(p["path"], p["kind"]) for p in pii}
    assert ("data.Both", "MailSubject") in kinds and ("data.Both", "CustomerContent") in kinds
    meta = r.events[0].data["_meta"]
    assert meta["data.UserEmail"] == {"kind": "String", "pii": ["SmtpAddress"]}
    assert meta["data.DocTitle"] == {"kind": "String", "customerContent": ["GenericContent"]}


def test_v2_records_with_length_prefix() -> None:
    body = encode(full_record(), version=2) + encode(full_record(name="B"), version=2)
    r = decode_request("POST", URL, BOND_HEADERS, body)
    assert r.error is None, r.error
    assert [e.name for e in r.events] == ["Office.Test.Full", "B"]
    assert any("Compact Binary v2" in n for n in r.notes)
    v1 = decode_request("POST", URL, BOND_HEADERS, encode(full_record())).events[0].data
    assert r.events[0].data == v1


def test_marshalled_header_is_understood() -> None:
    body = b"\x43\x42\x01\x00" + encode(full_record())
    r = decode_request("POST", URL, BOND_HEADERS, body)
    assert r.error is None and len(r.events) == 1
    assert "marshalled Compact Binary v1" in r.notes


def test_sniffed_without_content_type_and_gzip_labelled_deflate() -> None:
    body = gzip.compress(encode(full_record()))
    r = decode_request("POST", "https://self.events.data.microsoft.com/OneCollector/1.0/",
                       [("Content-Encoding", "deflate")], body)
    assert r.format == "1ds-bond" and len(r.events) == 1
    assert "gzip data labelled deflate" in r.notes


def test_repeated_ext_structs_are_independent_objects() -> None:
    # The reader memoises identical ext structs within a batch; events must not share the dicts.
    body = encode(full_record()) * 3
    evs = decode_request("POST", URL, BOND_HEADERS, body).events
    evs[0].data["ext"]["app"]["id"] = "changed"
    assert evs[1].data["ext"]["app"]["id"] == "app.id"


def test_truncated_batch_keeps_whole_records_and_reports_offset() -> None:
    one = encode(full_record())
    body = one + one[: len(one) // 2]
    r = decode_request("POST", URL, BOND_HEADERS, body)
    assert len(r.events) == 1
    assert r.error and r.error_offset is not None and len(one) <= r.error_offset <= len(body)


def test_resync_after_corrupt_record() -> None:
    one = encode(full_record())
    bad = bytearray(one)
    assert bad[5] == 0x49  # field 2 (name), string
    bad[5] = 0x5F  # field 2 with invalid type id 31
    r = decode_request("POST", URL, BOND_HEADERS, bytes(bad) + one)
    assert r.error is not None
    assert len(r.events) >= 1 and r.events[-1].name == "Office.Test.Full"
    assert any("resynchronised" in n for n in r.notes)


def test_max_events_limit() -> None:
    body = encode(record(name="x")) * 20
    r = decode_request("POST", URL, BOND_HEADERS, body, Limits(max_events=5))
    assert len(r.events) == 5
    assert r.error and "more than 5" in r.error


# --- JSON ----------------------------------------------------------------------------------------------

JS_EVENT = {
    "name": "Ms.Web.PageView", "time": "2026-11-25T12:00:00.123Z", "ver": "4.0", "iKey": "o:jstenant",
    "ext": {"app": {"id": "webapp", "ver": "2.0"}, "user": {"localId": "u:example"},
            "device": {"localId": "d:example"}, "os": {"name": "Windows", "ver": "10"},
            "sdk": {"ver": "1DS-Web-JS-4.4.4", "seq": 1},
            "metadata": {"f": {"UserEmail": {"t": 289}, "Body": {"t": 8193}, "When": {"t": 9},
                               "Count": {"t": 4}, "Nested": {"f": {"Upn": {"t": 321}}},
                               "Emails": {"a": {"t": 289}}}}},
    "data": {"baseType": "PageView", "baseData": {"properties": {"version": "PostChannel=4.4.4"}},
             "UserEmail": "someone@example.invalid", "Body": "hello", "When": "2026-11-25T00:00:00Z",
             "Count": 3, "Nested": {"Upn": "u@example.invalid"}, "Emails": ["a@example.invalid"],
             "TenantId": "00000000-0000-4000-8000-000000000001"},
}


def ndjson(n: int = 3) -> bytes:
    return b"\n".join(json.dumps({**JS_EVENT, "name": f"E{i}"}).encode() for i in range(n))


def test_ndjson_with_params_in_headers() -> None:
    hdrs = [("Content-Type", "application/x-json-stream"), ("Client-Id", "NO_AUTH"),
            ("client-version", "1DS-Web-JS-4.4.4"), ("apikey", "jstenant-token"), ("upload-time", "1764072000000")]
    r = decode_request("POST", "https://browser.events.data.microsoft.com/OneCollector/1.0/?cors=true",
                       hdrs, ndjson(3))
    assert r.format == "1ds-json" and r.error is None
    assert [e.name for e in r.events[:3]] == ["E0", "E1", "E2"]
    ev = r.events[0]
    assert ev.time == "2026-11-25T12:00:00.123000Z"
    assert ev.ikey == "o:jstenant" and ev.sdk_version == "1DS-Web-JS-4.4.4"
    assert (ev.app_id, ev.app_version, ev.os_name, ev.os_version) == ("webapp", "2.0", "Windows", "10")
    assert (ev.device_id, ev.user_id) == ("d:example", "u:example")
    assert ev.tenant_id == "00000000-0000-4000-8000-000000000001"
    assert ev.data["_collector"]["apikey"] == "jstenant-token"
    assert ev.data["_collector"]["client-version"] == "1DS-Web-JS-4.4.4"
    pii = {(p["path"], p["kind"]) for p in ev.pii}
    assert pii == {("data.UserEmail", "SmtpAddress"), ("data.Body", "CustomerContent"),
                   ("data.Nested.Upn", "Identity"), ("data.Emails[]", "SmtpAddress")}
    meta = ev.data["_meta"]
    assert meta["data.When"]["kind"] == "DateTime" and meta["data.Count"]["kind"] == "Int64"
    assert ev.data["ext"]["metadata"]["f"]["UserEmail"] == {"t": 289}  # the vendor's own hints are kept
    # The query string is its own event, after the body's.
    assert r.events[3].format == "query" and r.events[3].position == 3


def test_ndjson_params_in_query_with_gzip_beacon() -> None:
    url = ("https://browser.events.data.microsoft.com/OneCollector/1.0/?cors=true"
           "&content-type=application/x-json-stream&client-id=NO_AUTH&client-version=1DS-Web-JS-4.4.4"
           "&apikey=jstenant-token&upload-time=1764072000000&content-encoding=gzip&w=0")
    r = decode_request("POST", url, [("Content-Type", "text/plain;charset=UTF-8")], gzip.compress(ndjson(2)))
    assert r.format == "1ds-json" and r.error is None, (r.error, r.notes)
    assert [e.format for e in r.events] == ["1ds-json", "1ds-json", "query"]
    assert r.events[0].data["_collector"]["content-encoding"] == "gzip"
    assert r.events[0].sdk_version == "1DS-Web-JS-4.4.4"
    assert any("from the query string" in n for n in r.notes)
    assert r.body == ndjson(2)
    q = r.events[2].data["params"]
    assert q["apikey"] == "jstenant-token" and q["w"] == "0"


def test_a_stored_body_is_not_decompressed_again() -> None:
    """redecode and the deferred-analysis catch-up hand over bodies already decompressed, with the headers
    and query as sent: the content-encoding they name is evidence, not something to undo twice."""
    url = ("https://browser.events.data.microsoft.com/OneCollector/1.0/?cors=true"
           "&content-type=application/x-json-stream&content-encoding=gzip")
    live = decode_request("POST", url, [("Content-Encoding", "gzip")], gzip.compress(ndjson(2)))
    stored = decode_request("POST", url, [("Content-Encoding", "gzip")], live.body, content_decoded=True)
    assert stored.error is None and stored.body == live.body == ndjson(2)
    assert [e.data for e in stored.events] == [e.data for e in live.events]
    # a body that happens to start like gzip is taken as it is, not sniffed and inflated
    inner = gzip.compress(b"not telemetry")
    kept = decode_request("POST", "https://api.example.invalid/upload", [("Content-Type", "application/octet-stream")],
                          inner, content_decoded=True)
    assert kept.body == inner and not kept.notes


def test_ndjson_gzip_header_and_bad_line() -> None:
    body = ndjson(2) + b"\n{not json\n" + json.dumps(JS_EVENT).encode()
    r = decode_request("POST", "https://browser.events.data.microsoft.com/OneCollector/1.0/",
                       [("Content-Type", "application/x-json-stream"), ("Content-Encoding", "gzip")],
                       gzip.compress(body))
    assert len(r.events) == 3
    assert r.error and "not JSON" in r.error
    assert r.error_offset == len(ndjson(2)) + 1 + 1  # the bad line starts after "\n", error at column 1
    assert any("1 bad line" in n for n in r.notes)


def test_deeply_nested_json_line_rejected() -> None:
    deep = b'{"name":"x","data":' + b"[" * 200 + b"]" * 200 + b"}"
    r = decode_request("POST", "https://browser.events.data.microsoft.com/OneCollector/1.0/",
                       [("Content-Type", "application/x-json-stream")], deep + b"\n" + json.dumps(JS_EVENT).encode())
    assert len(r.events) == 1 and "nesting" in (r.error or "")


# --- hypothesis: CsProtocol round trip -------------------------------------------------------------------

_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_i64 = st.integers(-(2**63), 2**63 - 1)
_ticks = st.integers(1, 3_155_378_975_999_999_999)


@st.composite
def prop(draw):
    kind = draw(st.sampled_from(["Int64", "Int32", "Double", "String", "Bool", "DateTime", "Guid",
                                 "ArrayInt64", "ArrayString", "ArrayDouble", "ArrayGuid"]))
    pii = draw(st.lists(st.sampled_from(["SmtpAddress", "Identity", "Uri", "Fqdn"]), max_size=2))
    cc = draw(st.lists(st.just(1), max_size=1))
    if kind == "Int64":
        v = draw(_i64)
        exp: object = v
    elif kind == "Int32":
        v = exp = draw(st.integers(-(2**31), 2**31 - 1))
    elif kind == "Double":
        v = exp = draw(st.floats(allow_nan=False, allow_infinity=False))
    elif kind == "String":
        v = exp = draw(_texts)
    elif kind == "Bool":
        v = draw(st.booleans())
        exp = v
    elif kind == "DateTime":
        v = draw(_ticks)
        from teletap.decoders.model import iso_from_ticks
        exp = iso_from_ticks(v)
    elif kind == "Guid":
        v = exp = str(draw(st.uuids()))
    elif kind == "ArrayInt64":
        v = exp = draw(st.lists(_i64, max_size=4))
    elif kind == "ArrayString":
        v = exp = draw(st.lists(_texts, max_size=4))
    elif kind == "ArrayDouble":
        v = exp = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4))
    else:
        v = exp = [str(u) for u in draw(st.lists(st.uuids(), max_size=3))]
    return Prop(kind, v, pii=pii, cc=cc), exp


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_texts, time=_ticks, ikey=_texts,
    ext=st.dictionaries(st.sampled_from(["app", "os", "device", "user", "loc", "net", "cloud"]),
                        st.just(None), max_size=4),
    props=st.dictionaries(_texts, prop(), max_size=6),
    version=st.sampled_from([1, 2]), n=st.integers(1, 3),
)
def test_cs_round_trip(name, time, ikey, ext, props, version, n) -> None:
    ext_values = {e: {f: f"{e}-{f}" for f, (_i, t) in EXT_FIELDS[e].items() if t == STRING} for e in ext}
    rec = record(name=name, time=time, ikey=ikey, ext=ext_values, data={k: p for k, (p, _) in props.items()})
    body = encode(rec, version=version) * n
    headers = [*BOND_HEADERS, ("Content-Encoding", "deflate")] if n > 1 else BOND_HEADERS
    r = decode_request("POST", URL, headers, raw_deflate(body) if n > 1 else body)
    assert r.error is None, r.error
    assert len([e for e in r.events if e.format == "1ds-bond"]) == n
    d = r.events[0].data
    assert d["name"] == name and d.get("iKey") == ikey
    for e, vals in ext_values.items():
        assert d["ext"][e] == vals
    for k, (p, exp) in props.items():
        assert d["data"][k] == exp, (k, p.kind)
        kinds = {x["kind"] for x in r.events[0].pii if x["path"] == f"data.{k}"}
        assert set(p.pii) <= kinds
        assert ("CustomerContent" in kinds) == bool(p.cc)
    json.dumps(d)


def test_base64_bytes_convention_for_unknown_blobs() -> None:
    from tests.bond_encoder import LIST, UINT8, L
    rec = record(extra=[F(99, LIST, L(UINT8, [1, 2, 3]))])
    d = decode_request("POST", URL, BOND_HEADERS, encode(rec)).events[0].data
    assert d["_unknown"] == [{"id": 99, "type": "list", "value": {"$bytes_b64": base64.b64encode(b"\1\2\3").decode()}}]


def test_property_memo_hits_and_misses() -> None:
    # Same keys across records, some values equal and some not: the per-batch property memo must
    # return the right value for each record, and never share mutable lists between events.
    recs = [encode(record(name=f"R{i}", data={"same": Prop("String", "constant"),
                                              "count": Prop("Int64", i * 1000),
                                              "arr": Prop("ArrayInt64", [1, 2, 3]),
                                              "who": Prop("String", f"u{i % 2}@example.invalid", pii=["SmtpAddress"])}))
            for i in range(6)]
    evs = decode_request("POST", URL, BOND_HEADERS, b"".join(recs)).events
    assert [e.data["data"]["count"] for e in evs] == [i * 1000 for i in range(6)]
    assert [e.data["data"]["who"] for e in evs] == [f"u{i % 2}@example.invalid" for i in range(6)]
    assert all(e.data["data"]["same"] == "constant" for e in evs)
    assert all({"path": "data.who", "kind": "SmtpAddress", "source": "1ds-pii-kind"} in e.pii for e in evs)
    evs[0].data["data"]["arr"].append(4)
    assert evs[1].data["data"]["arr"] == [1, 2, 3]


def test_value_fields_the_kind_does_not_use_are_kept() -> None:
    from tests.bond_encoder import INT32, LIST, MAP, STRUCT, L, M, S
    stray = S([F(1, INT32, 0), F(3, STRING, "stray"), F(4, INT64, 5)])
    unknown_kind = S([F(1, INT32, 99), F(3, STRING, "x")])
    props = M(STRING, STRUCT, [("k", stray), ("u", unknown_kind)])
    rec = record(extra=[F(70, LIST, L(STRUCT, [S([F(1, MAP, props)])]))])
    d = decode_request("POST", URL, BOND_HEADERS, encode(rec)).events[0].data
    assert d["data"]["k"] == 5 and d["_meta"]["data.k"] == {"kind": "Int64", "other": {"stringValue": "stray"}}
    assert d["data"]["u"] == {"stringValue": "x"} and d["_meta"]["data.u"]["kind"] == "Unknown(99)"


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(
    st.text(alphabet="abcdefghij.", min_size=1, max_size=8).filter(lambda k: "." not in (k[0], k[-1])),
    st.tuples(st.integers(0, 9), st.integers(0, 13), st.booleans()), min_size=1, max_size=6))
def test_json_metadata_hint_round_trip(hints: dict) -> None:
    # Encode hints as the JS SDK does (kind << 5 | type, 1 << 13 for customer content) and read them back.
    f = {}
    for prop, (ptype, pii, cc) in hints.items():
        f[prop] = {"t": (pii << 5) | (1 << 13 if cc else 0) | ptype}
    ev = {"name": "E", "iKey": "o:t", "ext": {"metadata": {"f": f}}, "data": dict.fromkeys(hints, "v")}
    r = decode_request("POST", "https://browser.events.data.microsoft.com/OneCollector/1.0/",
                       [("Content-Type", "application/x-json-stream")], json.dumps(ev).encode())
    e = r.events[0]
    from teletap.decoders.onecollector import JSON_TYPES, PII_KINDS
    for prop, (ptype, pii, cc) in hints.items():
        m = e.data["_meta"][f"data.{prop}"]
        assert m["kind"] == JSON_TYPES[ptype]
        assert m.get("pii", [None])[0] == (PII_KINDS[pii] if pii else None)
        assert ("customerContent" in m) == cc
        kinds = {p["kind"] for p in e.pii if p["path"] == f"data.{prop}"}
        assert kinds == ({PII_KINDS[pii]} if pii else set()) | ({"CustomerContent"} if cc else set())
