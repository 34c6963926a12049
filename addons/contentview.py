"""mitmweb content view "teletap decoded": 1DS (Bond and JSON), Aria and Application Insights bodies as
readable events, using the same decoders as capture.

Register with ``register()`` (e.g. from an addon's ``load``) and remove with ``unregister()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from mitmproxy import contentviews, http
from mitmproxy.contentviews import base

from teletap.decoders import DecodeResult, decode_request, decode_response

NAME = "teletap decoded"
_TELEMETRY_PATHS = ("/onecollector/", "/collector/3.0", "/v2/track", "/v2.1/track")
_TELEMETRY_CTS = ("application/bond-compact-binary", "application/x-json-stream")
_MAX_LINES = 20_000  # what mitmweb can show before the user scrolls forever


def _decode(data: bytes, content_type: str | None, flow: Any, message: Any) -> DecodeResult:
    if isinstance(message, http.Message) and isinstance(flow, http.HTTPFlow):
        # The raw body and all headers give the decoders what the wire carried (mitmproxy's own
        # content decoding cannot see gzip labelled as deflate).
        raw = message.raw_content or b""
        headers = [(k, v) for k, v in message.headers.items(multi=True)]
        if isinstance(message, http.Response):
            return decode_response(flow.request.method, flow.request.url, message.status_code, headers, raw)
        return decode_request(flow.request.method, flow.request.url, headers, raw)
    headers = [("Content-Type", content_type)] if content_type else []
    return decode_request("POST", "https://contentview.invalid/", headers, data)


def _lines(result: DecodeResult) -> Iterator[base.TViewLine]:
    for note in result.notes:
        yield [("comment", f"# {note}")]
    if result.error:
        yield [("error", f"decode error at byte {result.error_offset}: {result.error}")]
    count = 0
    for ev in result.events:
        head = f"#{ev.position} {ev.format} {ev.name or ''} {ev.time or ''}".rstrip()
        yield [("header", head)]
        for key in ("ikey", "tenant_id", "sdk_version", "app_id", "app_version", "os_name", "os_version",
                    "device_id", "user_id"):
            v = getattr(ev, key)
            if v:
                yield [("key", f"  {key}: "), ("text", str(v))]
        for p in ev.pii:
            yield [("key", "  vendor annotation: "), ("error", f"{p.get('path')} = {p.get('kind')}")]
        for line in json.dumps(ev.data, indent=2, ensure_ascii=False).splitlines():
            count += 1
            if count > _MAX_LINES:
                yield [("error", f"… truncated after {_MAX_LINES} lines")]
                return
            yield [("text", "  " + line)]


class TeletapView(base.View):
    name = NAME

    def __call__(self, data: bytes, *, content_type: str | None = None, flow: Any = None,
                 http_message: Any = None, **unknown_metadata: Any) -> base.TViewResult:
        result = _decode(data, content_type, flow, http_message)
        n = len(result.events)
        desc = f"teletap {result.format or 'nothing decoded'}: {n} event{'s' * (n != 1)}"
        return desc, _lines(result)

    def render_priority(self, data: bytes, *, content_type: str | None = None, flow: Any = None,
                        http_message: Any = None, **unknown_metadata: Any) -> float:
        # Only claim bodies that are telemetry; everything else keeps mitmproxy's own views.
        ct = (content_type or "").split(";")[0].strip().lower()
        if ct in _TELEMETRY_CTS:
            return 2
        if isinstance(flow, http.HTTPFlow) and isinstance(http_message, http.Request):
            path = flow.request.path.lower()
            if any(p in path for p in _TELEMETRY_PATHS):
                return 2
        return 0


_view: TeletapView | None = None


def register() -> TeletapView:
    """Add the view to mitmproxy (idempotent)."""
    global _view
    if _view is None:
        _view = TeletapView()
        contentviews.add(_view)
    return _view


def unregister() -> None:
    global _view
    if _view is not None:
        contentviews.remove(_view)
        _view = None
