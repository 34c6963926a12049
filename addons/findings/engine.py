"""FindingsEngine: runs detectors and the known-identifier matcher over one flow and its decoded events."""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

from .detectors import CARD_KEYS, NUMERIC_CARD_CONFIDENCE, detect, geo_valid, key_before, key_has, org_host_regex
from .identifiers import HOST_KINDS, Identifier, KnownHit, KnownMatcher
from .model import Finding, severity_for
from .redact import normalise, preview, value_hash

log = logging.getLogger("teletap.findings")

# Headers that never carry personal data, or only the destination (Host): skipped without scanning.
SKIP_HEADERS = frozenset((
    "host", "content-type", "content-length", "content-encoding", "transfer-encoding", "accept", "accept-encoding",
    "accept-language", "accept-charset", "connection", "keep-alive", "cache-control", "pragma", "te", "upgrade",
    "expect", "if-modified-since", "if-none-match", "if-match", "if-unmodified-since", "range", "date",
    "upgrade-insecure-requests", "dnt", "priority", "content-md5", "x-requested-with", "origin",
))

# PIIKind numbering of the 1DS SDKs (CsProtocol.bond, also used by the JS ext.metadata hints).
PII_KINDS = {
    1: "DistinguishedName", 2: "GenericData", 3: "IPV4Address", 4: "IPv6Address", 5: "MailSubject",
    6: "PhoneNumber", 7: "QueryString", 8: "SipAddress", 9: "SmtpAddress", 10: "Identity", 11: "Uri",
    12: "Fqdn", 13: "IPV4AddressLegacy",
}
_CUSTOMER_CONTENT_NAMES = {"customercontent", "genericcontent", "customercontent_genericcontent"}

MAX_HEADERS = 256
MAX_HEADER_VALUE = 64 * 1024
MAX_URL = 64 * 1024
MAX_QUERY_PARAMS = 512
MAX_EVENTS = 10_000
MAX_NODES = 200_000  # JSON nodes walked over all events of one flow
MAX_DEPTH = 64
MAX_PII_ITEMS = 2_000
MAX_JWTS = 8  # per text
MAX_JWT_STRINGS = 64  # event strings holding tokens, per flow
MAX_FINDINGS = 5_000  # per flow; a pathological body cannot flood the table

_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{2,4096}\.(eyJ[A-Za-z0-9_-]{2,16384})"
                  r"(?:\.[A-Za-z0-9_-]{0,4096})?", re.ASCII)
_BINARY_TYPES = ("image/", "video/", "audio/", "font/", "application/zip", "application/pdf",
                 "application/octet-stream")
_LAT_KEYS = ("lat", "latitude")
_LON_KEYS = ("lon", "lng", "long", "longitude")

# Which candidate wins when several report the same value at the same place.
_RANK_CANARY, _RANK_KNOWN, _RANK_PATTERN = 3, 2, 1


@dataclass(slots=True)
class _Candidate:
    kind: str
    detector: str
    confidence: float
    location: str
    value: str
    event_position: int | None
    span: tuple[int, int] | None
    prefix: str
    rank: int
    vendor: bool = False


def _bytes_text(s: str) -> str:
    """str -> byte text (UTF-8 bytes viewed as latin-1), the space every detector works in."""
    return s.encode("utf-8", "surrogatepass").decode("latin-1")


def _path_join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class FindingsEngine:
    def __init__(self, *, identifiers: Sequence[Identifier] = (), org_hostnames: Sequence[str] = (), key: bytes,
                 store_clear: bool = False, max_scan_bytes: int = 4 * 1024 * 1024, min_confidence: float = 0.5):
        if not isinstance(key, bytes | bytearray):
            raise TypeError("key must be bytes")
        self.key = bytes(key)
        if not self.key:
            # Still an HMAC, but anyone can recompute it: e-mail addresses become guessable from the hash.
            log.warning("teletap: findings value hashes use an empty key; configure a secret key")
        self.store_clear = store_clear
        self.max_scan_bytes = max(0, int(max_scan_bytes))
        self.min_confidence = min_confidence
        self.known = KnownMatcher(identifiers)
        hosts = [*org_hostnames, *(i.value for i in identifiers if i.kind in HOST_KINDS)]
        self.org_hosts = org_host_regex(hosts)

    # -- public -------------------------------------------------------------------------------------
    def scan(self, *, url: str, request_headers: Sequence[tuple[str, str]], body: bytes | None,
             content_type: str | None, events: Sequence[Any], data_flow: str | None) -> list[Finding]:
        """Findings for one request. Never raises: hostile traffic is normal input."""
        out: list[_Candidate] = []
        for stage, args in ((self._scan_url, (url,)), (self._scan_headers, (request_headers,)),
                            (self._scan_body, (body, content_type)), (self._scan_events, (events,))):
            try:
                stage(*args, out=out)  # type: ignore[operator]
            except Exception as e:  # a detector bug must cost one stage, not the flow's findings
                log.error("teletap: findings stage %s failed: %s: %s", stage.__name__, type(e).__name__, e)
        try:
            return self._finish(out, data_flow if isinstance(data_flow, str) else None)
        except Exception as e:
            log.error("teletap: findings could not be assembled: %s: %s", type(e).__name__, e)
            return []

    # -- text scanning ------------------------------------------------------------------------------
    def _scan_text(self, t: str, *, location: str, out: list[_Candidate], default_key: str | None = None,
                   body_offset: int | None = None, patterns: bool = True, detector_suffix: str = "",
                   fixed_span: tuple[int, int] | None = None) -> None:
        """Scan byte text `t`. body_offset: offset of t in the body (spans are reported); fixed_span: the
        span to report instead (text decoded out of a token, e.g. a JWT)."""
        if not t:
            return

        def ctx(pos: int) -> str | None:
            return key_before(t, pos) or default_key

        def span(s: int, e: int) -> tuple[int, int] | None:
            if fixed_span is not None:
                return fixed_span
            return (body_offset + s, body_offset + e) if body_offset is not None else None

        if patterns:
            hint = t.lower() + ("\x00" + default_key.lower() if default_key else "")
            for h in detect(t, ctx, self.org_hosts, hint, self.min_confidence):
                out.append(_Candidate(h.kind, h.detector + detector_suffix, h.confidence, location, h.value, None,
                                      span(h.start, h.end), h.prefix, _RANK_PATTERN))
        for k in self.known.find(t):
            out.append(self._known_candidate(k, location, None, span(k.start, k.end), detector_suffix))
        if "eyJ" in t and not detector_suffix:
            self._scan_jwts(t, location=location, out=out, default_key=default_key, body_offset=body_offset)

    def _known_candidate(self, k: KnownHit, location: str, event_position: int | None,
                         span: tuple[int, int] | None, suffix: str = "") -> _Candidate:
        kind = k.identifier.finding_kind
        return _Candidate(kind, k.detector + suffix, 0.99 if kind == "canary" else 0.95, location, k.identifier.value,
                          event_position, span, "", _RANK_CANARY if kind == "canary" else _RANK_KNOWN)

    def _scan_jwts(self, t: str, *, location: str, out: list[_Candidate], default_key: str | None,
                   body_offset: int | None) -> None:
        """Bearer tokens carry the user's claims (upn, oid, name) in a base64url payload: decode and scan."""
        for n, m in enumerate(_JWT.finditer(t)):
            if n >= MAX_JWTS:
                break
            seg = m.group(1)
            try:
                payload = base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
            except (binascii.Error, ValueError):
                continue
            fixed = (body_offset + m.start(), body_offset + m.end()) if body_offset is not None else None
            self._scan_text(payload.decode("latin-1"), location=location, out=out, default_key=default_key,
                            detector_suffix="+jwt", fixed_span=fixed)

    # -- URL ----------------------------------------------------------------------------------------
    def _scan_url(self, url: str, *, out: list[_Candidate]) -> None:
        if not isinstance(url, str) or not url:
            return
        url = url[:MAX_URL]
        try:
            parts = urlsplit(url)
            base, query, fragment = f"{parts.scheme}://{parts.netloc}", parts.query, parts.fragment
            path = parts.path
        except ValueError:
            base, path, query, fragment = "", url, "", ""
        # The host is the destination, recorded with the flow: only known identifiers are looked for in it.
        if base:
            for k in self.known.find(_bytes_text(base)):
                out.append(self._known_candidate(k, "url", None, None))
        rest = path + (f"#{fragment}" if fragment else "")
        self._scan_raw_and_decoded(rest, unquote(rest), location="url", out=out, key=None)
        for pair in query.split("&")[:MAX_QUERY_PARAMS]:
            if not pair:
                continue
            name, _, value = pair.partition("=")
            pname = unquote_plus(name)[:128]
            self._scan_raw_and_decoded(value, unquote_plus(value), location=f"query:{pname}", out=out, key=pname)

    def _scan_raw_and_decoded(self, raw: str, decoded: str, *, location: str, out: list[_Candidate],
                              key: str | None) -> None:
        found: list[_Candidate] = []
        self._scan_text(_bytes_text(raw), location=location, out=found, default_key=key)
        out.extend(found)
        if decoded != raw:
            # The decoded text is the same occurrence seen again: keep only what the raw form hid.
            seen = {(c.kind, c.value) for c in found}
            extra: list[_Candidate] = []
            self._scan_text(_bytes_text(decoded), location=location, out=extra, default_key=key)
            out.extend(c for c in extra if (c.kind, c.value) not in seen)

    # -- headers ------------------------------------------------------------------------------------
    def _scan_headers(self, headers: Sequence[tuple[str, str]], *, out: list[_Candidate]) -> None:
        for n, item in enumerate(headers or ()):
            if n >= MAX_HEADERS:
                break
            try:
                name, value = item
            except (TypeError, ValueError):
                continue
            name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
            value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            lname = name.strip().lower()
            if lname in SKIP_HEADERS or lname.startswith("sec-") or not value:
                continue
            self._scan_text(_bytes_text(value[:MAX_HEADER_VALUE]), location=f"header:{lname}", out=out,
                            default_key=lname)

    # -- body ---------------------------------------------------------------------------------------
    def _scan_body(self, body: bytes | None, content_type: str | None, *, out: list[_Candidate]) -> None:
        if not body or not isinstance(body, bytes | bytearray | memoryview):
            return
        data = bytes(body[:self.max_scan_bytes])
        ctype = (content_type or "").lower() if isinstance(content_type, str) else ""
        # Pattern detectors on images or archives report noise; planted values are still looked for.
        binary = ctype.startswith(_BINARY_TYPES)
        self._scan_text(data.decode("latin-1"), location="body", out=out, body_offset=0, patterns=not binary)

    # -- decoded events -----------------------------------------------------------------------------
    def _scan_events(self, events: Sequence[Any], *, out: list[_Candidate]) -> None:
        # (event position, path, byte text, came from a JSON number)
        segments: list[tuple[int | None, str, str, bool]] = []
        budget = [self.max_scan_bytes, MAX_NODES]
        for n, ev in enumerate(events or ()):
            if n >= MAX_EVENTS or budget[0] <= 0 or budget[1] <= 0:
                break
            position, data, pii = self._event_parts(ev)
            try:
                self._walk(data, position, segments, budget, out)
            except Exception as e:
                log.error("teletap: walking event %s failed: %s: %s", position, type(e).__name__, e)
            try:
                self._vendor_annotations(data, pii, position, out)
            except Exception as e:
                log.error("teletap: vendor PII annotations of event %s failed: %s: %s", position, type(e).__name__, e)
        if not segments:
            return
        # One text for all events: each detector and the automaton run once per flow, not per string.
        starts: list[int] = []
        pieces: list[str] = []
        numeric = [n for _, _, _, n in segments]
        offset = 0
        for _, _, text, _ in segments:
            starts.append(offset)
            pieces.append(text)
            offset += len(text) + 1
        big = "\x00".join(pieces)

        def seg_of(pos: int) -> int:
            return bisect.bisect_right(starts, pos) - 1

        def ctx(pos: int) -> str | None:
            i = seg_of(pos)
            floor = starts[i]
            # Most event strings are plain values: look for "key:"/"key=" inside only if one can be there.
            if big.find(":", floor, pos) >= 0 or big.find("=", floor, pos) >= 0:
                return key_before(big, pos, floor=floor) or segments[i][1]
            return segments[i][1]

        def place(start: int) -> tuple[str, int | None]:
            i = seg_of(start)
            return f"event:{segments[i][1]}", segments[i][0]

        hint = big.lower() + "\x00" + "\x00".join(dict.fromkeys(p for _, p, _, _ in segments)).lower()
        for h in detect(big, ctx, self.org_hosts, hint, self.min_confidence):
            if h.kind == "payment-card" and h.confidence > NUMERIC_CARD_CONFIDENCE and \
                    numeric[seg_of(h.start)] and not key_has(ctx(h.start), CARD_KEYS):
                h.confidence = NUMERIC_CARD_CONFIDENCE  # a JSON number: see detectors.json_number_at
            loc, position = place(h.start)
            out.append(_Candidate(h.kind, h.detector, h.confidence, loc, h.value, position, None, h.prefix,
                                  _RANK_PATTERN))
        for k in self.known.find(big):
            loc, position = place(k.start)
            out.append(self._known_candidate(k, loc, position, None))
        if "eyJ" in big:
            with_tokens = [seg for seg in segments if "eyJ" in seg[2]]
            for position, path, text, _ in with_tokens[:MAX_JWT_STRINGS]:
                sub: list[_Candidate] = []
                self._scan_jwts(text, location=f"event:{path}", out=sub, default_key=path, body_offset=None)
                for c in sub:
                    c.event_position = position
                out.extend(sub)

    @staticmethod
    def _event_parts(ev: Any) -> tuple[int | None, Any, Any]:
        if isinstance(ev, dict):
            position, data, pii = ev.get("position"), ev.get("data"), ev.get("pii")
        else:
            position, data, pii = (getattr(ev, "position", None), getattr(ev, "data", None),
                                   getattr(ev, "pii", None))
        return (position if isinstance(position, int) and not isinstance(position, bool) else None), data, pii

    def _walk(self, data: Any, position: int | None, segments: list[tuple[int | None, str, str, bool]],
              budget: list[int], out: list[_Candidate]) -> None:
        """Depth-first over JSON-like data (iterative: hostile nesting must not hit the recursion limit)."""
        stack: list[tuple[str, Any, int]] = [("", data, 0)]
        while stack and budget[0] > 0 and budget[1] > 0:
            path, node, depth = stack.pop()
            budget[1] -= 1
            number = False
            if isinstance(node, str):
                text = _bytes_text(node[:budget[0]])
            elif isinstance(node, bool) or node is None:
                continue
            elif isinstance(node, int | float):
                text, number = repr(node), True
            elif isinstance(node, bytes | bytearray):
                text = bytes(node[:budget[0]]).decode("latin-1")
            elif isinstance(node, dict):
                if depth < MAX_DEPTH:
                    self._geo_keys(node, path, position, out)
                    items = list(node.items())
                    for k, v in reversed(items[:budget[1]]):
                        child = _path_join(path, k if isinstance(k, str) else str(k))
                        stack.append((child, v, depth + 1))
                        if isinstance(k, str) and len(k) >= 6 and ("@" in k or "%40" in k):
                            # Maps keyed by address ({"jane@…": …}); other keys are field names.
                            segments.append((position, child, _bytes_text(k[:256]), False))
                continue
            elif isinstance(node, list | tuple):
                if depth < MAX_DEPTH:
                    for i in range(min(len(node), budget[1]) - 1, -1, -1):
                        stack.append((_path_join(path, i), node[i], depth + 1))
                continue
            else:
                continue
            if text:
                budget[0] -= len(text) + 1
                segments.append((position, path, text, number))

    def _geo_keys(self, node: dict, path: str, position: int | None, out: list[_Candidate]) -> None:
        lat = lon = None
        if len(node) < 2:
            return
        for k, v in node.items():
            if isinstance(k, str) and len(k) <= 9:
                lk = k.lower()
                if lk in _LAT_KEYS:
                    lat = v
                elif lk in _LON_KEYS:
                    lon = v
        if lat is None or lon is None or isinstance(lat, bool) or isinstance(lon, bool):
            return
        try:
            la, lo = float(lat), float(lon)
        except (TypeError, ValueError, OverflowError):
            return
        if geo_valid(la, lo) and la != int(la):  # whole degrees are a region setting, not a position
            out.append(_Candidate("geo", "context:geo", 0.9, f"event:{path}" if path else "event:", f"{lat},{lon}",
                                  position, None, "", _RANK_PATTERN))

    def _vendor_annotations(self, data: Any, pii: Any, position: int | None, out: list[_Candidate]) -> None:
        if not isinstance(pii, list | tuple):
            return
        for item in pii[:MAX_PII_ITEMS]:
            if not isinstance(item, dict):
                continue
            kind = vendor_kind(item)
            if kind is None:
                continue
            raw_path = item.get("path")
            found, value, canonical = resolve_path(data, raw_path)
            if "value" in item:
                value, found = item["value"], True
            elif not found:
                for alt in ("raw_content", "RawContent", "rawContent"):
                    if alt in item:
                        value, found = item[alt], True
                        break
            text = value if isinstance(value, str) else (
                json.dumps(value, ensure_ascii=False, default=str)[:4096] if found else "")
            if canonical is None:
                canonical = raw_path if isinstance(raw_path, str) else ".".join(map(str, raw_path or ()))
            out.append(_Candidate(kind, "vendor-annotation", 1.0, f"event:{canonical}", text, position, None, "",
                                  _RANK_PATTERN, vendor=True))

    # -- assembly -----------------------------------------------------------------------------------
    def _finish(self, candidates: Iterable[_Candidate], data_flow: str | None) -> list[Finding]:
        groups: dict[tuple[str, int | None, str, bool], list[tuple[_Candidate, str]]] = {}
        hashes: dict[str, str] = {}  # one HMAC per distinct value: batches repeat the same values
        for c in candidates:
            if c.confidence < self.min_confidence:
                continue
            norm = normalise(c.kind, c.value)
            h = hashes.get(norm)
            if h is None:
                h = hashes[norm] = value_hash(self.key, norm)
            groups.setdefault((c.location, c.event_position, h, c.vendor), []).append((c, norm))
        findings: list[Finding] = []
        for (location, position, h, _), members in groups.items():
            top = max(c.rank for c, _ in members)
            kept: dict[tuple[str, str], list[_Candidate]] = {}
            for c, _ in members:
                if c.rank == top:
                    kept.setdefault((c.kind, c.detector), []).append(c)
            # Spans of outranked candidates (a regex e-mail under a known e-mail) still need blanking.
            leftover = sorted({c.span for c, _ in members if c.rank != top and c.span is not None})
            for (kind, detector), cs in kept.items():
                best = max(cs, key=lambda c: c.confidence)
                spans = sorted({c.span for c in cs if c.span is not None} | set(leftover))
                leftover = []
                findings.append(Finding(
                    kind=kind, detector=detector, confidence=round(best.confidence, 3),
                    severity=severity_for(kind, data_flow), location=location,
                    preview=(best.prefix + preview(_VENDOR_PREVIEW.get(kind, kind), best.value)
                             if best.value else "(value not found)"),
                    value_hash=h, value=best.value if self.store_clear else None, event_position=position,
                    span=spans[0] if spans else None, extra_spans=tuple(spans[1:]),
                ))
                if len(findings) >= MAX_FINDINGS:
                    return findings
        return _fold_body_into_events(findings)


def _fold_body_into_events(findings: list[Finding]) -> list[Finding]:
    """A value found in the raw body and again in a decoded event is one datum: report it once, at its
    event path (which says what the field is), carrying the body spans along so blanking still works."""
    in_events: dict[tuple[str, str], Finding] = {}
    for f in findings:
        if f.event_position is not None and f.detector != "vendor-annotation":
            in_events.setdefault((f.kind, f.value_hash), f)
    if not in_events:
        return findings
    out = []
    for f in findings:
        target = in_events.get((f.kind, f.value_hash)) if f.location == "body" else None
        if target is None:
            out.append(f)
            continue
        spans = ([f.span] if f.span else []) + list(f.extra_spans)
        target.extra_spans = tuple(sorted(set(target.extra_spans) | set(spans)))
    return out


# Vendor kinds whose values have a recognisable shape get the matching preview.
_VENDOR_PREVIEW = {"vendor-pii:SmtpAddress": "email", "vendor-pii:SipAddress": "email",
                   "vendor-pii:IPV4Address": "ipv4-public", "vendor-pii:IPV4AddressLegacy": "ipv4-public",
                   "vendor-pii:IPv6Address": "ipv6-public"}


def vendor_kind(item: dict) -> str | None:
    """'vendor-pii:<Kind>' or 'customer-content' for one annotation, None if it says nothing."""
    for flag in ("customer_content", "customerContent", "CustomerContent"):
        if item.get(flag):
            return "customer-content"
    kind = item.get("kind", item.get("Kind"))
    if isinstance(kind, bool):
        return None
    if isinstance(kind, int):
        if kind == 32:
            return "customer-content"
        name = PII_KINDS.get(kind)
        return f"vendor-pii:{name}" if name else (f"vendor-pii:{kind}" if kind else None)
    if isinstance(kind, str) and kind.strip():
        name = kind.strip().split(".")[-1][:64]
        if name.lower() in _CUSTOMER_CONTENT_NAMES:
            return "customer-content"
        if name.lower() == "notset":
            return None
        return f"vendor-pii:{name}"
    return None


_PATH_TOKEN = re.compile(r"[^.\[\]]+")
_ROOT_HOPS = ("data", "baseData", "properties")


def resolve_path(data: Any, path: Any) -> tuple[bool, Any, str | None]:
    """Find the value an annotation points at. Accepts "a.b[2].c", "/a/b", ["a", "b"]; keys that
    themselves contain dots ("Data.Collection") are tried longest-first. Relative paths (from `data`,
    `baseData` or `properties`) are resolved too. Returns (found, value, canonical path)."""
    if isinstance(path, str):
        comps = [c for c in path.split("/") if c] if path.startswith("/") else _PATH_TOKEN.findall(path)
    elif isinstance(path, list | tuple):
        comps = [str(c) for c in path]
    else:
        return False, None, None
    comps = comps[:32]
    calls = [0]

    def go(node: Any, rest: list[str]) -> list[str | int] | None:
        calls[0] += 1
        if calls[0] > 2000:
            return None
        if not rest:
            return []
        if isinstance(node, dict):
            for j in range(len(rest), 0, -1):
                k = ".".join(rest[:j])
                if k in node:
                    sub = go(node[k], rest[j:])
                    if sub is not None:
                        return [k, *sub]
        elif isinstance(node, list) and rest[0].isdigit() and int(rest[0]) < len(node):
            sub = go(node[int(rest[0])], rest[1:])
            if sub is not None:
                return [int(rest[0]), *sub]
        return None

    root, prefix = data, []
    for _ in range(len(_ROOT_HOPS) + 1):
        found = go(root, comps) if comps else None
        if found is not None:
            value: Any = data
            full = [*prefix, *found]
            for k in full:
                value = value[k]
            path_str = ""
            for k in full:
                path_str = _path_join(path_str, k)
            return True, value, path_str
        hop = next((h for h in _ROOT_HOPS if isinstance(root, dict) and isinstance(root.get(h), dict)), None)
        if hop is None:
            break
        root, prefix = root[hop], [*prefix, hop]
    return False, None, None


def blank_body(body: bytes, findings: Sequence[Finding], fill: bytes = b"*") -> bytes:
    """The body with every finding's span overwritten, length preserved (binary framing such as Bond
    string lengths and the other spans stay valid). Findings without a body span are ignored."""
    if not body:
        return body
    buf = bytearray(body)
    n = len(buf)
    for f in findings:
        spans = ([f.span] if f.span else []) + list(getattr(f, "extra_spans", ()) or ())
        for span in spans:
            try:
                s, e = int(span[0]), int(span[1])
            except (TypeError, ValueError, IndexError):
                continue
            s, e = max(0, s), min(n, e)
            if s < e:
                buf[s:e] = (fill or b"*")[:1] * (e - s)
    return bytes(buf)
