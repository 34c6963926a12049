"""Machine-readable bodies that are not telemetry protocols: JSON, form, multipart, query strings,
protobuf without a schema, and JWT claims (decoded without verification: they tell who sent a flow)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from .model import DecodeError, Event, Limits, bytes_json, float_json, iso_from_unix_s, str_or_none
from .onecollector import load_json

_NAME_KEYS = ("name", "eventName", "event_name", "event", "type")


def _name(obj: Any) -> str | None:
    if isinstance(obj, dict):
        for k in _NAME_KEYS:
            v = obj.get(k)
            if isinstance(v, str) and v:
                return v
    return None


# --- JSON ----------------------------------------------------------------------------------------------


def decode_json(body: bytes, limits: Limits, notes: list[str]) -> list[Event]:
    """A JSON document → one event; a top-level array of objects → one event per element."""
    doc = load_json(body, limits.max_depth)
    if isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc):
        items = doc[: limits.max_events]
        notes.append(f"JSON array of {len(doc)} objects")
        return [Event("json", i, name=_name(x), data=x) for i, x in enumerate(items)]
    notes.append("JSON document")
    return [Event("json", 0, name=_name(doc), data=doc if isinstance(doc, dict) else {"value": doc})]


# --- form / query ----------------------------------------------------------------------------------------


def add_value(out: dict[str, Any], key: str, value: Any) -> None:
    """Set ``out[key]``; a repeated key keeps every value, as a list in order."""
    if key in out:
        cur = out[key]
        if isinstance(cur, list):
            cur.append(value)
        else:
            out[key] = [cur, value]
    else:
        out[key] = value


def params_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Pairs → dict; a repeated name keeps every value as a list."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        add_value(out, k, v)
    return out


def parse_query(qs: str, max_fields: int = 10_000) -> dict[str, Any]:
    try:
        return params_dict(parse_qsl(qs, keep_blank_values=True, max_num_fields=max_fields))
    except ValueError:
        # Too many fields: keep the first ones rather than nothing.
        return params_dict(parse_qsl(qs[: 64 * 1024], keep_blank_values=True)[:max_fields])


def _jwt_pii_and_ids(params: dict[str, Any], ev: Event) -> None:
    for k, v in params.items():
        if isinstance(v, str) and k.lower() in ("tenantid", "tenant", "tid"):
            ev.tenant_id = ev.tenant_id or v


def decode_form(body: bytes, limits: Limits, notes: list[str]) -> list[Event]:
    text = body.decode("utf-8", "replace")
    fields = parse_query(text, limits.max_events)
    notes.append(f"form-urlencoded, {len(fields)} field(s)")
    ev = Event("form", 0, data={"fields": fields})
    _jwt_pii_and_ids(fields, ev)
    return [ev]


def query_event(query: dict[str, Any], position: int) -> Event:
    ev = Event("query", position, data={"params": query})
    _jwt_pii_and_ids(query, ev)
    return ev


# --- multipart -------------------------------------------------------------------------------------------

_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')
_MAX_FIELD_VALUE = 4096  # form values are kept (they are what is sent), file contents never


def header_params(value: str) -> tuple[str, dict[str, str]]:
    main, _, _rest = value.partition(";")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3).strip())
              for m in _PARAM_RE.finditer(value[len(main):])}
    return main.strip().lower(), params


def decode_multipart(body: bytes, content_type: str, limits: Limits, notes: list[str]) -> list[Event]:
    _, params = header_params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise DecodeError("multipart without boundary", 0)
    delim = b"--" + boundary.encode("latin-1")
    parts: list[dict[str, Any]] = []
    pos = body.find(delim)
    if pos < 0:
        raise DecodeError("multipart boundary not found", 0)
    while True:
        start = pos + len(delim)
        if body.startswith(b"--", start):
            break  # closing delimiter
        nxt = body.find(b"\r\n" + delim, start)
        if nxt < 0:
            raise DecodeError("multipart part not terminated", start)
        part = body[start:nxt]
        part = part[2:] if part.startswith(b"\r\n") else part.lstrip(b"\n")
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            head, content = b"", part
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            k, s, v = line.decode("utf-8", "replace").partition(":")
            if s:
                headers[k.strip().lower()] = v.strip()
        _, disp = header_params(headers.get("content-disposition", ""))
        entry: dict[str, Any] = {"name": disp.get("name"), "size": len(content)}
        if "filename" in disp or "filename*" in disp:
            entry["filename"] = disp.get("filename") or disp.get("filename*")
        if "content-type" in headers:
            entry["content_type"] = headers["content-type"]
        if "filename" not in entry and len(content) <= _MAX_FIELD_VALUE:
            with contextlib.suppress(UnicodeDecodeError):
                entry["value"] = content.decode("utf-8")
        parts.append(entry)
        if len(parts) >= limits.max_events:
            break
        pos = nxt + 2
    notes.append(f"multipart, {len(parts)} part(s)")
    return [Event("multipart", 0, data={"parts": parts})]


# --- protobuf without a schema -----------------------------------------------------------------------


class _PbError(Exception):
    pass


def _pb_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise _PbError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _PbError("varint too long")


def _pb_message(buf: bytes, depth: int, budget: list[int]) -> dict[str, Any]:
    """Field-number tree. Length-delimited values are read as a nested message when they parse fully,
    else as UTF-8 text, else as bytes (the usual schema-less heuristic)."""
    if depth <= 0:
        raise _PbError("too deep")
    out: dict[str, Any] = {}
    pos = 0
    n = len(buf)
    while pos < n:
        budget[0] -= 1
        if budget[0] < 0:
            raise _PbError("too many fields")
        key, pos = _pb_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _PbError("field number 0")
        v: Any
        if wire == 0:
            v, pos = _pb_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise _PbError("truncated fixed64")
            v = {"fixed64": int.from_bytes(buf[pos:pos + 8], "little")}
            pos += 8
        elif wire == 5:
            if pos + 4 > n:
                raise _PbError("truncated fixed32")
            v = {"fixed32": int.from_bytes(buf[pos:pos + 4], "little")}
            pos += 4
        elif wire == 2:
            ln, pos = _pb_varint(buf, pos)
            if pos + ln > n:
                raise _PbError("length exceeds message")
            chunk = buf[pos:pos + ln]
            pos += ln
            v = _pb_length_delimited(chunk, depth, budget)
        else:
            raise _PbError(f"unsupported wire type {wire}")
        add_value(out, str(field), v)
    return out


def _pb_length_delimited(chunk: bytes, depth: int, budget: list[int]) -> Any:
    if chunk and depth > 1:
        saved = budget[0]
        try:
            return _pb_message(chunk, depth - 1, budget)
        except _PbError:
            budget[0] = saved
    try:
        text = chunk.decode("utf-8")
        if text.isprintable() or not text:
            return text
    except UnicodeDecodeError:
        pass
    return bytes_json(chunk)


def decode_protobuf(body: bytes, grpc: bool, limits: Limits, notes: list[str]) -> list[Event]:
    budget = [max(limits.max_events, 1) * 10]
    messages: list[bytes] = []
    if grpc:
        # gRPC framing: 1 byte compressed flag, 4 bytes big-endian length, message.
        pos = 0
        while pos < len(body):
            if pos + 5 > len(body):
                raise DecodeError("truncated gRPC frame header", pos)
            ln = int.from_bytes(body[pos + 1:pos + 5], "big")
            if body[pos] & 1:
                raise DecodeError("compressed gRPC frame (grpc-encoding) not decoded", pos)
            if pos + 5 + ln > len(body):
                raise DecodeError("truncated gRPC frame", pos)
            messages.append(body[pos + 5:pos + 5 + ln])
            pos += 5 + ln
    else:
        messages.append(body)
    events = []
    for i, m in enumerate(messages[: limits.max_events]):
        try:
            tree = _pb_message(m, limits.max_depth, budget)
        except _PbError as e:
            raise DecodeError(f"not a protobuf message: {e}", None) from e
        events.append(Event("protobuf", i, data={"fields": tree}))
    notes.append(f"protobuf without schema, {len(events)} message(s)")
    return events


# --- JWT -----------------------------------------------------------------------------------------------

JWT_RE = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


def may_hold_jwt(data: str | bytes) -> bool:
    """Whether ``data`` contains "eyJ", how a JWT's base64url header begins.

    CPython 3.11 searches a one-character needle with memchr but a three-character one a byte at a time,
    ≈ 70× slower (140 µs for a 200 KB body). Most bodies have no capital J at all, so the cheap search
    rules them out first.
    """
    if isinstance(data, str):
        return "J" in data and "eyJ" in data
    return b"J" in data and b"eyJ" in data

_MAX_JWTS = 32
_IDENTITY_CLAIMS = ("upn", "unique_name", "preferred_username", "email", "name", "given_name", "family_name",
                    "oid", "sub", "puid", "ipaddr", "xuid", "gtg")


def _b64url_json(part: bytes) -> Any:
    raw = base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
    return json.loads(raw)


def jwt_event(token: bytes, source: str, position: int) -> Event | None:
    parts = token.split(b".")
    if len(parts) != 3:
        return None
    try:
        header = _b64url_json(parts[0])
        claims = _b64url_json(parts[1])
    except (ValueError, binascii.Error, RecursionError):
        return None
    if not isinstance(claims, dict) or not isinstance(header, dict):
        return None
    # The signature is a credential-bearing part of the token and proves nothing here: not kept.
    pii = [{"path": f"claims.{k}", "kind": "IPAddress" if k == "ipaddr" else "Identity", "source": "jwt-claim"}
           for k in _IDENTITY_CLAIMS if k in claims]
    for k, v in claims.items():
        if isinstance(v, float):
            claims[k] = float_json(v)
    return Event(
        "jwt", position,
        name=f"jwt:{source}",
        time=iso_from_unix_s(claims.get("iat")),
        tenant_id=str_or_none(claims.get("tid")),
        app_id=str_or_none(claims.get("appid") or claims.get("azp")),
        user_id=str_or_none(claims.get("upn") or claims.get("unique_name") or claims.get("preferred_username")
                            or claims.get("oid") or claims.get("sub")),
        data={"source": source, "header": header, "claims": claims,
              "expires": iso_from_unix_s(claims.get("exp"))},
        pii=pii,
    )


def find_jwts(headers: Iterable[tuple[str, str]], body: bytes | None, start: int, query: str = "") -> list[Event]:
    """JWTs in the query string (``access_token=``, ``id_token=``), any header, and the body."""
    events: list[Event] = []
    seen: set[bytes] = set()
    sources = list(headers)
    if may_hold_jwt(query):
        sources.insert(0, ("query", query))
    for name, value in sources:
        if not may_hold_jwt(value):
            continue
        for m in JWT_RE.finditer(value.encode("latin-1", "replace")):
            tok = m.group(0)
            if tok in seen or len(events) >= _MAX_JWTS:
                continue
            seen.add(tok)
            src = "query" if name == "query" and value is query else f"header:{name.lower()}"
            ev = jwt_event(tok, src, start + len(events))
            if ev:
                events.append(ev)
    if body and may_hold_jwt(body):
        for m in JWT_RE.finditer(body):
            tok = m.group(0)
            if tok in seen or len(events) >= _MAX_JWTS:
                continue
            seen.add(tok)
            ev = jwt_event(tok, "body", start + len(events))
            if ev:
                events.append(ev)
    return events
