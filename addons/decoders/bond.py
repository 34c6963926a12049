"""Bond Compact Binary reader (protocol versions 1 and 2), schema-aware but never schema-bound.

A *schema* only gives names: ``{field_id: (name, nested_schema_or_None)}``. Types always come from the
wire, so a field whose id is unknown, or whose type differs from what the IDL says, is still decoded;
unknown ids go to the struct's ``"_unknown"`` list as ``{"id", "type", "value"}`` and are never dropped.

Value mapping: integers and floats as Python numbers (non-finite floats as strings), bool, str,
list/set → list, map → dict with ``str(key)`` keys, list<uint8>/list<int8> (blobs) → ``{"$bytes_b64"}``,
invalid UTF-8 strings → ``{"$bytes_b64"}``, struct → dict.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .model import DecodeError, bytes_json, float_json

BT_STOP, BT_STOP_BASE, BT_BOOL, BT_UINT8, BT_UINT16, BT_UINT32, BT_UINT64 = 0, 1, 2, 3, 4, 5, 6
BT_FLOAT, BT_DOUBLE, BT_STRING, BT_STRUCT, BT_LIST, BT_SET, BT_MAP = 7, 8, 9, 10, 11, 12, 13
BT_INT8, BT_INT16, BT_INT32, BT_INT64, BT_WSTRING = 14, 15, 16, 17, 18

TYPE_NAMES = {
    BT_BOOL: "bool", BT_UINT8: "uint8", BT_UINT16: "uint16", BT_UINT32: "uint32", BT_UINT64: "uint64",
    BT_FLOAT: "float", BT_DOUBLE: "double", BT_STRING: "string", BT_STRUCT: "struct", BT_LIST: "list",
    BT_SET: "set", BT_MAP: "map", BT_INT8: "int8", BT_INT16: "int16", BT_INT32: "int32", BT_INT64: "int64",
    BT_WSTRING: "wstring",
}
# Minimum wire size of one value of each type: lets a container's count be checked against the bytes
# left before anything is allocated.
_MIN_SIZE = {BT_FLOAT: 4, BT_DOUBLE: 8}

Schema = dict[int, tuple[str, "Schema | None"]]

_unpack_f = struct.Struct("<f").unpack_from
_unpack_d = struct.Struct("<d").unpack_from
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
_U16 = (1 << 16) - 1


class BondError(DecodeError):
    pass


class Reader:
    """Reads from ``buf``; positions are passed and returned explicitly (faster than attribute updates)."""

    __slots__ = ("buf", "end", "max_depth", "memo", "v2")

    def __init__(self, buf: bytes, *, version: int = 1, max_depth: int = 64, memo: bool = False) -> None:
        self.buf = buf
        # Optional cache of one-element vector<Struct> fields by their bytes (see struct()).
        self.memo: dict | None = {} if memo else None
        self.end = len(buf)
        self.v2 = version == 2
        self.max_depth = max_depth

    def read(self, pos: int, schema: Schema | None) -> tuple[dict, int]:
        """One top-level struct, with IndexError/RecursionError turned into BondError."""
        try:
            return self.struct(pos, schema)
        except IndexError as e:
            raise BondError("truncated: the data ended inside a struct", self.end) from e
        except RecursionError as e:
            raise BondError("nesting too deep for the interpreter", pos) from e

    # -- scalars ---------------------------------------------------------------------------------
    def varint(self, pos: int, max_bytes: int = 10, limit: int = _U64) -> tuple[int, int]:
        buf = self.buf
        if pos >= self.end:
            raise BondError("truncated varint", pos)
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
        start = pos
        result = b & 0x7F
        shift = 7
        pos += 1
        for _ in range(max_bytes - 1):
            if pos >= self.end:
                raise BondError("truncated varint", pos)
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                if result > limit:
                    raise BondError(f"varint value {result} out of range", start)
                return result, pos
            shift += 7
        raise BondError(f"varint longer than {max_bytes} bytes", start)

    def zigzag(self, pos: int, max_bytes: int = 10, limit: int = _U64) -> tuple[int, int]:
        n, pos = self.varint(pos, max_bytes, limit)
        return (n >> 1) ^ -(n & 1), pos

    def string(self, pos: int) -> tuple[Any, int]:
        buf = self.buf
        n = buf[pos] if pos < self.end else -1
        if n < 0x80 and n >= 0:
            pos += 1
        else:
            n, pos = self.varint(pos, 5, _U32)
        stop = pos + n
        if stop > self.end:
            raise BondError(f"string of {n} bytes exceeds the {self.end - pos} bytes left", pos)
        raw = buf[pos:stop]
        try:
            return raw.decode("utf-8"), stop
        except UnicodeDecodeError:
            return bytes_json(raw), stop

    def wstring(self, pos: int) -> tuple[Any, int]:
        n, pos = self.varint(pos, 5, _U32)
        stop = pos + 2 * n
        if stop > self.end:
            raise BondError(f"wstring of {n} code units exceeds the {self.end - pos} bytes left", pos)
        raw = self.buf[pos:stop]
        try:
            return raw.decode("utf-16-le"), stop
        except UnicodeDecodeError:
            return bytes_json(raw), stop

    # -- values ----------------------------------------------------------------------------------
    def value(self, t: int, pos: int, schema: Schema | None, depth: int) -> tuple[Any, int]:
        # Ordered by how often each type occurs in CsProtocol records.
        if t == BT_STRING:
            return self.string(pos)
        if t in (BT_INT64, BT_INT32, BT_INT16):
            if t == BT_INT64:
                return self.zigzag(pos)
            if t == BT_INT32:
                return self.zigzag(pos, 5, _U32)
            return self.zigzag(pos, 3, _U16)
        if t in (BT_LIST, BT_SET):
            return self.container(pos, schema, depth)
        if t == BT_STRUCT:
            return self.struct(pos, schema, depth + 1)
        if t == BT_MAP:
            return self.map(pos, schema, depth)
        if t == BT_UINT64:
            return self.varint(pos)
        if t == BT_UINT32:
            return self.varint(pos, 5, _U32)
        if t == BT_UINT16:
            return self.varint(pos, 3, _U16)
        if t == BT_DOUBLE:
            if pos + 8 > self.end:
                raise BondError("truncated double", pos)
            return float_json(_unpack_d(self.buf, pos)[0]), pos + 8
        if t == BT_FLOAT:
            if pos + 4 > self.end:
                raise BondError("truncated float", pos)
            return float_json(_unpack_f(self.buf, pos)[0]), pos + 4
        if t in (BT_BOOL, BT_UINT8, BT_INT8):
            if pos >= self.end:
                raise BondError("truncated 8-bit value", pos)
            b = self.buf[pos]
            if t == BT_BOOL:
                return b != 0, pos + 1
            if t == BT_INT8:
                return (b - 256 if b > 127 else b), pos + 1
            return b, pos + 1
        if t == BT_WSTRING:
            return self.wstring(pos)
        raise BondError(f"invalid Bond type id {t}", pos)

    def _container_header(self, pos: int) -> tuple[int, int, int]:
        if pos >= self.end:
            raise BondError("truncated container", pos)
        b = self.buf[pos]
        et = b & 0x1F
        packed = b >> 5
        pos += 1
        if packed:
            if not self.v2:
                raise BondError("packed container count in Compact Binary v1", pos - 1)
            count = packed - 1
        else:
            count, pos = self.varint(pos, 5, _U32)
        per = _MIN_SIZE.get(et, 1)
        if count * per > self.end - pos:
            raise BondError(f"container of {count} {TYPE_NAMES.get(et, et)} exceeds the bytes left", pos)
        return et, count, pos

    def container(self, pos: int, schema: Schema | None, depth: int) -> tuple[Any, int]:
        depth += 1
        if depth > self.max_depth:
            raise BondError(f"nesting deeper than {self.max_depth}", pos)
        if pos >= self.end:
            raise BondError("truncated container", pos)
        b = self.buf[pos]
        et = b & 0x1F
        if b >> 5:
            et, count, pos = self._container_header(pos)
        else:
            c = self.buf[pos + 1] if pos + 1 < self.end else 0x80
            if c < 0x80:
                count = c
                pos += 2
            else:
                count, pos = self.varint(pos + 1, 5, _U32)
            if count * _MIN_SIZE.get(et, 1) > self.end - pos:
                raise BondError(f"container of {count} {TYPE_NAMES.get(et, et)} exceeds the bytes left", pos)
        if et in (BT_UINT8, BT_INT8):
            # A blob: keep it as bytes (GUIDs, hashes).
            return bytes_json(self.buf[pos : pos + count]), pos + count
        out = []
        append = out.append
        if et == BT_STRING:
            string = self.string
            for _ in range(count):
                v, pos = string(pos)
                append(v)
            return out, pos
        if et == BT_STRUCT:
            struct_ = self.struct
            for _ in range(count):
                v, pos = struct_(pos, schema, depth)
                append(v)
            return out, pos
        value = self.value
        for _ in range(count):
            v, pos = value(et, pos, schema, depth)
            append(v)
        return out, pos

    def map(self, pos: int, schema: Schema | None, depth: int) -> tuple[dict, int]:
        depth += 1
        if depth > self.max_depth:
            raise BondError(f"nesting deeper than {self.max_depth}", pos)
        if pos + 2 > self.end:
            raise BondError("truncated map", pos)
        kt = self.buf[pos] & 0x1F
        vt = self.buf[pos + 1] & 0x1F
        count, pos = self.varint(pos + 2, 5, _U32)
        if count * (_MIN_SIZE.get(kt, 1) + _MIN_SIZE.get(vt, 1)) > self.end - pos:
            raise BondError(f"map of {count} entries exceeds the bytes left", pos)
        out: dict[str, Any] = {}
        value = self.value
        if kt == BT_STRING:
            string = self.string
            for _ in range(count):
                k, pos = string(pos)
                if not isinstance(k, str):
                    k = json.dumps(k)
                v, pos = value(vt, pos, schema, depth)
                out[k] = v
            return out, pos
        for _ in range(count):
            k, pos = value(kt, pos, None, depth)
            v, pos = value(vt, pos, schema, depth)
            out[k if isinstance(k, str) else (json.dumps(k) if isinstance(k, (dict, list)) else str(k))] = v
        return out, pos

    def struct(self, pos: int, schema: Schema | None, depth: int = 1) -> tuple[dict, int]:
        """Read one struct (fields up to BT_STOP); base-struct sections (BT_STOP_BASE) are read through.

        Reading past the end raises IndexError, which the callers turn into a truncation error: one
        bounds check per field less on the hot path.
        """
        if depth > self.max_depth:
            raise BondError(f"nesting deeper than {self.max_depth}", pos)
        buf = self.buf
        end = self.end
        stop_at = None
        if self.v2:
            length, pos = self.varint(pos, 5, _U32)
            if length > end - pos:
                raise BondError(f"v2 struct length {length} exceeds the {end - pos} bytes left", pos)
            stop_at = pos + length
        if schema is None:
            schema = _NO_SCHEMA
        out: dict[str, Any] = {}
        unknown = None
        value = self.value
        while True:
            b = buf[pos]
            pos += 1
            if b == 0:
                break
            t = b & 0x1F
            fid = b >> 5
            if fid >= 6:
                if fid == 6:
                    fid = buf[pos]
                    pos += 1
                else:
                    fid = buf[pos] | (buf[pos + 1] << 8)
                    pos += 2
            # Inline fast paths for the commonest fields (short strings, small signed integers): a call
            # per field is most of the cost of a pure-Python reader.
            if t == BT_STRING and buf[pos] < 0x80:
                stop = pos + 1 + buf[pos]
                if stop > end:
                    raise BondError(f"string of {buf[pos]} bytes exceeds the {end - pos - 1} bytes left", pos)
                raw = buf[pos + 1 : stop]
                pos = stop
                try:
                    v = raw.decode("utf-8")
                except UnicodeDecodeError:
                    v = bytes_json(raw)
                spec = schema.get(fid)
            elif t == BT_INT64 or t == BT_INT32:  # noqa: SIM109 - faster than a tuple
                n = buf[pos]
                if n < 0x80:
                    pos += 1
                else:
                    n, pos = self.varint(pos, 10 if t == BT_INT64 else 5, _U64 if t == BT_INT64 else _U32)
                v = (n >> 1) ^ -(n & 1)
                spec = schema.get(fid)
            elif t == BT_LIST and buf[pos] == BT_STRUCT and buf[pos + 1] == 1 and not self.v2:
                # vector<Struct> of one element: every ext* field and Data vector of a CsProtocol Record.
                spec = schema.get(fid)
                memo = self.memo
                if memo is not None:
                    # Records in one batch repeat the same ext structs byte for byte. A struct encoding is
                    # prefix-free (it ends at its BT_STOP), so equal leading bytes mean an equal struct.
                    mkey = (id(schema), fid, depth)  # depth too: a hit must not bypass max_depth
                    hit = memo.get(mkey)
                    if hit is not None and buf.startswith(hit[0], pos + 2):
                        v = [dict(hit[1])]
                        pos += 2 + len(hit[0])
                    else:
                        item, new_pos = self.struct(pos + 2, spec[1] if spec is not None else None, depth + 1)
                        # The first occurrence is remembered; later different ones only cost the compare.
                        if hit is None and new_pos - pos < 512:
                            memo[mkey] = (buf[pos + 2 : new_pos], item)
                            item = dict(item)
                        pos = new_pos
                        v = [item]
                else:
                    item, pos = self.struct(pos + 2, spec[1] if spec is not None else None, depth + 1)
                    v = [item]
            elif t == BT_STOP:
                break  # BT_STOP with an escaped id: unusual but well-formed
            elif t == BT_STOP_BASE:
                continue
            else:
                spec = schema.get(fid)
                v, pos = value(t, pos, spec[1] if spec is not None else None, depth)
            if spec is not None:
                out[spec[0]] = v
            else:
                if unknown is None:
                    unknown = out["_unknown"] = []
                unknown.append({"id": fid, "type": TYPE_NAMES.get(t, str(t)), "value": v})
        if stop_at is not None and pos != stop_at:
            raise BondError(f"v2 struct ended at {pos}, its length prefix says {stop_at}", pos)
        if pos > end:
            raise IndexError
        return out, pos


_NO_SCHEMA: Schema = {}


def read_struct(
    buf: bytes, pos: int = 0, schema: Schema | None = None, *, version: int = 1, max_depth: int = 64
) -> tuple[dict, int]:
    """Read one struct at ``pos``; returns it and the position after it. Raises BondError with an offset."""
    reader = Reader(buf, version=version, max_depth=max_depth)
    return reader.read(pos, schema)
