"""HAR 1.2: entries → flow records (import) and stored flows → entries (export).

What tools write (checked against their exporters):

- mitmproxy 11 (``--set hardump=PATH``, ``save.har``; ``.zhar`` is zlib-compressed): bodies with their
  content-encoding removed. Response bodies that are mostly binary are base64 (``content.encoding``);
  request bodies are always text (only for POST/PUT/PATCH), decoded with the Content-Type charset, UTF-8 for
  JSON, else **latin-1**, which keeps binary bodies (Bond) byte-exact. Errors: ``status`` 0 and ``_error``.
- Chrome / Edge / Firefox DevTools: decoded text, ``encoding: base64`` for binary responses, HTTP/2
  pseudo-headers (``:authority`` …) in the header lists, ``_error`` / status 0 for failed requests.
- Fiddler: a UTF-8 byte-order mark before the JSON; Charles: base64 for binary content.

HAR holds bodies after content-encoding removal, so the records built here carry the decoded body and no
Content-Encoding header (unless the bytes are verifiably still encoded), exactly as ``redecode`` does
for stored bodies. ``request_sha256`` is then the hash of the body **as exported**, not as sent, unless a
teletap export carried the original hash (``_teletap``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .records import Body, Headers, HttpFlowRecord, WebSocketMessageRecord
from .schema import ANALYSIS_DEFERRED

MAX_HEADERS = 10_000  # per message; hostile files must not make one record unbounded in other ways
_HEX64 = re.compile(r"[0-9a-f]{64}")


class HarEntryError(ValueError):
    """One entry cannot be turned into a flow; the message says which field and why."""


def _str(value: Any, what: str, *, required: bool = False, default: str = "") -> str:
    if value is None:
        if required:
            raise HarEntryError(f"{what} is missing")
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise HarEntryError(f"{what} must be a string, not {type(value).__name__}")


def _obj(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HarEntryError(f"{what} must be an object, not {type(value).__name__}")
    return value


def _headers(value: Any, what: str) -> Headers:
    if value is None:
        return []
    if not isinstance(value, list):
        raise HarEntryError(f"{what} must be a list")
    if len(value) > MAX_HEADERS:
        raise HarEntryError(f"{what} has {len(value)} headers (more than {MAX_HEADERS})")
    out: Headers = []
    for i, h in enumerate(value):
        if not isinstance(h, dict):
            raise HarEntryError(f"{what}[{i}] must be an object with name and value")
        name = _str(h.get("name"), f"{what}[{i}].name", required=True)
        if name.startswith(":"):
            continue  # HTTP/2 pseudo-headers (DevTools); mitmproxy does not list them either
        out.append((name, _str(h.get("value"), f"{what}[{i}].value")))
    return out


def _header(headers: Headers, name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def _time(value: Any, what: str) -> float:
    text = _str(value, what, required=True)
    try:
        # fromisoformat (3.11) takes "Z" and offsets; naive times are taken as UTC, as HAR has no zone-less form
        parsed = datetime.fromisoformat(text)
    except ValueError as e:
        raise HarEntryError(f"{what} is not an ISO 8601 time: {text[:60]!r}") from e
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _charset_for(content_type: str, text: str, mitmproxy_creator: bool) -> str:
    """The charset the exporter used to turn body bytes into text (mitmproxy's rule, see module doc)."""
    from mitmproxy.net.http.headers import infer_content_encoding

    # infer_content_encoding sniffs <meta charset> / @charset in the first bytes; ASCII is enough for that
    enc = infer_content_encoding(content_type, text[:2048].encode("latin-1", "replace"))
    if enc == "latin-1" and not mitmproxy_creator:
        enc = "utf-8"  # browsers and other tools write Unicode text of what was (nearly always) UTF-8
    return enc


def text_to_bytes(text: str, content_type: str, mitmproxy_creator: bool) -> bytes:
    """Invert the exporter's bytes → text step as exactly as possible."""
    try:
        return text.encode(_charset_for(content_type, text, mitmproxy_creator))
    except (UnicodeEncodeError, LookupError):
        pass
    try:
        return text.encode("utf-8", "surrogateescape")  # mitmproxy's fallback for undecodable bodies
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")  # lone surrogates from a JSON \ud800 escape


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError) as e:
        raise HarEntryError(f"{what} is marked base64 but is not valid base64 ({e})") from e


def _content(holder: dict, what: str, content_type: str, mitmproxy_creator: bool) -> bytes | None:
    """Body bytes of a request postData or response content; None when the exporter kept no body."""
    text = holder.get("text")
    encoding = holder.get("encoding")
    if text is None:
        return None
    text = _str(text, f"{what}.text")
    if encoding in (None, ""):
        return text_to_bytes(text, content_type, mitmproxy_creator)
    if isinstance(encoding, str) and encoding.lower() == "base64":
        return _b64(text, f"{what}.text")
    raise HarEntryError(f"{what}.encoding {str(encoding)[:40]!r} is not supported (HAR knows only base64)")


def _still_encoded(body: bytes, content_encoding: str) -> bool:
    """True when ``body`` verifiably still carries ``content_encoding`` (a tool exported wire bytes)."""
    from .decoders.compression import decode_body, split_encodings
    from .decoders.model import Limits

    encodings = [e for e in split_encodings(content_encoding) if e not in ("identity", "none")]
    if not encodings or not body:
        return False
    result = decode_body(body, encodings, Limits(), sniff=False)
    return result.error is None and not any(n.startswith("uncompressed data labelled") for n in result.notes)


def _without_encoding(headers: Headers) -> Headers:
    return [(k, v) for k, v in headers if k.lower() != "content-encoding"]


def _body(data: bytes | None, headers: Headers, declared_size: Any, meta: dict, prefix: str
          ) -> tuple[Body, Headers]:
    """A Body from HAR bytes; drops Content-Encoding when the bytes are already decoded (the usual case)."""
    raw = data if data is not None else b""
    encoding = _header(headers, "content-encoding")
    if encoding is not None and not _still_encoded(raw, encoding):
        headers = _without_encoding(headers)
    sha = meta.get(f"{prefix}_sha256")
    sha = sha if isinstance(sha, str) and _HEX64.fullmatch(sha) else None
    size = meta.get(f"{prefix}_size_wire")
    declared = declared_size if isinstance(declared_size, int) and not isinstance(declared_size, bool) else -1
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        if data is None:
            size = max(declared, 0)  # the exporter left the body out (DevTools without content): size only
        else:
            # bodySize is the size on the wire; trust it only when it can describe the bytes we hold
            size = declared if declared >= len(raw) and (declared > 0 or not raw) else len(raw)
    truncated = bool(meta.get(f"{prefix}_body_truncated")) or (data is None and size > 0)
    return Body(raw=raw if data is not None else None, size_wire=size, sha256=sha, truncated=truncated), headers


def _form(params: Any) -> bytes | None:
    if not isinstance(params, list) or not params:
        return None
    pairs = [(_str(p.get("name"), "params.name"), _str(p.get("value"), "params.value"))
             for p in params if isinstance(p, dict)]
    return urlencode(pairs).encode()


def entry_record(entry: Any, *, flow_id: str, source: str, mitmproxy_creator: bool = False) -> HttpFlowRecord:
    """One HAR entry → the record live capture would have built. Raises HarEntryError on a broken entry."""
    if not isinstance(entry, dict):
        raise HarEntryError(f"an entry must be an object, not {type(entry).__name__}")
    meta = entry.get("_teletap")
    meta = meta if isinstance(meta, dict) else {}
    request = _obj(entry.get("request"), "request")
    if not request:
        raise HarEntryError("request is missing")
    url = _str(request.get("url"), "request.url", required=True)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise HarEntryError(f"request.url is not a URL: {url[:200]!r} ({e})") from e
    if not parts.scheme or not parts.hostname:
        raise HarEntryError(f"request.url has no scheme or host: {url[:200]!r}")
    scheme = parts.scheme.lower()
    if port is None:
        port = {"https": 443, "wss": 443}.get(scheme, 80)
    method = _str(request.get("method"), "request.method", required=True)
    request_headers = _headers(request.get("headers"), "request.headers")

    post = _obj(request.get("postData"), "request.postData")
    post_type = _str(post.get("mimeType"), "request.postData.mimeType") or (_header(request_headers, "content-type")
                                                                             or "")
    req_data = _content(post, "request.postData", post_type, mitmproxy_creator) if post else None
    if req_data is None and post:
        req_data = _form(post.get("params"))  # HAR: text and params are alternatives
    request_body, request_headers = _body(req_data, request_headers, request.get("bodySize"), meta, "request")
    if req_data is None and not meta.get("request_size_wire"):
        request_body = Body(raw=b"", size_wire=0)  # no body at all (GET), as live capture records it

    started = _time(entry.get("startedDateTime"), "startedDateTime")
    total = entry.get("time")
    total_ms = float(total) if isinstance(total, (int, float)) and not isinstance(total, bool) and total >= 0 else None

    response = _obj(entry.get("response"), "response")
    status_value = response.get("status")
    status = status_value if isinstance(status_value, int) and not isinstance(status_value, bool) else None
    error = entry.get("_error") or response.get("_error") or meta.get("error")
    response_headers: Headers | None = None
    response_body: Body | None = None
    if response and status:  # status 0: no response (mitmproxy and DevTools write this for failed requests)
        response_headers = _headers(response.get("headers"), "response.headers")
        content = _obj(response.get("content"), "response.content")
        resp_type = _str(content.get("mimeType"), "response.content.mimeType") or (
            _header(response_headers, "content-type") or "")
        resp_data = _content(content, "response.content", resp_type, mitmproxy_creator)
        response_body, response_headers = _body(resp_data, response_headers, response.get("bodySize"), meta,
                                                "response")
    else:
        status = None

    path = parts.path or "/"
    query = parts.query
    if method.upper() == "CONNECT":
        path, query = "", ""
    http_version = _str(request.get("httpVersion"), "request.httpVersion")
    client_port = meta.get("client_port")
    server_port = meta.get("server_port")
    return HttpFlowRecord(
        id=flow_id, request_time=started,
        response_time=started + total_ms / 1000 if total_ms is not None and (status is not None or error) else None,
        client_address=_opt_str(meta.get("client_address")),
        client_port=client_port if isinstance(client_port, int) else None,
        server_address=_opt_str(entry.get("serverIPAddress")) or None,
        server_port=server_port if isinstance(server_port, int) else (port if entry.get("serverIPAddress") else None),
        scheme=scheme, host=_opt_str(meta.get("host")) or parts.hostname, port=port, method=method, path=path,
        query=query, url=url, http_version=http_version, status=status,
        request_headers=request_headers, response_headers=response_headers, request_body=request_body,
        response_body=response_body, error=_opt_str(error), sinkhole_rule=_opt_str(meta.get("sinkhole_rule")),
        tls_version=_opt_str(meta.get("tls_version")), sni=_opt_str(meta.get("sni")), source=source,
    )


def websocket_records(entry: dict, flow_id: str) -> list[WebSocketMessageRecord]:
    """``_webSocketMessages`` (DevTools, mitmproxy 11): type send/receive, time (UNIX s), opcode 1 text / 2
    binary (base64 data)."""
    messages = entry.get("_webSocketMessages")
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise HarEntryError("_webSocketMessages must be a list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise HarEntryError(f"_webSocketMessages[{i}] must be an object")
        data = _str(m.get("data"), f"_webSocketMessages[{i}].data")
        is_text = m.get("opcode", 1) != 2
        content = data.encode("utf-8", "surrogatepass") if is_text else _b64(data, f"_webSocketMessages[{i}].data")
        when = m.get("time")
        out.append(WebSocketMessageRecord(
            flow_id=flow_id, time=float(when) if isinstance(when, (int, float)) and not isinstance(when, bool) else 0.0,
            from_client=m.get("type") == "send", is_text=is_text, size=len(content), content=content))
    return out


def _opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)[:1000]


# -- export ---------------------------------------------------------------------------------------------

def _is_text(data: bytes) -> str | None:
    """The body as text when it is UTF-8 without control bytes (other than whitespace); else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text[:65536]):
        return None
    return text


def _har_content(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {"text": ""} if data is not None else {}
    text = _is_text(data)
    if text is not None:
        return {"text": text}
    return {"text": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


def _name_values(headers: Any) -> list[dict[str, str]]:
    return [{"name": str(k), "value": str(v)} for k, v in (headers or [])]


def _decoded_bodies(row: dict[str, Any], request_headers: Headers, response_headers: Headers | None
                    ) -> tuple[bytes | None, bytes | None]:
    """The row's bodies with content-encoding removed, as HAR holds them. A flow whose analysis was deferred
    still holds its bodies as sent: they are decoded here, by the decoders' bounded decompression."""
    from .decoders import decode_request, decode_response

    request_body, response_body = row["request_body"], row["response_body"]
    if row.get("analysis") != ANALYSIS_DEFERRED:
        return request_body, response_body
    url, method = row["url"] or "", row["method"] or "GET"
    if request_body:
        decoded = decode_request(method, url, request_headers, request_body).body
        request_body = decoded if decoded is not None else request_body
    if response_body and response_headers is not None:
        decoded = decode_response(method, url, row["status"], response_headers, response_body).body
        response_body = decoded if decoded is not None else response_body
    return request_body, response_body


def row_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A stored flow row → a HAR 1.2 entry (bodies as stored: content-encoding removed, base64 if binary).

    ``_teletap`` keeps what HAR has no field for (the hashes and sizes of the bodies as sent, client
    address, truncation), so that re-importing the export reproduces the evidence.
    """
    request_headers = json.loads(row["request_headers"] or "[]")
    response_headers = json.loads(row["response_headers"]) if row["response_headers"] else None
    request_body, response_body = _decoded_bodies(row, request_headers, response_headers)
    duration = row["duration_ms"] if row["duration_ms"] is not None and row["duration_ms"] >= 0 else 0
    request: dict[str, Any] = {
        "method": row["method"] or "GET", "url": row["url"] or "", "httpVersion": row["http_version"] or "",
        "cookies": [], "headers": _name_values(request_headers),
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(row["query"] or "", keep_blank_values=True)],
        "headersSize": -1, "bodySize": row["request_size_wire"] if row["request_size_wire"] is not None else -1,
    }
    if request_body or (row["request_size_wire"] or 0) > 0:
        request["postData"] = {"mimeType": row["request_content_type"] or "", **_har_content(request_body)}
    if response_headers is not None and row["status"] is not None:
        location = next((v for k, v in response_headers if str(k).lower() == "location"), "")
        response: dict[str, Any] = {
            "status": row["status"], "statusText": "", "httpVersion": row["http_version"] or "", "cookies": [],
            "headers": _name_values(response_headers),
            # A deferred flow has no decoded size stored yet: the body decoded above gives it.
            "content": {"size": row["response_size"] or (len(response_body or b"")
                                                         if row.get("analysis") == ANALYSIS_DEFERRED else 0),
                        "mimeType": row["response_content_type"] or "", **_har_content(response_body)},
            "redirectURL": location, "headersSize": -1,
            "bodySize": row["response_size_wire"] if row["response_size_wire"] is not None else -1,
        }
    else:
        response = {"status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
                    "content": {"size": 0, "mimeType": ""}, "redirectURL": "", "headersSize": -1, "bodySize": -1}
        if row["error"]:
            response["_error"] = row["error"]
    started = row["request_time"] or "1970-01-01T00:00:00.000Z"
    entry: dict[str, Any] = {
        "startedDateTime": started, "time": duration, "request": request, "response": response, "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": 0, "wait": duration, "receive": 0},
    }
    if row["server_address"]:
        entry["serverIPAddress"] = row["server_address"]
    meta = {key: row[key] for key in (
        "request_sha256", "request_size_wire", "request_body_truncated", "response_sha256", "response_size_wire",
        "response_body_truncated", "request_content_encoding", "client_address", "client_port", "server_port",
        "sni", "tls_version", "sinkhole_rule", "error", "host", "analysis") if row.get(key) not in (None, "", 0)}
    if row.get("_websocket"):
        entry["_resourceType"] = "websocket"
        entry["_webSocketMessages"] = [
            {"type": "send" if m["direction"] == "client-to-server" else "receive",
             "time": datetime.fromisoformat(m["time"]).timestamp() if m["time"] else 0,
             "opcode": 1 if m["is_text"] else 2,
             "data": (m["content"] or b"").decode("utf-8", "replace") if m["is_text"]
             else base64.b64encode(m["content"] or b"").decode("ascii")}
            for m in row["_websocket"]]
    meta["flow_id"] = row["id"]
    meta["session_id"] = row["session_id"]
    entry["_teletap"] = meta
    return entry


def write_har(out: Any, rows: Iterator[dict[str, Any]], *, creator_version: str) -> int:
    """Stream a HAR document to the text file ``out``, one entry at a time. Returns the entry count."""
    out.write('{"log": {"version": "1.2", "creator": ' + json.dumps(
        {"name": "teletap", "version": creator_version}) + ', "pages": [], "entries": [\n')
    count = 0
    for row in rows:
        out.write(("" if count == 0 else ",\n") + json.dumps(row_entry(row)))
        count += 1
    out.write("\n]}}\n")
    return count
