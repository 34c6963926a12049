"""1DS OneCollector: CsProtocol Records in Bond Compact Binary, and Common Schema JSON (NDJSON).

Both forms become the same ``Event.data`` shape, close to Common Schema JSON: ``ver``, ``name``, ``time``
(ISO-8601 UTC), ``iKey``, ``ext.<name>``, ``tags``, ``data`` (Part C properties flattened, Part B under
``data.baseData``). ``_meta`` maps a property path to its value kind and vendor annotations; ``_collector``
holds the collector parameters the request carried (headers or query).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

from .bond import BT_DOUBLE, BT_INT32, BT_INT64, BT_LIST, BT_STRING, BT_STRUCT, BondError, Reader, Schema
from .model import (
    DecodeError,
    Event,
    Limits,
    TooManyEvents,
    bytes_json,
    float_json,
    iso_from_ticks,
    iso_from_unix_ms,
    normalise_iso,
    str_or_none,
)

# --- CsProtocol (lib/bond/CsProtocol.bond), names only: types come from the wire ---------------------


def _s(*names: str | tuple[int, str, Schema | None]) -> Schema:
    """Schema from names in id order starting at 1; explicit (id, name, sub) tuples break the sequence."""
    out: Schema = {}
    i = 0
    for n in names:
        if isinstance(n, tuple):
            i, name, sub = n
            out[i] = (name, sub)
        else:
            i += 1
            out[i] = (n, None)
    return out


PII_SCHEMA = _s("Kind")
CC_SCHEMA = _s("Kind")
ATTRIBUTES_SCHEMA = _s((1, "pii", PII_SCHEMA), (2, "customerContent", CC_SCHEMA))
VALUE_SCHEMA = _s(
    "type", (2, "attributes", ATTRIBUTES_SCHEMA), "stringValue", "longValue", "doubleValue", "guidValue",
    (10, "stringArray", None), "longArray", "doubleArray", "guidArray",
)
DATA_SCHEMA = _s((1, "properties", VALUE_SCHEMA))

EXT_SCHEMAS: dict[str, Schema] = {
    "ingest": _s("time", "clientIp", "auth", "quality", "uploadTime", "userAgent", "client"),
    "protocol": _s("metadataCrc", "ticketKeys", "devMake", "devModel", "msp"),
    "user": _s("id", "localId", "authId", "locale"),
    "device": _s("id", "localId", "authId", "authSecId", "deviceClass", "orgId", "orgAuthId", "make", "model",
                 "authIdEnt"),
    "os": _s("locale", "expId", "bootId", "name", "ver"),
    "app": _s("expId", "userId", "env", "asId", "id", "ver", "locale", "name", "sesId"),
    "utc": _s("stId", "aId", "raId", "op", "cat", "flags", "sqmId", (9, "mon", None), "cpId", "bSeq", "epoch",
              "seq", "popSample", "eventFlags", "wsId", "wcmp", "wPId"),
    "xbl": {5: ("claims", None), 10: ("nbf", None), 20: ("exp", None), 30: ("sbx", None), 40: ("dty", None),
            50: ("did", None), 60: ("xid", None), 70: ("uts", None), 80: ("pid", None), 90: ("dvr", None),
            100: ("tid", None), 110: ("tvr", None), 120: ("sty", None), 130: ("sid", None), 140: ("eid", None),
            150: ("ip", None)},
    "javascript": {i: (n, None) for i, n in (
        (10, "libVer"), (15, "osName"), (20, "browser"), (21, "browserVersion"), (25, "platform"), (30, "make"),
        (35, "model"), (40, "screenSize"), (45, "msfpc"), (50, "mc1Id"), (60, "mc1Lu"), (70, "isMc1New"),
        (80, "ms0"), (90, "anid"), (100, "a"), (110, "msResearch"), (120, "csrvc"), (130, "rtCell"),
        (140, "rtEndAction"), (150, "rtPermId"), (160, "r"), (170, "wtFpc"), (180, "omniId"),
        (190, "gsfxSession"), (200, "domain"), (210, "userConsent"), (220, "browserLang"),
        (230, "serviceName"), (999, "dnt"))},
    "receipts": _s("originalTime", "uploadTime", "originalName", "flags"),
    "net": _s("provider", "cost", "type"),
    # Field 1 was libVer before CS 4.0 renamed it ver (docs/CsProtocol-upgrade.md); 5 is the deprecated libVer.
    "sdk": _s("ver", "epoch", "seq", "installId", "libVer"),
    "loc": _s("id", "country", "timezone"),
    "cloud": _s("fullEnvName", "location", "environment", "deploymentUnit", "name", "roleInstance", "role"),
    "service": _s("name", "role", "roleVersion"),
    "cs": _s("sig"),
    "m365": _s("enrolledTenantId", "msp"),
    "mscv": _s("cV"),
    "intweb": _s("mc1Id", "msfpc", "anid", "serviceName", "mscom"),
    "intservice": _s("fullEnvName", "location", "environment", "deploymentUnit", "name"),
    "web": {10: ("browser", None), 20: ("browserVer", None), 30: ("screenRes", None), 40: ("domain", None),
            50: ("userConsent", None), 60: ("browserLang", None), 70: ("isManual", None)},
}
_EXT_IDS = {20: "ingest", 21: "protocol", 22: "user", 23: "device", 24: "os", 25: "app", 26: "utc", 27: "xbl",
            28: "javascript", 29: "receipts", 31: "net", 32: "sdk", 33: "loc", 34: "cloud", 35: "service",
            36: "cs", 37: "m365", 42: "mscv", 43: "intweb", 44: "intservice", 45: "web"}
EXT_PREFIX = "ext:"  # Record schema names for ext structs, mapped to ``ext.<name>`` afterwards
RECORD_SCHEMA: Schema = {
    1: ("ver", None), 2: ("name", None), 3: ("time", None), 4: ("popSample", None), 5: ("iKey", None),
    6: ("flags", None), 7: ("cV", None),
    **{i: (EXT_PREFIX + n, EXT_SCHEMAS[n]) for i, n in _EXT_IDS.items()},
    41: ("extData", DATA_SCHEMA), 51: ("tags", None), 60: ("baseType", None), 61: ("baseData", DATA_SCHEMA),
    70: ("data", DATA_SCHEMA),
}

_EXT_KEYS = {EXT_PREFIX + n: n for n in _EXT_IDS.values()}

VALUE_KINDS = ("Int64", "UInt64", "Int32", "UInt32", "Double", "String", "Bool", "DateTime", "Guid",
               "ArrayInt64", "ArrayUInt64", "ArrayInt32", "ArrayUInt32", "ArrayDouble", "ArrayString",
               "ArrayBool", "ArrayDateTime", "ArrayGuid")
PII_KINDS = ("NotSet", "DistinguishedName", "GenericData", "IPV4Address", "IPv6Address", "MailSubject",
             "PhoneNumber", "QueryString", "SipAddress", "SmtpAddress", "Identity", "Uri", "Fqdn",
             "IPV4AddressLegacy")
CC_KINDS = ("NotSet", "GenericContent")
RECORD_FLAGS = ((0x00080000, "MARK_PII"), (0x00100000, "HASH_PII"), (0x00200000, "DROP_PII"),
                (0x00400000, "SCRUB_IP"))

# Record magic: field 1 (`ver`, string) of length 3, "3.0" or "4.0".
BOND_MAGICS = (b"\x29\x033.0", b"\x29\x034.0")


def _kind_name(table: tuple[str, ...], k: Any) -> str:
    return table[k] if isinstance(k, int) and 0 <= k < len(table) else f"Unknown({k})"


def _guid(b: Any) -> Any:
    # 1DS writes GUIDs as 16 bytes in the Windows GUID layout (first three groups little-endian).
    if isinstance(b, dict) and "$bytes_b64" in b:
        raw = base64.b64decode(b["$bytes_b64"])
        return _guid_str(raw)
    return b


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, list) and v else None


_LONG_KINDS = (0, 1, 2, 3, 6, 7)
_KIND_FIELDS: dict[Any, tuple[str, ...]] = {
    **dict.fromkeys(_LONG_KINDS, ("longValue",)), 4: ("doubleValue",), 5: ("stringValue",), 8: ("guidValue",),
    **dict.fromkeys((9, 10, 11, 12, 15, 16), ("longArray",)), 13: ("doubleArray",), 14: ("stringArray",),
    17: ("guidArray",),
}
_ALWAYS = ("type", "attributes", "_unknown")


def _list(x: Any) -> list:
    return x if type(x) is list else []


def _arr(v: dict, key: str) -> list:
    """The one array of a vector<vector<T>> Value field; [] when absent or of an unexpected wire type."""
    return _list(_first(v.get(key)))


def convert_value(v: dict) -> tuple[Any, dict | None]:
    """A CsProtocol Value → (plain value, meta {kind, pii?, customerContent?}); meta None for a plain String."""
    kind = v.get("type", 5)
    kname = _kind_name(VALUE_KINDS, kind)
    meta: dict[str, Any] = {"kind": kname}
    # Defaults are omitted on the wire: no longValue means 0, no stringValue means "".
    if kind == 5:
        out: Any = v.get("stringValue", "")
    elif kind in (0, 2, 3):
        out = v.get("longValue", 0)
    elif kind == 1:
        out = v.get("longValue", 0)
        if isinstance(out, int) and out < 0:
            out &= (1 << 64) - 1  # uint64 travels as int64 bits
    elif kind == 4:
        out = v.get("doubleValue", 0.0)
    elif kind == 6:
        out = bool(v.get("longValue", 0))
    elif kind == 7:
        ticks = v.get("longValue", 0)
        out = iso_from_ticks(ticks) or ticks
        meta["ticks"] = ticks
    elif kind == 8:
        out = _guid(_first(v.get("guidValue")))
    elif kind in (9, 10, 11, 12):
        out = _arr(v, "longArray")
        if kind == 10:
            out = [x & ((1 << 64) - 1) if isinstance(x, int) and x < 0 else x for x in out]
    elif kind == 13:
        out = _arr(v, "doubleArray")
    elif kind == 14:
        out = _arr(v, "stringArray")
    elif kind == 15:
        out = [bool(x) for x in (_arr(v, "longArray"))]
    elif kind == 16:
        out = [iso_from_ticks(x) or x for x in (_arr(v, "longArray"))]
    elif kind == 17:
        out = [_guid(x) for x in _arr(v, "guidArray")]
    else:
        # Unknown kind: keep every field that was sent.
        out = {k: x for k, x in v.items() if k not in ("type", "attributes")}
    # Anything the kind does not use (never written by the SDKs) is kept rather than dropped.
    used = _KIND_FIELDS.get(kind) if type(kind) is int else None
    if used is not None:  # (an unknown kind already keeps every field as its value)
        other = {k: x for k, x in v.items() if k not in used and k not in _ALWAYS}
        if other:
            meta["other"] = other
    attrs = v.get("attributes")
    if attrs:
        pii: list[str] = []
        cc: list[str] = []
        for a in attrs if isinstance(attrs, list) else ():
            if not isinstance(a, dict):
                continue
            for p in _list(a.get("pii")):
                if isinstance(p, dict):
                    pii.append(_kind_name(PII_KINDS, p.get("Kind", 0)))
            for c in _list(a.get("customerContent")):
                if isinstance(c, dict):
                    cc.append(_kind_name(CC_KINDS, c.get("Kind", 0)))
        if pii:
            meta["pii"] = pii
        if cc:
            meta["customerContent"] = cc
    if "_unknown" in v:
        meta["_unknown"] = v["_unknown"]
    return out, (None if meta == {"kind": "String"} else meta)


class _Slow(Exception):
    """The fast Value path met something it does not handle; the generic reader takes over."""


_unpack_d = struct.Struct("<d").unpack_from


def _plain_value(kind: int, sval: str, lval: int, dval: float) -> tuple[Any, dict | None]:
    if kind == 5:
        return sval, None
    if kind in (0, 2, 3):
        return lval, _KIND_META[kind]
    if kind == 4:
        return dval, _KIND_META[4]
    if kind == 6:
        return lval != 0, _KIND_META[6]
    if kind == 1:
        return (lval & ((1 << 64) - 1)) if lval < 0 else lval, _KIND_META[1]
    if kind == 7:
        return iso_from_ticks(lval) or lval, {"kind": "DateTime", "ticks": lval}
    raise _Slow


# Shared, never mutated: one meta dict per kind instead of one per property.
_KIND_META = {i: {"kind": VALUE_KINDS[i]} for i in range(len(VALUE_KINDS))}


class CsReader(Reader):
    """Reader with a fast path for ``map<string, Value>``, where most of a record's bytes are.

    Each property becomes ``(plain value, meta or None)``; meta is None for a plain String. Values with
    attributes, arrays, GUIDs or anything unexpected go through the generic reader and convert_value.
    """

    __slots__ = ()

    def map(self, pos: int, schema: Schema | None, depth: int) -> tuple[dict, int]:
        buf = self.buf
        end = self.end
        if (schema is not VALUE_SCHEMA or self.v2 or pos + 3 > end or buf[pos] != BT_STRING
                or buf[pos + 1] != BT_STRUCT or depth + 2 > self.max_depth):
            out, pos = Reader.map(self, pos, schema, depth)
            if schema is VALUE_SCHEMA:
                out = {k: convert_value(v) if isinstance(v, dict) else (v, None) for k, v in out.items()}
            return out, pos
        count, pos = self.varint(pos + 2, 5, 0xFFFFFFFF)
        if count * 2 > end - pos:
            raise BondError(f"map of {count} entries exceeds the bytes left", pos)
        props: dict[str, Any] = {}
        pmemo = self.memo.setdefault("props", {}) if self.memo is not None else None
        for _ in range(count):
            n = buf[pos]
            if n < 0x80 and pos + 1 + n <= end:
                try:
                    key = buf[pos + 1 : pos + 1 + n].decode("utf-8")
                    pos += 1 + n
                except UnicodeDecodeError:
                    key, pos = self.string(pos)
            else:
                key, pos = self.string(pos)
            if not isinstance(key, str):
                key = json.dumps(key)
            start = pos
            if pmemo is not None:
                # The same property with the same value recurs across the records of a batch (app build,
                # session, activity name): a Value encoding is prefix-free, so equal bytes, equal value.
                hit = pmemo.get(key)
                if hit is not None and buf.startswith(hit[0], pos):
                    v = hit[1]
                    props[key] = (list(v[0]), v[1]) if type(v[0]) is list else v
                    pos += len(hit[0])
                    continue
            kind = 5
            sval = ""
            lval = 0
            dval = 0.0
            attrs = guid = larr = None
            try:
                while True:
                    b = buf[pos]
                    pos += 1
                    if b == 0:
                        break
                    t = b & 0x1F
                    fid = b >> 5
                    if fid == 3 and t == BT_STRING:
                        n = buf[pos]
                        if n >= 0x80:
                            raise _Slow
                        stop = pos + 1 + n
                        if stop > end:
                            raise _Slow
                        sval = buf[pos + 1 : stop].decode("utf-8")
                        pos = stop
                    elif fid == 1 and t == BT_INT32:
                        n = buf[pos]
                        if n >= 0x80:
                            raise _Slow
                        kind = (n >> 1) ^ -(n & 1)
                        pos += 1
                    elif fid == 4 and t == BT_INT64:
                        # Inline varint (tick counts are 8-9 bytes): the call would cost more than the loop.
                        n = 0
                        shift = 0
                        while True:
                            c = buf[pos]
                            pos += 1
                            n |= (c & 0x7F) << shift
                            if c < 0x80:
                                break
                            shift += 7
                            if shift > 63:
                                raise _Slow
                        if n >> 64:
                            raise _Slow
                        lval = (n >> 1) ^ -(n & 1)
                    elif fid == 5 and t == BT_DOUBLE:
                        if pos + 8 > end:
                            raise _Slow
                        dval = float_json(_unpack_d(buf, pos)[0])
                        pos += 8
                    elif fid == 2 and t == BT_LIST:
                        attrs, pos = self._attributes(pos)
                    elif b == 0xCB and buf[pos] == 6:  # list field, escaped id 6: guidValue
                        guid, pos = self._guid_value(pos + 1)
                    elif b == 0xCB and buf[pos] == 11:  # list field, escaped id 11: longArray
                        larr, pos = self._long_array(pos + 1)
                    else:
                        raise _Slow
                if (sval and kind != 5) or (lval and kind not in _LONG_KINDS) or (dval and kind != 4):
                    raise _Slow  # fields the kind does not use: convert_value keeps them
                if guid is not None or larr is not None:
                    v = _array_value(kind, guid, larr)
                elif kind == 5:
                    v = (sval, None)
                else:
                    v = _plain_value(kind, sval, lval, dval)
                if attrs is not None:
                    m = dict(v[1] or _KIND_META[5])
                    if attrs[0]:
                        m["pii"] = attrs[0]
                    if attrs[1]:
                        m["customerContent"] = attrs[1]
                    v = (v[0], m)
                props[key] = v
            except (_Slow, IndexError, UnicodeDecodeError, BondError):
                raw_v, pos = self.struct(start, VALUE_SCHEMA, depth + 1)
                v = props[key] = convert_value(raw_v)
            # Only a key's first value is remembered: a value that changes per record then costs one
            # failed comparison, not a copy per record.
            if pmemo is not None and key not in pmemo and pos - start <= 256 and len(pmemo) < 4096:
                pmemo[key] = (buf[start:pos], v)
        return props, pos

    def _attributes(self, pos: int) -> tuple[tuple[list[str], list[str]], int]:
        """vector<Attributes{1: vector<PII{1: Kind}>, 2: vector<CustomerContent{1: Kind}>}>, v1 layout."""
        buf = self.buf
        if buf[pos] != BT_STRUCT:
            raise _Slow
        count = buf[pos + 1]
        pos += 2
        if count >= 0x80:
            raise _Slow
        pii: list[str] = []
        cc: list[str] = []
        for _ in range(count):
            while True:
                b = buf[pos]
                pos += 1
                if b == 0:
                    break
                # 0x2B: list field 1 (pii); 0x4B: list field 2 (customerContent); both lists of struct.
                if b == 0x2B:
                    target, names = pii, PII_KINDS
                elif b == 0x4B:
                    target, names = cc, CC_KINDS
                else:
                    raise _Slow
                if buf[pos] != BT_STRUCT or buf[pos + 1] >= 0x80:
                    raise _Slow
                n = buf[pos + 1]
                pos += 2
                for _ in range(n):
                    kind = 0
                    b = buf[pos]
                    if b == 0x30:  # int32 field 1 (Kind), one-byte zigzag value
                        z = buf[pos + 1]
                        if z >= 0x80 or buf[pos + 2] != 0:
                            raise _Slow
                        kind = (z >> 1) ^ -(z & 1)
                        pos += 3
                    elif b == 0:
                        pos += 1
                    else:
                        raise _Slow
                    target.append(_kind_name(names, kind))
        return (pii, cc), pos

    def _guid_value(self, pos: int) -> tuple[list[bytes], int]:
        """vector<vector<uint8>> of 16-byte GUIDs (the list-of-list header byte is already consumed)."""
        buf = self.buf
        if buf[pos] != BT_LIST or buf[pos + 1] >= 0x80:
            raise _Slow
        count = buf[pos + 1]
        pos += 2
        out = []
        for _ in range(count):
            if buf[pos] != 3 or buf[pos + 1] >= 0x80:
                raise _Slow
            n = buf[pos + 1]
            pos += 2
            if pos + n > self.end:
                raise _Slow
            out.append(buf[pos : pos + n])
            pos += n
        return out, pos

    def _long_array(self, pos: int) -> tuple[list[list[int]], int]:
        """vector<vector<int64>> (the list-of-list header byte is already consumed)."""
        buf = self.buf
        if buf[pos] != BT_LIST or buf[pos + 1] >= 0x80:
            raise _Slow
        count = buf[pos + 1]
        pos += 2
        out = []
        zigzag = self.zigzag
        for _ in range(count):
            if buf[pos] != BT_INT64 or buf[pos + 1] >= 0x80:
                raise _Slow
            n = buf[pos + 1]
            pos += 2
            items = []
            for _ in range(n):
                v, pos = zigzag(pos)
                items.append(v)
            out.append(items)
        return out, pos


def _guid_str(raw: bytes) -> Any:
    """16 bytes in the Windows GUID layout (first three groups little-endian) → canonical text."""
    if len(raw) != 16:
        return bytes_json(raw)
    tail = raw[8:].hex()
    return f"{raw[3::-1].hex()}-{raw[5:3:-1].hex()}-{raw[7:5:-1].hex()}-{tail[:4]}-{tail[4:]}"


def _array_value(kind: int, guid: list[bytes] | None, larr: list[list[int]] | None) -> tuple[Any, dict | None]:
    if kind == 8 and guid is not None and larr is None:
        return (_guid_str(guid[0]) if guid else None), _KIND_META[8]
    if kind in (9, 11, 12) and larr is not None and guid is None:
        return (larr[0] if larr else []), _KIND_META[kind]
    raise _Slow


def _merge_props(datas: Any, target: dict, prefix: str, meta: dict, pii: list[dict]) -> None:
    for d in datas if isinstance(datas, list) else ():
        if not isinstance(d, dict):
            continue
        props = d.get("properties")
        if props is not None and not isinstance(props, dict):
            # Not the map<string, Value> the IDL says: keep it as sent rather than drop it.
            target.setdefault("_unknown", []).append({"name": "properties", "value": props})
        if isinstance(props, dict):
            for name, (value, m) in props.items():
                target[name] = value
                if m is None:
                    continue
                path = prefix + name
                meta[path] = m
                if len(m) == 1:
                    continue
                for k in m.get("pii", ()):
                    if k != "NotSet":
                        pii.append({"path": path, "kind": k, "source": "1ds-pii-kind"})
                for k in m.get("customerContent", ()):
                    if k != "NotSet":
                        pii.append({"path": path, "kind": "CustomerContent", "detail": k,
                                    "source": "1ds-customer-content"})
        if "_unknown" in d:
            target.setdefault("_unknown", []).extend(d["_unknown"])


def record_to_data(rec: dict) -> tuple[dict, list[dict]]:
    """Bond-decoded Record (schema names) → Common-Schema-shaped dict and the PII annotations."""
    out: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    pii: list[dict] = []
    ext: dict[str, Any] = {}
    data: dict[str, Any] = {}
    ext_names = _EXT_KEYS
    for key, v in rec.items():
        e = ext_names.get(key)
        if e is not None:
            # ext* fields are vectors of length 1 in practice; keep a list only when there are several.
            ext[e] = v[0] if type(v) is list and len(v) == 1 else v
        elif key == "time":
            out["time"] = iso_from_ticks(v) or v
            meta["time"] = {"kind": "DateTime", "ticks": v}
        elif key == "flags":
            out["flags"] = v
            if isinstance(v, int):
                meta["flags"] = {"names": [n for bit, n in RECORD_FLAGS if v & bit]}
        elif key == "data":
            _merge_props(v, data, "data.", meta, pii)
        elif key == "baseData":
            base: dict[str, Any] = {}
            _merge_props(v, base, "data.baseData.", meta, pii)
            data["baseData"] = base
        elif key == "baseType":
            data["baseType"] = v
        elif key == "extData":
            extdata: dict[str, Any] = {}
            _merge_props(v, extdata, "extData.", meta, pii)
            out["extData"] = extdata
        else:
            out[key] = v
    if ext:
        out["ext"] = ext
    if data:
        out["data"] = data
    if meta:
        out["_meta"] = meta
    return out, pii


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


_TENANT_KEYS = ("TenantId", "tenantId", "Tenant.Id", "UserInfo.OMSTenantId", "OMSTenantId", "AadTenantId")


_EMPTY: dict = {}


def _sub(d: dict, key: str) -> dict:
    v = d.get(key)
    return v if type(v) is dict else _EMPTY


def _s1(v: Any) -> str | None:
    # str_or_none with the common case (a non-empty str) first: this runs ~10 times per event.
    if type(v) is str:
        return v or None
    return str_or_none(v)


def fill_event_fields(ev: Event, d: dict, params: dict[str, str]) -> None:
    """Promote the Common Schema fields teletap indexes (same rules for Bond and JSON)."""
    ext = _sub(d, "ext")
    name = d.get("name")
    ev.name = name if type(name) is str else None
    ikey = d.get("iKey")
    ev.ikey = ikey if type(ikey) is str and ikey else params.get("apikey")
    sdk = _sub(ext, "sdk")
    ev.sdk_version = (_s1(sdk.get("ver")) or _s1(sdk.get("libVer")) or params.get("client-version")
                      or params.get("sdk-version"))
    app = _sub(ext, "app")
    ev.app_id = _s1(app.get("id")) or _s1(app.get("name"))
    ev.app_version = _s1(app.get("ver"))
    os_ = _sub(ext, "os")
    ev.os_name = _s1(os_.get("name"))
    ev.os_version = _s1(os_.get("ver"))
    dev = _sub(ext, "device")
    ev.device_id = _s1(dev.get("localId")) or _s1(dev.get("id"))
    user = _sub(ext, "user")
    ev.user_id = _s1(user.get("localId")) or _s1(user.get("id"))
    tenant = _sub(ext, "m365").get("enrolledTenantId") or _sub(ext, "m365a").get("enrolledTenantId")
    if not tenant:
        props = d.get("data")
        if type(props) is dict:
            for k in _TENANT_KEYS:
                if props.get(k):
                    tenant = props[k]
                    break
    ev.tenant_id = _s1(tenant)


# --- Collector parameters -----------------------------------------------------------------------------

PARAM_NAMES = ("client-id", "client-version", "apikey", "x-apikey", "upload-time", "content-encoding",
               "sdk-version", "time-delta-to-apply-millis", "client-time-epoch-millis", "content-type")


def collector_params(headers: dict[str, str], query: dict[str, str]) -> dict[str, str]:
    """Collector parameters from headers, else the query (the 1DS JS SDK uses either, per send path)."""
    out: dict[str, str] = {}
    for n in PARAM_NAMES:
        v = headers.get(n)
        if v is None:
            v = query.get(n)
        if v is not None:
            out[n] = v
    if "apikey" not in out and "x-apikey" in out:
        out["apikey"] = out["x-apikey"]
    return out


def _collector_info(params: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {k: v for k, v in params.items() if k != "content-type"}
    if "upload-time" in params:
        iso = iso_from_unix_ms(params["upload-time"])
        if iso:
            info["upload-time-iso"] = iso
    return info


# --- Bond body ------------------------------------------------------------------------------------------


def _record_version(buf: bytes, pos: int) -> tuple[int, int]:
    """(Compact Binary version, position of the record) at ``pos``: v1 starts with the magic, v2 with a length."""
    if buf.startswith(BOND_MAGICS, pos):
        return 1, pos
    # v2: a varint struct length, then the same magic.
    p = pos
    for _ in range(5):
        if p >= len(buf):
            break
        b = buf[p]
        p += 1
        if b < 0x80:
            if buf.startswith(BOND_MAGICS, p):
                return 2, pos
            break
    return 1, pos


def decode_bond(
    body: bytes, params: dict[str, str], limits: Limits, notes: list[str],
    make_event: Callable[..., Event] = Event,
) -> tuple[list[Event], DecodeError | None]:
    """CsProtocol Records back to back until the body ends."""
    events: list[Event] = []
    error: DecodeError | None = None
    info = _collector_info(params) if params else None
    pos = 0
    n = len(body)
    if body[:2] == b"\x43\x42" and len(body) >= 4:
        # Marshalled Bond: magic 0x4243 ("CB") and a protocol version.
        version = body[2] | body[3] << 8
        notes.append(f"marshalled Compact Binary v{version}")
        pos = 4
        forced: int | None = version if version in (1, 2) else None
    else:
        forced = None
    readers = {1: CsReader(body, version=1, max_depth=limits.max_depth, memo=True),
               2: CsReader(body, version=2, max_depth=limits.max_depth)}
    versions: set[int] = set()
    cs: set[str] = set()
    resyncs = 0
    while pos < n:
        if len(events) >= limits.max_events:
            error = TooManyEvents(f"more than {limits.max_events} records", pos)
            break
        version = forced or _record_version(body, pos)[0]
        try:
            rec, new_pos = readers[version].read(pos, RECORD_SCHEMA)
        except BondError as e:
            if error is None:
                error = e
            # Resynchronise on the next record magic, as the SDK's own PayloadDecoder does.
            nxt = min((i for i in (body.find(m, pos + 1) for m in BOND_MAGICS) if i >= 0), default=-1)
            if nxt < 0:
                break
            resyncs += 1
            pos = nxt
            continue
        pos = new_pos
        versions.add(version)
        d, pii = record_to_data(rec)
        if isinstance(d.get("ver"), str):
            cs.add(d["ver"])
        if info:
            d["_collector"] = info
        ev = make_event("1ds-bond", len(events), data=d, pii=pii)
        fill_event_fields(ev, d, params)
        ev.time = d["time"] if isinstance(d.get("time"), str) else None
        events.append(ev)
    notes.append(
        f"{len(events)} record{'s' * (len(events) != 1)}"
        + (f", CS {', '.join(sorted(cs))}" if cs else "")
        + (f", Compact Binary v{'/'.join(str(v) for v in sorted(versions))}" if versions else "")
    )
    if resyncs:
        notes.append(f"resynchronised {resyncs} time(s) on the next record magic after an error")
    return events, error


# --- JSON body ------------------------------------------------------------------------------------------

JSON_TYPES = ("Unspecified", "String", "Int32", "UInt32", "Int64", "UInt64", "Double", "Bool", "Guid",
              "DateTime")


def _json_type_name(t: int) -> str:
    return JSON_TYPES[t] if t < len(JSON_TYPES) else f"Unknown({t})"


def _hint(t: Any, path: str, meta: dict, pii: list[dict]) -> None:
    if type(t) is not int:
        return
    m: dict[str, Any] = {"kind": _json_type_name(t & 0x1F), "t": t}
    pk = (t >> 5) & 0xFF
    ck = (t >> 13) & 0xF
    if pk:
        m["pii"] = [_kind_name(PII_KINDS, pk)]
        pii.append({"path": path, "kind": m["pii"][0], "source": "1ds-pii-kind"})
    if ck:
        m["customerContent"] = [_kind_name(CC_KINDS, ck)]
        pii.append({"path": path, "kind": "CustomerContent", "detail": m["customerContent"][0],
                    "source": "1ds-customer-content"})
    meta[path] = m


def _apply_metadata(f: Any, path: str, meta: dict, pii: list[dict], depth: int) -> None:
    """Walk ``ext.metadata.f`` and annotate each described property (nested ``f``, arrays ``a``)."""
    if type(f) is not dict or depth > 32:
        return
    for prop, hint in f.items():
        if type(hint) is not dict:
            continue
        p = f"{path}.{prop}"
        if "t" in hint:
            _hint(hint["t"], p, meta, pii)
        a = hint.get("a")
        if type(a) is dict and "t" in a:
            _hint(a["t"], p + "[]", meta, pii)
        if "f" in hint:
            _apply_metadata(hint["f"], p, meta, pii, depth + 1)


def json_event(obj: Any, position: int, params: dict[str, str], info: dict | None, fmt: str = "1ds-json") -> Event:
    if not isinstance(obj, dict):
        return Event(fmt, position, data={"value": obj})
    pii: list[dict] = []
    md = _get(obj, "ext", "metadata")
    if isinstance(md, dict) and "f" in md:
        meta: dict[str, Any] = {}
        _apply_metadata(md["f"], "data", meta, pii, 0)
        if meta:
            obj["_meta"] = meta
    if info:
        obj["_collector"] = info
    ev = Event(fmt, position, data=obj, pii=pii)
    fill_event_fields(ev, obj, params)
    ev.time = normalise_iso(obj.get("time"))
    return ev


def json_depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > deepest:
            deepest = d
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values() if isinstance(v, (dict, list)))
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o if isinstance(v, (dict, list)))
    return deepest


def load_json(data: bytes, max_depth: int, what: str = "not JSON") -> Any:
    """json.loads with teletap's depth limit; every failure is a DecodeError with an offset."""
    try:
        doc = json.loads(data)
    except RecursionError as e:
        raise DecodeError(f"JSON nesting deeper than the interpreter allows (limit {max_depth})", 0) from e
    except ValueError as e:
        raise DecodeError(f"{what}: {e}", getattr(e, "pos", 0) or 0) from e
    if data.count(b"{") + data.count(b"[") > max_depth and json_depth(doc) > max_depth:
        raise DecodeError(f"JSON nesting deeper than {max_depth}", 0)
    return doc


def decode_json_lines(
    body: bytes, params: dict[str, str], limits: Limits, notes: list[str], fmt: str = "1ds-json",
    per_object: Callable[[Any, int], Event] | None = None,
) -> tuple[list[Event], DecodeError | None]:
    """Newline-delimited JSON objects; a bad line is reported and the rest still decoded."""
    events: list[Event] = []
    error: DecodeError | None = None
    info = _collector_info(params) if params else None
    loads = json.loads
    offset = 0
    bad = 0
    for line in body.split(b"\n"):
        start = offset
        offset += len(line) + 1
        if not line.strip():
            continue
        if len(events) >= limits.max_events:
            error = error or TooManyEvents(f"more than {limits.max_events} events", start)
            break
        try:
            obj = loads(line)
            # Counting brackets is C-speed; only lines that could be too deep are walked.
            if line.count(b"{") + line.count(b"[") > limits.max_depth and json_depth(obj) > limits.max_depth:
                raise DecodeError(f"JSON nesting deeper than {limits.max_depth}", 0)
        except (ValueError, RecursionError, DecodeError) as e:
            bad += 1
            if error is None:
                col = getattr(e, "pos", 0) or 0
                error = DecodeError(f"line is not JSON: {e}", start + col)
            continue
        if per_object is not None:
            events.append(per_object(obj, len(events)))
        else:
            events.append(json_event(obj, len(events), params, info, fmt))
    notes.append(f"{len(events)} JSON event{'s' * (len(events) != 1)}" + (f", {bad} bad line(s)" if bad else ""))
    return events, error
