"""teletap's decoder layer: (method, URL, headers, body) → events, as pure functions.

No mitmproxy and no SQLite here: live capture, offline import, ``teletap decode`` and the mitmweb content
view all call :func:`decode_request` / :func:`decode_response`. Both never raise; see docs/decoders.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from . import aria, compression, config, generic, onecollector
from .appinsights import decode_appinsights
from .model import DecodeError, DecodeResult, Event, Limits

__all__ = ["DecodeError", "DecodeResult", "Event", "Limits", "decode_request", "decode_response"]

DEFAULT_LIMITS = Limits()
BOND_CT = "application/bond-compact-binary"
JSON_STREAM_CTS = ("application/x-json-stream", "application/x-ndjson", "application/ndjson",
                   "application/jsonl", "application/json-seq")
PROTOBUF_CTS = ("application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf",
                "application/x-google-protobuf", "application/octet-stream+protobuf")
GRPC_CTS = ("application/grpc", "application/grpc+proto", "application/grpc-web", "application/grpc-web+proto")
_JWT_SCAN_BYTES = 4 * 1024 * 1024  # bodies are scanned for JWTs up to here; the regex is linear
_CHEAP_RESPONSE_BYTES = 1024 * 1024  # compressed responses up to this size are decompressed for detectors


def _headers_dict(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        k = name.lower()
        # Repeated headers combine as HTTP says (RFC 9110 §5.3); stacked Content-Encoding stays in order.
        out[k] = f"{out[k]}, {value}" if k in out else value
    return out


def _media_type(value: str | None) -> str:
    return value.split(";", 1)[0].strip().lower() if value else ""


def _first_values(query: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in query.items():
        out[k.lower()] = v[0] if isinstance(v, list) else v
    return out


def _set_error(result: DecodeResult, err: DecodeError | None) -> None:
    if err is not None and result.error is None:
        result.error = err.message
        result.error_offset = err.offset


def _looks_bond(body: bytes) -> bool:
    if body.startswith(onecollector.BOND_MAGICS) or body[:2] == b"\x43\x42":
        return True
    # v2: a short varint length, then the record magic.
    for i in range(1, 4):
        if body.startswith(onecollector.BOND_MAGICS, i) and all(b >= 0x80 for b in body[: i - 1]):
            return True
    return False


def decode_request(
    method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes, limits: Limits | None = None,
    *, content_decoded: bool = False,
) -> DecodeResult:
    """Decode a request body (raw, as on the wire) into events. Never raises.

    content_decoded: the body's content-encoding was already removed (a body read back from the store), so
    the Content-Encoding header, or a collector's content-encoding query parameter, is not applied again.
    """
    try:
        # The common case (plain GET): only an Authorization-like header can still carry claims.
        if not body and "?" not in url and not any(generic.may_hold_jwt(v) for _, v in headers):
            return DecodeResult()
        return _decode_request(method, url, headers, body or b"", limits or DEFAULT_LIMITS, content_decoded)
    except Exception as e:  # the proxy must never see a decoder exception
        return DecodeResult(error=f"internal decoder error: {type(e).__name__}: {e}")


def _decode_request(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes,
                    limits: Limits, content_decoded: bool = False) -> DecodeResult:
    result = DecodeResult()
    split = urlsplit(url)
    host = (split.hostname or "").lower()
    path = split.path or "/"
    path_l = path.lower()
    query_full = generic.parse_query(split.query, limits.max_events) if split.query else {}
    query = _first_values(query_full)
    hdrs = _headers_dict(headers)

    is_aria = "/collector/3.0" in path_l
    is_1ds = "/onecollector/" in path_l
    is_ai = path_l.endswith(("/v2/track", "/v2.1/track")) or (
        path_l.endswith("/track") and ("applicationinsights" in host or host == "dc.services.visualstudio.com")
    )
    collector = is_aria or is_1ds or "apikey" in query or "x-apikey" in query or "qsp" in query

    # -- content encodings: the header first, then (collectors only) the query parameter ---------------
    encodings = compression.split_encodings(hdrs.get("content-encoding"))
    q_enc = compression.split_encodings(query.get("content-encoding")) if collector else []
    if q_enc and (not encodings or q_enc == encodings):
        # Some 1DS clients name the body's encoding in the query instead of a header.
        result.notes.append(f"content-encoding {','.join(q_enc)} from the query string")
        encodings, q_enc = q_enc, []
    data = body
    if content_decoded:
        result.body = body
    elif body:
        dec = compression.decode_body(body, encodings, limits)
        result.notes += dec.notes
        if dec.data is not None and q_enc:
            dec2 = compression.decode_body(dec.data, q_enc, limits, sniff=False, wire_len=len(body))
            result.notes += [*dec2.notes, f"content-encoding {','.join(q_enc)} from the query string"]
            dec = compression.Decoded(dec2.data, dec.notes + dec2.notes, dec2.bomb, dec.error or dec2.error)
        result.bomb = dec.bomb
        if dec.error:
            result.error = dec.error
            result.error_offset = 0 if dec.data is None else len(dec.data)
        result.body = dec.data
        data = dec.data if dec.data is not None else b""

    # -- the body's format ---------------------------------------------------------------------------
    ct = _media_type(hdrs.get("content-type"))
    q_ct = _media_type(query.get("content-type")) if collector else ""
    eff_ct = q_ct or ct
    events: list[Event] = []
    err: DecodeError | None = None
    fmt: str | None = None
    if data:
        head = data[:64].lstrip()[:1]
        if is_aria and head not in (b"{", b"["):
            fmt = "aria"
            events, err = aria.decode_aria(data, onecollector.collector_params(hdrs, query), limits, result.notes)
        elif is_ai and head in (b"{", b"["):
            fmt = "appinsights"
            events, err = decode_appinsights(data, limits, result.notes)
        elif eff_ct == BOND_CT or (_looks_bond(data) and eff_ct not in GRPC_CTS + PROTOBUF_CTS):
            fmt = "1ds-bond"
            params = onecollector.collector_params(hdrs, query)
            events, err = onecollector.decode_bond(data, params, limits, result.notes)
        elif head == b"{" and (is_1ds or (eff_ct in JSON_STREAM_CTS and b'"iKey"' in data[:4096])):
            fmt = "1ds-json"
            params = onecollector.collector_params(hdrs, query)
            events, err = onecollector.decode_json_lines(data, params, limits, result.notes)
        elif ct == "application/x-www-form-urlencoded":
            fmt = "form"
            events = generic.decode_form(data, limits, result.notes)
        elif ct.startswith("multipart/"):
            fmt = "multipart"
            try:
                events = generic.decode_multipart(data, hdrs.get("content-type", ""), limits, result.notes)
            except DecodeError as e:
                err = e
        elif ct in PROTOBUF_CTS or ct in GRPC_CTS:
            fmt = "protobuf"
            try:
                events = generic.decode_protobuf(data, ct in GRPC_CTS, limits, result.notes)
            except DecodeError as e:
                err = e
        elif head in (b"{", b"[") or ct.endswith("json") or ct in JSON_STREAM_CTS:
            fmt = "json"
            if ct in JSON_STREAM_CTS:
                events, err = onecollector.decode_json_lines(data, {}, limits, result.notes, "json")
                for ev in events:
                    ev.name = generic._name(ev.data)
                    ev.data.pop("_collector", None)
            else:
                try:
                    events = generic.decode_json(data, limits, result.notes)
                except DecodeError as e:
                    # NDJSON sent without saying so: several documents, one per line.
                    if b"\n" in data.strip() and head == b"{":
                        events, err2 = onecollector.decode_json_lines(data, {}, limits, [], "json")
                        if events:
                            result.notes.append(f"NDJSON, {len(events)} line(s)")
                            err = err2
                        else:
                            err = e
                    else:
                        err = e
    _set_error(result, err)
    result.format = fmt

    # -- query string and JWTs: their own events, after the body's --------------------------------------
    if query_full:
        events.append(generic.query_event(query_full, len(events)))
    scan = data[:_JWT_SCAN_BYTES] if data else None
    events += generic.find_jwts(headers, scan, len(events), split.query)
    if events and result.format is None:
        result.format = events[0].format
    result.events = events
    return result


def decode_response(
    method: str, url: str, status: int | None, headers: Sequence[tuple[str, str]], body: bytes,
    limits: Limits | None = None, *, content_decoded: bool = False,
) -> DecodeResult:
    """Configuration responses (OneSettings, ECS) become events; anything else returns quickly. Never raises.

    content_decoded: as for :func:`decode_request`.
    """
    try:
        return _decode_response(method, url, status, headers, body or b"", limits or DEFAULT_LIMITS,
                                content_decoded)
    except Exception as e:
        return DecodeResult(error=f"internal decoder error: {type(e).__name__}: {e}")


def _decode_response(method: str, url: str, status: int | None, headers: Sequence[tuple[str, str]],
                     body: bytes, limits: Limits, content_decoded: bool = False) -> DecodeResult:
    result = DecodeResult()
    if not body:
        return result
    encodings: list[str] = []
    for name, value in headers:
        if name.lower() == "content-encoding" and not content_decoded:
            encodings += compression.split_encodings(value)
    split = urlsplit(url)
    host = (split.hostname or "").lower()
    path = split.path or "/"
    kind = "onesettings" if config.is_onesettings(host, path) else "ecs" if config.is_ecs(host, path) else None
    if kind is None:
        if not encodings:
            result.body = body
        elif len(body) <= _CHEAP_RESPONSE_BYTES:
            dec = compression.decode_body(body, encodings, limits, sniff=False)
            result.body, result.bomb, result.notes = dec.data, dec.bomb, dec.notes
        return result
    dec = compression.decode_body(body, encodings, limits, sniff=not content_decoded)
    result.notes += dec.notes
    result.bomb = dec.bomb
    result.body = dec.data
    result.format = kind
    if dec.data is None:
        result.error = dec.error
        result.error_offset = 0
        return result
    if status is not None and not 200 <= status < 300 and dec.data.lstrip()[:1] not in (b"{", b"["):
        # An error page from a config service is not configuration; keep it quiet rather than an error.
        result.notes.append(f"{kind} response with status {status} and no JSON body: not decoded")
        return result
    query = generic.parse_query(split.query, limits.max_events) if split.query else {}
    flat = {k: (v[0] if isinstance(v, list) else v) for k, v in query.items()}
    try:
        if kind == "onesettings":
            result.events = config.decode_onesettings(path, flat, status, dec.data, limits, result.notes)
        else:
            result.events = config.decode_ecs(path, flat, status, dec.data, limits, result.notes)
    except DecodeError as e:
        _set_error(result, e)
    return result
