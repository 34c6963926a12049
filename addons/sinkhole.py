"""Sinkhole (lab mode): answer matching requests locally so nothing leaves the machine.

Option ``teletap_sinkhole`` takes selectors (repeatable): ``all``, ``category:C``, ``signature:ID``,
``vendor:V``, ``undocumented``. A request matching any of them is answered by teletap with a success the
client understands, so it neither retries nor changes behaviour:

* OneCollector (1DS) and Aria collectors: ``{"acc": N}`` with N = the number of events in the body;
* Application Insights: ``{"itemsReceived": N, "itemsAccepted": N, "errors": []}``;
* anything else: ``204 No Content``.

The selector that matched is stored in ``flow.metadata["teletap_sinkholed"]`` (the capture addon records it).
With ``all``, ``connection_strategy`` is set to ``lazy`` so mitmproxy does not connect upstream before a
request needs it, and the ``server_connect`` hook refuses any upstream connection that is still attempted
(TCP/UDP streams, passed-through TLS, WebSocket upgrades), the same way mitmproxy refuses to connect to itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import server_hooks

from .decoders import decode_request
from .signatures import _ID_RE, CATEGORIES

if TYPE_CHECKING:
    from .signatures import Matcher, Signature

log = logging.getLogger("teletap")

SELECTOR_HELP = "all, category:C, signature:ID, vendor:V, undocumented"


@dataclass(frozen=True)
class Selector:
    text: str  # as the user wrote it; recorded in flow metadata
    kind: str  # all | category | signature | vendor | undocumented
    value: str | None = None

    def matches(self, sig: Signature | None) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "undocumented":
            return sig is None
        if sig is None:
            return False
        if self.kind == "category":
            return sig.category == self.value
        if self.kind == "signature":
            return sig.id == self.value
        return sig.vendor.casefold() == (self.value or "").casefold()


def parse_selector(text: str) -> Selector:
    """A :class:`Selector`, or ValueError with a message naming what was expected."""
    s = text.strip()
    if s in ("all", "undocumented"):
        return Selector(s, s)
    kind, sep, value = s.partition(":")
    value = value.strip()
    if not sep or kind not in ("category", "signature", "vendor"):
        raise ValueError(f"invalid sinkhole selector {text!r}; expected one of: {SELECTOR_HELP}")
    if not value:
        raise ValueError(f"invalid sinkhole selector {text!r}: expected a value after '{kind}:'")
    if kind == "category" and value not in CATEGORIES:
        raise ValueError(f"invalid sinkhole selector {text!r}: unknown category; expected one of: "
                         + ", ".join(CATEGORIES))
    if kind == "signature" and not _ID_RE.fullmatch(value):
        raise ValueError(f"invalid sinkhole selector {text!r}: expected a signature id "
                         "(lower-case letters, digits, '.', '_' or '-')")
    return Selector(s, kind, value)


# -- counting events for the acknowledgement ---------------------------------------------------------------


# Formats whose events a collector acknowledges; query-string and JWT events are not part of the batch.
_BATCH_FORMATS = frozenset({"1ds-bond", "1ds-json", "aria", "appinsights"})


def batch_event_count(flow: http.HTTPFlow) -> int:
    """How many telemetry events the request carried, as the collector would count them.

    Lab mode only: this decodes on the event loop, which is acceptable for traffic that never leaves.
    The decoders never raise and bound decompression, so a bomb cannot cost more than their limits.
    """
    req = flow.request
    if not req.raw_content:
        return 0
    result = decode_request(req.method, req.pretty_url, list(req.headers.items(multi=True)), req.raw_content)
    n = sum(1 for event in result.events if event.format in _BATCH_FORMATS)
    return n or 1  # an undecodable batch is still acknowledged, so the client does not retry forever


def protocol_of(flow: http.HTTPFlow, sig: Signature | None) -> str:
    """onecollector | aria-collector | app-insights | other, from the signature or else the path."""
    protocol = sig.expect.get("protocol") if sig is not None else None
    path = flow.request.path.split("?", 1)[0].lower()
    if "/onecollector/" in path:
        return "onecollector"
    if "/collector/3.0" in path:
        return "aria-collector"
    if path.rstrip("/").endswith(("/v2/track", "/v2.1/track")):
        return "app-insights"
    if protocol in ("onecollector", "aria-collector", "app-insights") and flow.request.method == "POST":
        return protocol
    return "other"


def make_response(flow: http.HTTPFlow, sig: Signature | None) -> http.Response:
    protocol = protocol_of(flow, sig) if flow.request.method == "POST" else "other"
    headers = {"content-type": "application/json", "x-teletap-sinkhole": "1"}
    if protocol in ("onecollector", "aria-collector"):
        body = json.dumps({"acc": batch_event_count(flow)})
    elif protocol == "app-insights":
        n = batch_event_count(flow)
        body = json.dumps({"itemsReceived": n, "itemsAccepted": n, "errors": []})
    else:
        return http.Response.make(204, b"", {"x-teletap-sinkhole": "1"})
    return http.Response.make(200, body.encode(), headers)


class Sinkhole:
    def __init__(self, matcher: Callable[[], Matcher | None]):
        self._matcher = matcher
        self.selectors: list[Selector] = []
        self.all = False
        self._restore_strategy: str | None = None

    def load(self, loader: Any) -> None:
        loader.add_option(
            "teletap_sinkhole", Sequence[str], [],
            f"Answer matching requests locally so they never leave (lab mode). Selectors: {SELECTOR_HELP}. "
            "With 'all', no upstream connection is ever opened.",
        )

    def configure(self, updated: set[str]) -> None:
        if "teletap_sinkhole" not in updated:
            return
        selectors = []
        for text in ctx.options.teletap_sinkhole:
            try:
                selectors.append(parse_selector(text))
            except ValueError as e:
                raise exceptions.OptionsError(str(e)) from None
        self.selectors = selectors
        wants_all = self.all = any(s.kind == "all" for s in selectors)
        # Lazy: mitmproxy connects upstream only when a request needs it, and with 'all' none does.
        if "connection_strategy" not in ctx.options:  # no proxy core loaded (e.g. an offline tool)
            return
        if wants_all and ctx.options.connection_strategy != "lazy":
            self._restore_strategy = ctx.options.connection_strategy
            ctx.options.update(connection_strategy="lazy")
        elif not wants_all and self._restore_strategy is not None:
            previous, self._restore_strategy = self._restore_strategy, None
            ctx.options.update(connection_strategy=previous)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # The guarantee behind 'all': whatever the protocol, no connection leaves the machine.
        if self.all and data.server.error is None:
            data.server.error = "teletap sinkhole 'all': upstream connections are disabled (lab mode)"

    def _signature(self, flow: http.HTTPFlow) -> Signature | None:
        matcher = self._matcher()
        if matcher is None:  # signatures not loaded (yet): everything counts as undocumented
            return None
        req = flow.request
        return matcher.match(req.pretty_host, req.path, req.method, req.port, req.headers.get("content-type"))

    def _decide(self, flow: http.HTTPFlow) -> tuple[Selector | None, Signature | None]:
        needs_sig = any(s.kind != "all" for s in self.selectors)
        sig = None
        try:
            sig = self._signature(flow) if needs_sig else None
        except Exception as e:  # a matcher failure must not leak the request upstream when 'all' is set
            log.error("teletap: sinkhole matching failed for %s: %s", flow.request.pretty_host, e)
        for selector in self.selectors:
            if selector.matches(sig):
                if not needs_sig:
                    try:
                        sig = self._signature(flow)  # only to pick the protocol-appropriate answer
                    except Exception:
                        sig = None
                return selector, sig
        return None, None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Decide before the body arrives: the flag tells later addons (capture) not to stream this body,
        # because streaming would open the upstream connection the sinkhole exists to avoid.
        if not self.selectors or flow.response is not None:
            return
        selector, _ = self._decide(flow)
        if selector is not None:
            flow.metadata["teletap_sinkholed"] = selector.text

    def request(self, flow: http.HTTPFlow) -> None:
        if not self.selectors or flow.response is not None or flow.error is not None:
            return
        selector, sig = self._decide(flow)
        if selector is None:
            flow.metadata.pop("teletap_sinkholed", None)
            return
        flow.response = make_response(flow, sig)
        flow.metadata["teletap_sinkholed"] = selector.text
