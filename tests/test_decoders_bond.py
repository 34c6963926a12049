"""Bond Compact Binary reader: byte-level vectors and hypothesis round trips against tests/bond_encoder.py."""

from __future__ import annotations

import base64
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teletap.decoders.bond import BondError, Reader, read_struct
from tests.bond_encoder import (
    BOOL,
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT32,
    INT64,
    LIST,
    MAP,
    SET,
    STRING,
    STRUCT,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    WSTRING,
    F,
    L,
    M,
    S,
    encode,
    field_header,
    varint,
)

TYPE_NAMES = {BOOL: "bool", UINT8: "uint8", UINT16: "uint16", UINT32: "uint32", UINT64: "uint64",
              FLOAT: "float", DOUBLE: "double", STRING: "string", STRUCT: "struct", LIST: "list", SET: "set",
              MAP: "map", INT8: "int8", INT16: "int16", INT32: "int32", INT64: "int64", WSTRING: "wstring"}


def one_field(header: bytes, payload: bytes) -> bytes:
    return header + payload + b"\x00"


def unknown(result: dict) -> list[dict]:
    return result["_unknown"]


# --- varints ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ftype", "payload", "expected"), [
    (UINT64, b"\x7f", 127),
    (UINT64, b"\x80\x01", 128),
    (UINT64, b"\xff" * 9 + b"\x01", 2**64 - 1),
    (UINT32, b"\xff\xff\xff\xff\x0f", 2**32 - 1),
    (UINT16, b"\xff\xff\x03", 2**16 - 1),
    (INT64, b"\xff" * 9 + b"\x01", -(2**63)),      # zigzag(-2^63) = 2^64 - 1
    (INT64, b"\xfe" + b"\xff" * 8 + b"\x01", 2**63 - 1),
    (INT32, b"\xff\xff\xff\xff\x0f", -(2**31)),
    (INT32, b"\xfe\xff\xff\xff\x0f", 2**31 - 1),
    (INT16, b"\xff\xff\x03", -(2**15)),
    (INT16, b"\x01", -1),
    (INT16, b"\x02", 1),
])
def test_varint_and_zigzag_limits(ftype: int, payload: bytes, expected: int) -> None:
    out, end = read_struct(one_field(field_header(ftype, 1), payload))
    assert unknown(out) == [{"id": 1, "type": TYPE_NAMES[ftype], "value": expected}]
    assert end == 1 + len(payload) + 1


@pytest.mark.parametrize(("ftype", "payload", "message"), [
    (UINT64, b"\xff" * 9 + b"\x02", "out of range"),      # 2^64: one bit too many
    (UINT64, b"\xff" * 10 + b"\x01", "longer than 10"),
    (UINT32, b"\xff\xff\xff\xff\x1f", "out of range"),
    (UINT32, b"\x80\x80\x80\x80\x80\x01", "longer than 5"),
    (UINT16, b"\xff\xff\x07", "out of range"),
    (UINT16, b"\x80\x80\x80\x01", "longer than 3"),
    (INT32, b"\xff\xff\xff\xff\x1f", "out of range"),
    (INT64, b"\x80", "truncated"),
])
def test_varint_limits_rejected_with_offset(ftype: int, payload: bytes, message: str) -> None:
    body = one_field(field_header(ftype, 1), payload)
    if message == "truncated":
        body = body[:-1]
    with pytest.raises(BondError) as ei:
        read_struct(body)
    assert message in ei.value.message
    # Bad values are reported where the varint starts (after the one-byte field header); truncation
    # where the data ended.
    assert ei.value.offset == (len(body) if message == "truncated" else 1)


# --- field ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fid", "header"), [
    (0, b"\x09"), (5, b"\xa9"), (6, b"\xc9\x06"), (100, b"\xc9\x64"), (255, b"\xc9\xff"),
    (256, b"\xe9\x00\x01"), (1000, b"\xe9\xe8\x03"), (65535, b"\xe9\xff\xff"),
])
def test_field_id_escapes(fid: int, header: bytes) -> None:
    assert field_header(STRING, fid) == header  # the encoder agrees with the format description
    out, _ = read_struct(header + b"\x02hi\x00")
    assert unknown(out) == [{"id": fid, "type": "string", "value": "hi"}]


def test_escaped_ids_map_to_schema_names() -> None:
    schema = {6: ("six", None), 255: ("max8", None), 256: ("first16", None), 999: ("dnt", None)}
    body = b"".join(field_header(STRING, i) + b"\x01x" for i in (6, 255, 256, 999)) + b"\x00"
    out, _ = read_struct(body, schema=schema)
    assert out == {"six": "x", "max8": "x", "first16": "x", "dnt": "x"}


@pytest.mark.parametrize("body", [b"\xc9", b"\xe9\x01", b"\xe9"])
def test_truncated_field_id(body: bytes) -> None:
    with pytest.raises(BondError):
        read_struct(body)


# --- strings --------------------------------------------------------------------------------------------


def test_wstring_utf16_with_surrogate_pair() -> None:
    text = "héllo \U0001f600"
    raw = text.encode("utf-16-le")
    out, _ = read_struct(one_field(field_header(WSTRING, 2), varint(len(raw) // 2) + raw))
    assert unknown(out) == [{"id": 2, "type": "wstring", "value": text}]


def test_wstring_count_is_code_units_not_bytes() -> None:
    # Count 3 but only 4 bytes: needs 6.
    with pytest.raises(BondError, match="wstring of 3"):
        read_struct(field_header(WSTRING, 1) + b"\x03" + b"a\x00b\x00" + b"\x00")


def test_invalid_utf8_kept_as_bytes() -> None:
    out, _ = read_struct(one_field(field_header(STRING, 1), b"\x02\xff\xfe"))
    assert unknown(out)[0]["value"] == {"$bytes_b64": base64.b64encode(b"\xff\xfe").decode()}


def test_string_longer_than_data() -> None:
    with pytest.raises(BondError, match="exceeds") as ei:
        read_struct(field_header(STRING, 1) + b"\x05ab")
    assert ei.value.offset == 1


def test_long_string_multibyte_length() -> None:
    text = "x" * 300
    out, _ = read_struct(one_field(field_header(STRING, 1), varint(300) + text.encode()))
    assert unknown(out)[0]["value"] == text


# --- containers ---------------------------------------------------------------------------------------


def test_empty_containers() -> None:
    body = (field_header(LIST, 1) + bytes([STRING]) + b"\x00"
            + field_header(SET, 2) + bytes([INT32]) + b"\x00"
            + field_header(MAP, 3) + bytes([STRING, STRING]) + b"\x00"
            + field_header(LIST, 4) + bytes([UINT8]) + b"\x00" + b"\x00")
    out, _ = read_struct(body)
    assert [f["value"] for f in unknown(out)] == [[], [], {}, {"$bytes_b64": ""}]


@pytest.mark.parametrize(("etype", "size"), [(UINT8, 1), (BOOL, 1), (DOUBLE, 8), (FLOAT, 4), (INT64, 1)])
def test_max_size_container_fits_exactly_and_one_more_fails(etype: int, size: int) -> None:
    # The count is checked against the bytes left before anything is read: the largest list that the
    # remaining bytes can hold is accepted, one element more is rejected at the count.
    n = 40
    items = b"\x00" * (n * size)
    ok = field_header(LIST, 1) + bytes([etype]) + varint(n) + items + b"\x00"
    out, end = read_struct(ok)
    assert end == len(ok)
    v = unknown(out)[0]["value"]
    assert (len(base64.b64decode(v["$bytes_b64"])) if isinstance(v, dict) else len(v)) == n
    # n + 2 elements (the trailing BT_STOP byte would otherwise count as one byte-sized element).
    too_many = field_header(LIST, 1) + bytes([etype]) + varint(n + 2) + items + b"\x00"
    with pytest.raises(BondError, match="exceeds") as ei:
        read_struct(too_many)
    assert ei.value.offset == 3


def test_huge_count_rejected_without_allocating() -> None:
    body = field_header(LIST, 1) + bytes([STRING]) + varint(2**32 - 1) + b"\x00"
    with pytest.raises(BondError, match="exceeds"):
        read_struct(body)
    body = field_header(MAP, 1) + bytes([STRING, STRING]) + varint(2**31) + b"\x00"
    with pytest.raises(BondError, match="exceeds"):
        read_struct(body)


def test_map_key_types_become_strings() -> None:
    body = encode([F(1, MAP, M(INT32, STRING, [(-5, "a"), (7, "b")])),
                   F(2, MAP, M(BOOL, DOUBLE, [(True, 1.5)]))])
    out, _ = read_struct(body)
    assert [f["value"] for f in unknown(out)] == [{"-5": "a", "7": "b"}, {"True": 1.5}]


def test_non_finite_floats_are_strings() -> None:
    body = encode([F(1, DOUBLE, math.nan), F(2, DOUBLE, math.inf), F(3, FLOAT, -math.inf)])
    out, _ = read_struct(body)
    assert [f["value"] for f in unknown(out)] == ["NaN", "Infinity", "-Infinity"]


def test_bool_int8_uint8() -> None:
    out, _ = read_struct(encode([F(1, BOOL, True), F(2, BOOL, False), F(3, INT8, -128), F(4, UINT8, 255)]))
    assert [f["value"] for f in unknown(out)] == [True, False, -128, 255]


def test_invalid_type_id() -> None:
    with pytest.raises(BondError, match="invalid Bond type id 19"):
        read_struct(bytes([19 | (1 << 5)]) + b"\x00\x00")


# --- versions, inheritance, nesting ---------------------------------------------------------------------


def test_v2_struct_length_and_packed_counts() -> None:
    s = S([F(1, STRING, "a"), F(2, LIST, L(INT32, [1, -1, 2])), F(3, STRUCT, S([F(1, BOOL, True)])),
           F(4, LIST, L(STRING, ["x"] * 9))])
    v2 = encode(s, version=2)
    assert v2[0] == len(v2) - 1  # leading length of the fields up to and including BT_STOP
    # Packed count: element type INT32 (16) with count+1 = 4 in the upper bits.
    assert bytes([16 | (4 << 5)]) in v2
    out2, end = Reader(v2, version=2).read(0, None)
    out1, _ = read_struct(encode(s, version=1))
    assert out1 == out2 and end == len(v2)


def test_v1_reader_rejects_packed_count() -> None:
    body = field_header(LIST, 1) + bytes([STRING | (2 << 5)]) + b"\x01a\x00"
    with pytest.raises(BondError, match="packed container count"):
        read_struct(body)


def test_v2_length_mismatch_detected() -> None:
    good = encode(S([F(1, STRING, "abc")]), version=2)
    bad = bytes([good[0] - 1]) + good[1:]
    with pytest.raises(BondError, match="length"):
        Reader(bad, version=2).read(0, None)


def test_inheritance_base_fields_then_derived() -> None:
    s = S([F(1, STRING, "derived")], base=S([F(1, STRING, "base"), F(2, INT32, 3)]))
    body = encode(s)
    assert b"\x01" in body  # BT_STOP_BASE between base and derived sections
    out, end = read_struct(body)
    assert [(f["id"], f["value"]) for f in unknown(out)] == [(1, "base"), (2, 3), (1, "derived")]
    assert end == len(body)
    out2, _ = Reader(encode(s, version=2), version=2).read(0, None)
    assert out2 == out


def nested_structs(depth: int) -> bytes:
    # Written by hand: the recursive encoder would itself hit the interpreter's recursion limit.
    return field_header(STRUCT, 1) * depth + field_header(INT32, 1) + b"\x02" + b"\x00" * (depth + 1)


def test_depth_limit() -> None:
    out, _ = read_struct(nested_structs(30), max_depth=64)
    assert out["_unknown"][0]["type"] == "struct"
    with pytest.raises(BondError, match="nesting deeper than 64"):
        read_struct(nested_structs(200), max_depth=64)
    with pytest.raises(BondError, match="nesting deeper than 64"):
        read_struct(nested_structs(5000), max_depth=64)
    # Lists of lists count too.
    deep_list = field_header(LIST, 1) + (bytes([LIST]) + b"\x01") * 100 + bytes([INT32]) + b"\x01\x02\x00"
    with pytest.raises(BondError, match="nesting"):
        read_struct(deep_list, max_depth=64)


def test_every_truncation_raises_bond_error_only() -> None:
    body = encode(S([F(1, STRING, "abc"), F(300, INT64, -5), F(2, LIST, L(DOUBLE, [1.0, 2.0])),
                     F(3, MAP, M(STRING, STRUCT, [("k", S([F(1, WSTRING, "w")]))])), F(4, FLOAT, 1.5)]))
    for cut in range(len(body)):
        with pytest.raises(BondError) as ei:
            read_struct(body[:cut])
        assert ei.value.offset is not None and 0 <= ei.value.offset <= cut


# --- hypothesis: generic round trip -----------------------------------------------------------------


def _b64(b: bytes) -> dict:
    return {"$bytes_b64": base64.b64encode(b).decode()}


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
SCALARS = {
    BOOL: st.booleans(), UINT8: st.integers(0, 255), UINT16: st.integers(0, 2**16 - 1),
    UINT32: st.integers(0, 2**32 - 1), UINT64: st.integers(0, 2**64 - 1), INT8: st.integers(-128, 127),
    INT16: st.integers(-(2**15), 2**15 - 1), INT32: st.integers(-(2**31), 2**31 - 1),
    INT64: st.integers(-(2**63), 2**63 - 1),
    FLOAT: st.floats(width=32, allow_nan=False, allow_infinity=False),
    DOUBLE: st.floats(allow_nan=False, allow_infinity=False), STRING: texts, WSTRING: texts,
}


def expected_scalar(t: int, v: object) -> object:
    if t == FLOAT:
        return struct.unpack("<f", struct.pack("<f", v))[0]
    return v


@st.composite
def typed_value(draw, depth: int = 0):
    """(bond type, encoder value, expected reader output)."""
    kinds = ["scalar"] * 4 + (["list", "map", "struct"] if depth < 3 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "scalar":
        t = draw(st.sampled_from(sorted(SCALARS)))
        v = draw(SCALARS[t])
        return t, v, expected_scalar(t, v)
    if kind == "list":
        ct = draw(st.sampled_from([LIST, SET]))
        et = draw(st.sampled_from(sorted(SCALARS)))
        items = draw(st.lists(SCALARS[et], max_size=10))
        if et in (UINT8, INT8):
            exp: object = _b64(bytes(x & 0xFF for x in items))
        else:
            exp = [expected_scalar(et, x) for x in items]
        return ct, L(et, items), exp
    if kind == "map":
        vt = draw(st.sampled_from([STRING, INT64, DOUBLE, BOOL]))
        d = draw(st.dictionaries(texts, SCALARS[vt], max_size=6))
        return MAP, M(STRING, vt, list(d.items())), {k: expected_scalar(vt, x) for k, x in d.items()}
    fields, exp_s = draw(typed_struct(depth + 1))
    return STRUCT, S(fields), exp_s


@st.composite
def typed_struct(draw, depth: int = 0):
    ids = draw(st.lists(st.sampled_from([0, 1, 5, 6, 7, 31, 200, 255, 256, 4000, 65535]), max_size=6))
    fields = []
    unknown_list = []
    for fid in ids:
        t, v, exp = draw(typed_value(depth))
        fields.append(F(fid, t, v))
        unknown_list.append({"id": fid, "type": TYPE_NAMES[t], "value": exp})
    return fields, ({"_unknown": unknown_list} if unknown_list else {})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_struct(), st.sampled_from([1, 2]))
def test_generic_round_trip(spec, version: int) -> None:
    fields, expected = spec
    body = encode(fields, version=version)
    out, end = Reader(body, version=version).read(0, None)
    assert out == expected
    assert end == len(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([1, 2]))
def test_fuzz_reader_only_raises_bond_error(data: bytes, version: int) -> None:
    try:
        Reader(data, version=version, max_depth=16).read(0, None)
    except BondError as e:
        assert e.offset is None or 0 <= e.offset <= len(data)
