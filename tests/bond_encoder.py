"""A Bond Compact Binary *encoder* for tests, written from the public format description
(microsoft/bond compact_binary.h) and the CsProtocol IDL table in shared/research/wire-formats.md §1.5, §2.

It is deliberately independent of teletap's reader: values carry explicit Bond types, and the CsProtocol
helpers below transcribe field ids and types from the IDL table rather than importing teletap's schema.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

STOP, STOP_BASE, BOOL, UINT8, UINT16, UINT32, UINT64 = 0, 1, 2, 3, 4, 5, 6
FLOAT, DOUBLE, STRING, STRUCT, LIST, SET, MAP = 7, 8, 9, 10, 11, 12, 13
INT8, INT16, INT32, INT64, WSTRING = 14, 15, 16, 17, 18


@dataclass
class F:
    """A field: id, Bond type, value (S for struct, L for list/set, M for map)."""

    id: int
    type: int
    value: Any


@dataclass
class S:
    fields: list[F] = field(default_factory=list)
    base: S | None = None


@dataclass
class L:
    etype: int
    items: list


@dataclass
class M:
    ktype: int
    vtype: int
    items: list[tuple[Any, Any]]


def varint(n: int) -> bytes:
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n: int, bits: int = 64) -> bytes:
    return varint(((n << 1) ^ (n >> (bits - 1))) & ((1 << bits) - 1))


def field_header(ftype: int, fid: int) -> bytes:
    if fid <= 5:
        return bytes([ftype | (fid << 5)])
    if fid <= 255:
        return bytes([ftype | (6 << 5), fid])
    return bytes([ftype | (7 << 5), fid & 0xFF, fid >> 8])


class Writer:
    def __init__(self, version: int = 1) -> None:
        self.version = version

    def value(self, t: int, v: Any) -> bytes:
        if t == BOOL:
            return b"\x01" if v else b"\x00"
        if t == UINT8:
            return bytes([v])
        if t == INT8:
            return bytes([v & 0xFF])
        if t in (UINT16, UINT32, UINT64):
            return varint(v)
        if t == INT16:
            return zigzag(v, 16)
        if t == INT32:
            return zigzag(v, 32)
        if t == INT64:
            return zigzag(v, 64)
        if t == FLOAT:
            return struct.pack("<f", v)
        if t == DOUBLE:
            return struct.pack("<d", v)
        if t == STRING:
            raw = v if isinstance(v, bytes) else v.encode("utf-8")
            return varint(len(raw)) + raw
        if t == WSTRING:
            raw = v.encode("utf-16-le")
            return varint(len(raw) // 2) + raw
        if t == STRUCT:
            return self.struct(v)
        if t in (LIST, SET):
            return self.container(v)
        if t == MAP:
            out = bytes([v.ktype, v.vtype]) + varint(len(v.items))
            for k, x in v.items:
                out += self.value(v.ktype, k) + self.value(v.vtype, x)
            return out
        raise ValueError(t)

    def container(self, lst: L) -> bytes:
        n = len(lst.items)
        packed = self.version == 2 and n < 7
        head = bytes([lst.etype | ((n + 1) << 5)]) if packed else bytes([lst.etype]) + varint(n)
        return head + b"".join(self.value(lst.etype, x) for x in lst.items)

    def _fields(self, fields: list[F]) -> bytes:
        return b"".join(field_header(f.type, f.id) + self.value(f.type, f.value) for f in fields)

    def struct(self, s: S | list[F]) -> bytes:
        if isinstance(s, list):
            s = S(s)
        body = b""
        if s.base is not None:
            body += self._base(s.base)
        body += self._fields(s.fields) + b"\x00"
        if self.version == 2:
            return varint(len(body)) + body
        return body

    def _base(self, s: S) -> bytes:
        # Base sections have no length prefix of their own (only the outermost struct has one in v2).
        out = b""
        if s.base is not None:
            out += self._base(s.base)
        return out + self._fields(s.fields) + b"\x01"


def encode(s: S | list[F], version: int = 1) -> bytes:
    return Writer(version).struct(s)


# --- CsProtocol ------------------------------------------------------------------------------------------

# Record-level ext struct ids and, per struct, field name → (id, Bond type), from the IDL table.
EXT_IDS = {"ingest": 20, "protocol": 21, "user": 22, "device": 23, "os": 24, "app": 25, "utc": 26, "xbl": 27,
           "javascript": 28, "receipts": 29, "net": 31, "sdk": 32, "loc": 33, "cloud": 34, "service": 35,
           "cs": 36, "m365": 37, "mscv": 42, "intweb": 43, "intservice": 44, "web": 45}


def _strs(*names: str, start: int = 1) -> dict[str, tuple[int, int]]:
    return {n: (i, STRING) for i, n in enumerate(names, start)}


EXT_FIELDS: dict[str, dict[str, tuple[int, int]]] = {
    "ingest": {"time": (1, INT64), "clientIp": (2, STRING), "auth": (3, INT64), "quality": (4, INT64),
               "uploadTime": (5, INT64), "userAgent": (6, STRING), "client": (7, STRING)},
    "protocol": {"metadataCrc": (1, INT32), "ticketKeys": (2, LIST), "devMake": (3, STRING),
                 "devModel": (4, STRING), "msp": (5, UINT64)},
    "user": _strs("id", "localId", "authId", "locale"),
    "device": _strs("id", "localId", "authId", "authSecId", "deviceClass", "orgId", "orgAuthId", "make",
                    "model", "authIdEnt"),
    "os": {"locale": (1, STRING), "expId": (2, STRING), "bootId": (3, INT32), "name": (4, STRING),
           "ver": (5, STRING)},
    "app": {**_strs("expId", "userId", "env"), "asId": (4, INT32), **_strs("id", "ver", "locale", "name", "sesId",
                                                                            start=5)},
    "utc": {**_strs("stId", "aId", "raId", "op"), "cat": (5, INT64), "flags": (6, INT64), "sqmId": (7, STRING),
            "mon": (9, STRING), "cpId": (10, INT32), "bSeq": (11, STRING), "epoch": (12, STRING),
            "seq": (13, INT64), "popSample": (14, DOUBLE), "eventFlags": (15, INT64), "wsId": (16, INT64),
            "wcmp": (17, INT64), "wPId": (18, INT64)},
    "m365": {"enrolledTenantId": (1, STRING), "msp": (2, UINT64)},
    "xbl": {"claims": (5, MAP), "nbf": (10, STRING), "exp": (20, STRING), "sbx": (30, STRING),
            "dty": (40, STRING), "did": (50, STRING), "xid": (60, STRING), "uts": (70, UINT64),
            "pid": (80, STRING), "dvr": (90, STRING), "tid": (100, UINT32), "tvr": (110, STRING),
            "sty": (120, STRING), "sid": (130, STRING), "eid": (140, INT64), "ip": (150, STRING)},
    "javascript": {"libVer": (10, STRING), "osName": (15, STRING), "browser": (20, STRING),
                   "browserVersion": (21, STRING), "platform": (25, STRING), "make": (30, STRING),
                   "model": (35, STRING), "screenSize": (40, STRING), "msfpc": (45, STRING),
                   "mc1Id": (50, STRING), "mc1Lu": (60, UINT64), "isMc1New": (70, BOOL), "ms0": (80, STRING),
                   "anid": (90, STRING), "a": (100, STRING), "msResearch": (110, STRING),
                   "csrvc": (120, STRING), "rtCell": (130, STRING), "rtEndAction": (140, STRING),
                   "rtPermId": (150, STRING), "r": (160, STRING), "wtFpc": (170, STRING),
                   "omniId": (180, STRING), "gsfxSession": (190, STRING), "domain": (200, STRING),
                   "userConsent": (210, BOOL), "browserLang": (220, STRING), "serviceName": (230, STRING),
                   "dnt": (999, STRING)},
    "receipts": {"originalTime": (1, INT64), "uploadTime": (2, INT64), "originalName": (3, STRING),
                 "flags": (4, UINT64)},
    "net": _strs("provider", "cost", "type"),
    "sdk": {"ver": (1, STRING), "epoch": (2, STRING), "seq": (3, INT64), "installId": (4, STRING),
            "libVer": (5, STRING)},
    "loc": _strs("id", "country", "timezone"),
    "cloud": _strs("fullEnvName", "location", "environment", "deploymentUnit", "name", "roleInstance", "role"),
    "service": _strs("name", "role", "roleVersion"),
    "cs": _strs("sig"),
    "mscv": _strs("cV"),
    "intweb": {**_strs("mc1Id", "msfpc", "anid", "serviceName"), "mscom": (5, MAP)},
    "intservice": _strs("fullEnvName", "location", "environment", "deploymentUnit", "name"),
    "web": {"browser": (10, STRING), "browserVer": (20, STRING), "screenRes": (30, STRING),
            "domain": (40, STRING), "userConsent": (50, BOOL), "browserLang": (60, STRING),
            "isManual": (70, BOOL)},
}

KINDS = {"Int64": 0, "UInt64": 1, "Int32": 2, "UInt32": 3, "Double": 4, "String": 5, "Bool": 6, "DateTime": 7,
         "Guid": 8, "ArrayInt64": 9, "ArrayUInt64": 10, "ArrayInt32": 11, "ArrayUInt32": 12, "ArrayDouble": 13,
         "ArrayString": 14, "ArrayBool": 15, "ArrayDateTime": 16, "ArrayGuid": 17}
PII = {"NotSet": 0, "DistinguishedName": 1, "GenericData": 2, "IPV4Address": 3, "IPv6Address": 4,
       "MailSubject": 5, "PhoneNumber": 6, "QueryString": 7, "SipAddress": 8, "SmtpAddress": 9, "Identity": 10,
       "Uri": 11, "Fqdn": 12, "IPV4AddressLegacy": 13}


def ext_struct(name: str, values: dict[str, Any]) -> S:
    spec = EXT_FIELDS[name]
    fields = []
    for k, v in values.items():
        fid, t = spec[k]
        if t == MAP:
            v = M(STRING, STRING, list(v.items()))
        elif t == LIST:  # ticketKeys: vector<vector<string>>
            v = L(LIST, [L(STRING, list(x)) for x in v])
        fields.append(F(fid, t, v))
    return S(fields)


@dataclass
class Prop:
    kind: str
    value: Any
    pii: list[str] = field(default_factory=list)
    cc: list[int] = field(default_factory=list)  # CustomerContentKind numbers


def _guid_bytes(g: str) -> L:
    return L(UINT8, list(uuid.UUID(g).bytes_le))


def value_struct(p: Prop) -> S:
    k = KINDS[p.kind]
    fields: list[F] = []
    if k != 5:
        fields.append(F(1, INT32, k))
    if p.pii or p.cc:
        attrs = []
        if p.pii:
            attrs.append(F(1, LIST, L(STRUCT, [S([F(1, INT32, PII[x])]) for x in p.pii])))
        if p.cc:
            attrs.append(F(2, LIST, L(STRUCT, [S([F(1, INT32, c)]) for c in p.cc])))
        fields.append(F(2, LIST, L(STRUCT, [S(attrs)])))
    v = p.value
    # The SDK omits defaults: empty string, 0, 0.0 (CsProtocol_writers.hpp).
    if k == 5:
        if v:
            fields.append(F(3, STRING, v))
    elif k in (0, 1, 2, 3, 6, 7):
        n = int(v)
        if k == 1 and n >= 1 << 63:
            n -= 1 << 64  # uint64 travels as int64 bits
        if n:
            fields.append(F(4, INT64, n))
    elif k == 4:
        if v != 0.0:
            fields.append(F(5, DOUBLE, v))
    elif k == 8:
        fields.append(F(6, LIST, L(LIST, [_guid_bytes(v)])))
    elif k in (9, 10, 11, 12, 15, 16):
        items = [int(x) - (1 << 64) if k == 10 and x >= 1 << 63 else int(x) for x in v]
        fields.append(F(11, LIST, L(LIST, [L(INT64, items)])))
    elif k == 13:
        fields.append(F(12, LIST, L(LIST, [L(DOUBLE, list(v))])))
    elif k == 14:
        fields.append(F(10, LIST, L(LIST, [L(STRING, list(v))])))
    elif k == 17:
        fields.append(F(13, LIST, L(LIST, [L(LIST, [_guid_bytes(g) for g in v])])))
    return S(fields)


def data_struct(props: dict[str, Prop]) -> S:
    return S([F(1, MAP, M(STRING, STRUCT, [(k, value_struct(p)) for k, p in props.items()]))])


def record(
    *, ver: str = "4.0", name: str = "Test.Event", time: int | None = None, pop_sample: float | None = None,
    ikey: str | None = None, flags: int | None = None, cv: str | None = None,
    ext: dict[str, dict[str, Any]] | None = None, tags: dict[str, str] | None = None,
    base_type: str | None = None, base_data: dict[str, Prop] | None = None,
    data: dict[str, Prop] | None = None, ext_data: dict[str, Prop] | None = None,
    extra: list[F] | None = None,
) -> list[F]:
    fields = [F(1, STRING, ver), F(2, STRING, name)]
    if time is not None:
        fields.append(F(3, INT64, time))
    if pop_sample is not None:
        fields.append(F(4, DOUBLE, pop_sample))
    if ikey is not None:
        fields.append(F(5, STRING, ikey))
    if flags is not None:
        fields.append(F(6, INT64, flags))
    if cv is not None:
        fields.append(F(7, STRING, cv))
    for ename, values in (ext or {}).items():
        fields.append(F(EXT_IDS[ename], LIST, L(STRUCT, [ext_struct(ename, values)])))
    if ext_data is not None:
        fields.append(F(41, LIST, L(STRUCT, [data_struct(ext_data)])))
    if tags is not None:
        fields.append(F(51, MAP, M(STRING, STRING, list(tags.items()))))
    if base_type is not None:
        fields.append(F(60, STRING, base_type))
    if base_data is not None:
        fields.append(F(61, LIST, L(STRUCT, [data_struct(base_data)])))
    if data is not None:
        fields.append(F(70, LIST, L(STRUCT, [data_struct(data)])))
    fields += extra or []
    fields.sort(key=lambda f: f.id)
    return fields


def ticks_from_unix_ms(ms: int) -> int:
    return ms * 10_000 + 621_355_968_000_000_000
