"""FindingsEngine: runs detectors and the known-identifier matcher over one flow and its decoded events."""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

import ahocorasick

from ..decoders.generic import may_hold_jwt
from .detectors import CARD_KEYS, NUMERIC_CARD_CONFIDENCE, detect, geo_valid, key_before, key_has, org_host_regex
from .identifiers import HOST_KINDS, Identifier, KnownHit, KnownMatcher
from .model import Finding, severity_for
from .redact import keyed_hasher, normalise, preview

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
# What a dict key means to the walk, cached per distinct key (telemetry repeats the same few hundred).
_K_LAT, _K_LON, _K_ADDRESS, _K_ODD = 1, 2, 3, 4
_KEY_FLAGS: dict[str, int] = {}
_KEY_FLAGS_MAX = 16_384


def _key_flags(k: str) -> int:
    lk = k.lower() if len(k) <= 9 else ""
    flags = (_K_LAT if lk in _LAT_KEYS else _K_LON if lk in _LON_KEYS
             else _K_ADDRESS if len(k) >= 6 and ("@" in k or "%40" in k)
             else _K_ODD if not k.isalnum() and _ODD_KEY.search(k) else 0)
    # Field names only: keys that are themselves data (addresses, paths) are not kept in memory.
    if flags in (0, _K_LAT, _K_LON) and len(k) <= 128 and len(_KEY_FLAGS) < _KEY_FLAGS_MAX:
        _KEY_FLAGS[k] = flags
    return flags

_UNSET: Any = object()
_JSON_ESCAPED = re.compile(r'[^\x20-\x7e]|["\\/]')  # characters a JSON writer may escape
# A key worth scanning as a value when the body is skipped for its events: a path, an address, a URL.
_ODD_KEY = re.compile(r"[\\/@:% ]")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A parser keeps the last of duplicate keys: the body then holds a value no event has."""
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _DuplicateKey("duplicate key")
    return d


class _Walk:
    """What walking a flow's events collects: distinct (path, text, from a JSON number) segments, the event
    positions each occurs at, and the remaining budgets (characters, nodes)."""

    __slots__ = ("chars", "index", "nodes", "odd_keys", "segments", "truncated", "where")

    def __init__(self, odd_keys: bool, chars: int):
        self.odd_keys = odd_keys
        self.chars = chars
        self.nodes = MAX_NODES
        self.truncated = False
        self.index: dict[tuple[str, str, bool], int] = {}
        self.segments: list[tuple[str, str, bool]] = []
        self.where: list[list[int | None]] = []

    def add(self, position: int | None, path: str, text: str, number: bool) -> None:
        self.chars -= len(text) + 1
        if self.chars < 0:  # this text may have been cut at the budget
            self.truncated = True
        key = (path, text, number)
        i = self.index.get(key)
        if i is None:
            self.index[key] = len(self.segments)
            self.segments.append(key)
            self.where.append([position])
        else:
            self.where[i].append(position)


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
    # Every event the same (path, value) occurs in, when more than one: one candidate stands for all.
    positions: list[int | None] | None = None


def _bytes_text(s: str) -> str:
    """str -> byte text (UTF-8 bytes viewed as latin-1), the space every detector works in."""
    return s.encode("utf-8", "surrogatepass").decode("latin-1")


def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_" or c >= "\x80"


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
        self._hash = keyed_hasher(self.key)
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
        body_out: list[_Candidate] = []
        event_out: list[_Candidate] = []
        covered = False
        try:
            covered = self._body_is_events(body, content_type, events)
        except Exception as e:
            log.error("teletap: findings body coverage check failed: %s: %s", type(e).__name__, e)
        complete = [False]
        for stage, args, sink in ((self._scan_url, (url,), out), (self._scan_headers, (request_headers,), out),
                                  (self._scan_events, (events, complete, covered), event_out)):
            try:
                stage(*args, out=sink)  # type: ignore[operator]
            except Exception as e:  # a detector bug must cost one stage, not the flow's findings
                log.error("teletap: findings stage %s failed: %s: %s", stage.__name__, type(e).__name__, e)
        # A JSON body that parses into exactly the decoded events holds no value the event walk did not
        # see (with a better key: the path): pattern detectors skip it and only the body spans of what the
        # events revealed are located, for blanking. Known identifiers and tokens are still looked for.
        covered = covered and complete[0]
        try:
            self._scan_body(body, content_type, out=body_out, patterns=not covered)
        except Exception as e:
            log.error("teletap: findings stage _scan_body failed: %s: %s", type(e).__name__, e)
        out.extend(body_out)
        out.extend(event_out)
        try:
            return self._finish(out, data_flow if isinstance(data_flow, str) else None,
                                (bytes(body), event_out) if covered and body else None)  # type: ignore[arg-type]
        except Exception as e:
            log.error("teletap: findings could not be assembled: %s: %s", type(e).__name__, e)
            return []

    # -- body covered by its events ------------------------------------------------------------------
    def _body_is_events(self, body: Any, content_type: Any, events: Any) -> bool:
        """True if the body is JSON (one document, an array, or NDJSON) whose documents are the decoded
        events' data, in order (an event may hold more): then every value in the body is in the events."""
        if not events or not body or not isinstance(body, bytes | bytearray) or len(body) > self.max_scan_bytes:
            return False
        if len(events) > MAX_EVENTS:
            return False
        ctype = content_type.lower() if isinstance(content_type, str) else ""
        if ctype.startswith(_BINARY_TYPES) or bytes(body[:64]).lstrip()[:1] not in (b"{", b"["):
            return False
        datas = [self._event_parts(ev)[1] for ev in events]
        try:
            text = bytes(body).decode("utf-8")
            try:
                docs = [json.loads(text, object_pairs_hook=_unique_keys)]
            except _DuplicateKey:
                return False
            except ValueError:  # NDJSON: one parse of all lines as an array, not a call per line
                docs = json.loads("[" + ",".join(line for line in text.split("\n") if line.strip()) + "]",
                                  object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError):  # ValueError includes _DuplicateKey; nesting beyond the stack
            return False  # the body is then scanned in full, which is always correct
        if len(docs) == 1 and isinstance(docs[0], list) and len(datas) > 1:
            docs = docs[0]  # a JSON array of events
        if len(docs) > len(datas):
            return False
        try:
            for doc, data in zip(docs, datas, strict=False):
                # Decoders may add to an event (1DS: the collector's headers as "_collector"), never remove.
                if doc != data and not (type(doc) is dict and isinstance(data, dict)
                                        and doc.items() <= data.items()):
                    return False
        except RecursionError:  # comparing documents nested deeper than the stack allows
            return False
        return True

    def _value_spans(self, body: bytes, found: list[_Candidate]) -> dict[tuple[str, str], list[tuple[int, int]]]:
        """Body spans of the pattern values found in events, as a JSON body writes them: one Aho-Corasick
        pass over the ASCII-lower-cased body, whole tokens only (not inside a longer word)."""
        needles: dict[str, list[tuple[str, str]]] = {}
        values = dict.fromkeys((c.kind, c.value) for c in found if c.rank == _RANK_PATTERN and not c.vendor
                               and c.confidence >= self.min_confidence and c.value)
        for kind, value in values:
            parts = value.split(",") if kind == "geo" else (value,)
            for part in parts:
                forms = {part}
                if _JSON_ESCAPED.search(part):  # how a JSON writer may have spelled it
                    forms |= {json.dumps(part)[1:-1], json.dumps(part, ensure_ascii=False)[1:-1]}
                for form in forms:
                    key = _bytes_text(form).encode("latin-1").lower().decode("latin-1")
                    if key:
                        owners = needles.setdefault(key, [])
                        if (kind, value) not in owners:
                            owners.append((kind, value))
        if not needles:
            return {}
        automaton = ahocorasick.Automaton()
        for key, owners in needles.items():
            automaton.add_word(key, (len(key), owners))
        automaton.make_automaton()
        text = bytes(body).lower().decode("latin-1")
        n = len(text)
        spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for end, (length, owners) in automaton.iter(text):
            start = end + 1 - length
            if (start > 0 and _word_char(text[start - 1]) and _word_char(text[start])) or (
                    end + 1 < n and _word_char(text[end + 1]) and _word_char(text[end])):
                continue
            for owner in owners:
                spans.setdefault(owner, []).append((start, end + 1))
        return spans

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
        if not detector_suffix and may_hold_jwt(t):
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
    def _scan_body(self, body: bytes | None, content_type: str | None, *, out: list[_Candidate],
                   patterns: bool = True) -> None:
        if not body or not isinstance(body, bytes | bytearray | memoryview):
            return
        data = bytes(body[:self.max_scan_bytes])
        ctype = (content_type or "").lower() if isinstance(content_type, str) else ""
        # Pattern detectors on images or archives report noise; planted values are still looked for.
        binary = ctype.startswith(_BINARY_TYPES)
        self._scan_text(data.decode("latin-1"), location="body", out=out, body_offset=0,
                        patterns=patterns and not binary)

    # -- decoded events -----------------------------------------------------------------------------
    def _scan_events(self, events: Sequence[Any], complete: list[bool], odd_keys: bool, *,
                     out: list[_Candidate]) -> None:
        """complete[0] is set when every event was walked to the end (no limit cut it short). odd_keys: also
        scan keys that are not field names (paths, addresses) as values."""
        walk = _Walk(odd_keys, self.max_scan_bytes)
        truncated = False
        for n, ev in enumerate(events or ()):
            if n >= MAX_EVENTS or walk.chars <= 0 or walk.nodes <= 0:
                truncated = True
                break
            position, data, pii = self._event_parts(ev)
            try:
                self._walk(data, position, walk, out)
            except Exception as e:
                truncated = True
                log.error("teletap: walking event %s failed: %s: %s", position, type(e).__name__, e)
            try:
                self._vendor_annotations(data, pii, position, out)
            except Exception as e:
                log.error("teletap: vendor PII annotations of event %s failed: %s: %s", position, type(e).__name__, e)
        complete[0] = not truncated and not walk.truncated
        segments, where = walk.segments, walk.where
        if not segments:
            return
        # One text for all distinct (path, value) pairs: each detector and the automaton run once per flow,
        # and a value that every event repeats (a device id) is examined once, then reported per event.
        starts: list[int] = []
        offset = 0
        for _, text, _ in segments:
            starts.append(offset)
            offset += len(text) + 1
        big = "\x00".join([text for _, text, _ in segments])

        def seg_of(pos: int) -> int:
            return bisect.bisect_right(starts, pos) - 1

        def ctx(pos: int) -> str | None:
            i = seg_of(pos)
            floor = starts[i]
            # Most event strings are plain values: look for "key:"/"key=" inside only if one can be there.
            if big.find(":", floor, pos) >= 0 or big.find("=", floor, pos) >= 0:
                return key_before(big, pos, floor=floor) or segments[i][0]
            return segments[i][0]

        hint = big.lower() + "\x00" + "\x00".join(dict.fromkeys(p for p, _, _ in segments)).lower()
        for h in detect(big, ctx, self.org_hosts, hint, self.min_confidence):
            i = seg_of(h.start)
            if h.kind == "payment-card" and h.confidence > NUMERIC_CARD_CONFIDENCE and \
                    segments[i][2] and not key_has(ctx(h.start), CARD_KEYS):
                h.confidence = NUMERIC_CARD_CONFIDENCE  # a JSON number: see detectors.json_number_at
            if h.confidence < self.min_confidence:
                continue  # held back: not worth replicating per event
            positions = where[i]
            out.append(_Candidate(h.kind, h.detector, h.confidence, f"event:{segments[i][0]}", h.value,
                                  positions[0], None, h.prefix, _RANK_PATTERN,
                                  positions=positions if len(positions) > 1 else None))
        for k in self.known.find(big):
            i = seg_of(k.start)
            positions = where[i]
            c = self._known_candidate(k, f"event:{segments[i][0]}", positions[0], None)
            if len(positions) > 1:
                c.positions = positions
            out.append(c)
        if may_hold_jwt(big):
            with_tokens = [i for i, seg in enumerate(segments) if may_hold_jwt(seg[1])]
            budget = MAX_JWT_STRINGS
            for i in with_tokens:
                if budget <= 0:
                    break
                path, text, _ = segments[i]
                sub: list[_Candidate] = []
                self._scan_jwts(text, location=f"event:{path}", out=sub, default_key=path, body_offset=None)
                for position in where[i][:budget]:
                    for c in sub:
                        out.append(dataclasses.replace(c, event_position=position))
                budget -= len(where[i])

    @staticmethod
    def _event_parts(ev: Any) -> tuple[int | None, Any, Any]:
        if isinstance(ev, dict):
            position, data, pii = ev.get("position"), ev.get("data"), ev.get("pii")
        else:
            position, data, pii = (getattr(ev, "position", None), getattr(ev, "data", None),
                                   getattr(ev, "pii", None))
        return (position if isinstance(position, int) and not isinstance(position, bool) else None), data, pii

    def _walk(self, data: Any, position: int | None, walk: _Walk, out: list[_Candidate]) -> None:
        """Depth-first, in document order, over JSON-like data. Recursive, but nesting is cut at MAX_DEPTH
        (far below the recursion limit), so hostile nesting costs nothing."""
        if data is not None:
            self._node("", data, 0, position, walk, out)

    def _node(self, path: str, node: Any, depth: int, position: int | None, walk: _Walk,
              out: list[_Candidate]) -> None:
        if walk.chars <= 0 or walk.nodes <= 0:
            walk.truncated = True
            return
        walk.nodes -= 1
        kind = type(node)
        if kind is str:
            if node:
                walk.add(position, path, node if node.isascii() and len(node) < walk.chars
                         else _bytes_text(node[:walk.chars]), False)
        elif kind is dict:
            if depth >= MAX_DEPTH:
                walk.truncated = walk.truncated or bool(node)
                return
            lat = lon = _UNSET
            odd_keys = walk.odd_keys
            add = walk.add
            index, segments, where = walk.index, walk.segments, walk.where
            key_flags = _KEY_FLAGS
            # Budgets in locals (written back around recursion and at the end): attribute traffic per
            # leaf is a good part of the walk's cost.
            chars, nodes = walk.chars, walk.nodes
            for k, v in node.items():
                if chars <= 0 or nodes <= 0:
                    walk.chars, walk.nodes, walk.truncated = chars, nodes, True
                    return
                if type(k) is not str:
                    k = str(k)
                child = f"{path}.{k}" if path else k
                flags = key_flags.get(k)
                if flags is None:
                    flags = _key_flags(k)
                if flags:
                    if flags == _K_LAT:
                        lat = v
                    elif flags == _K_LON:
                        lon = v
                    elif flags == _K_ADDRESS or odd_keys:
                        # Maps keyed by address ({"jane@…": …}); other keys are field names.
                        walk.chars = chars
                        add(position, child, _bytes_text(k[:256]), False)
                        chars = walk.chars
                vt = type(v)
                if vt is str or vt is int or vt is float:  # the common leaves, inlined (walk.add)
                    nodes -= 1
                    if vt is str:
                        if not v:
                            continue
                        if len(v) >= chars or not v.isascii():
                            v = _bytes_text(v[:chars])
                        skey = (child, v, False)
                    else:
                        v = repr(v)
                        skey = (child, v, True)
                    chars -= len(v) + 1
                    if chars < 0:
                        walk.truncated = True
                    i = index.get(skey)
                    if i is None:
                        index[skey] = len(segments)
                        segments.append(skey)
                        where.append([position])
                    else:
                        where[i].append(position)
                elif vt is bool or v is None:
                    nodes -= 1
                else:
                    walk.chars, walk.nodes = chars, nodes
                    self._node(child, v, depth + 1, position, walk, out)
                    chars, nodes = walk.chars, walk.nodes
            walk.chars, walk.nodes = chars, nodes
            if lat is not _UNSET and lon is not _UNSET:
                self._geo_pair(lat, lon, path, position, out)
        elif kind is list or kind is tuple:
            if depth >= MAX_DEPTH:
                walk.truncated = walk.truncated or bool(node)
                return
            for i, v in enumerate(node):
                if walk.chars <= 0 or walk.nodes <= 0:
                    walk.truncated = True
                    return
                self._node(f"{path}[{i}]", v, depth + 1, position, walk, out)
        elif kind is int or kind is float:
            walk.add(position, path, repr(node), True)
        elif kind is bool or node is None:
            return
        elif isinstance(node, str):
            if node:
                walk.add(position, path, _bytes_text(str(node)[:walk.chars]), False)
        elif isinstance(node, bool):
            return
        elif isinstance(node, int | float):
            walk.add(position, path, repr(node), True)
        elif isinstance(node, bytes | bytearray):
            if node:
                walk.add(position, path, bytes(node[:walk.chars]).decode("latin-1"), False)
        elif isinstance(node, dict):
            walk.nodes += 1
            self._node(path, dict(node), depth, position, walk, out)
        elif isinstance(node, list | tuple):
            walk.nodes += 1
            self._node(path, list(node), depth, position, walk, out)

    def _geo_pair(self, lat: Any, lon: Any, path: str, position: int | None, out: list[_Candidate]) -> None:
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
    def _finish(self, candidates: Iterable[_Candidate], data_flow: str | None,
                body_spans: tuple[bytes, list[_Candidate]] | None = None) -> list[Finding]:
        groups: dict[tuple[str, int | None, str, bool], list[_Candidate]] = {}
        # One normalisation and HMAC per distinct value: batches repeat the same values in every event.
        hashes: dict[tuple[str, str], str] = {}
        by_norm: dict[str, str] = {}
        min_conf = self.min_confidence
        kept_candidates: list[tuple[_Candidate, str]] = []
        shared: dict[tuple[str, str, bool], int] = {}  # candidates per (location, value, vendor)
        for c in candidates:
            if c.confidence < min_conf:
                continue
            h = hashes.get((c.kind, c.value))
            if h is None:
                norm = normalise(c.kind, c.value)
                h = by_norm.get(norm)
                if h is None:
                    h = by_norm[norm] = self._hash(norm)
                hashes[(c.kind, c.value)] = h
            kept_candidates.append((c, h))
            key3 = (c.location, h, c.vendor)
            shared[key3] = shared.get(key3, 0) + 1
        previews: dict[tuple[str, str, str], str] = {}
        severities: dict[str, str] = {}
        made: dict[int, tuple[Any, ...]] = {}
        findings: list[Finding] = []
        store_clear = self.store_clear

        def fields_of(c: _Candidate) -> tuple[Any, ...]:
            """What a single candidate's findings share, rendered once (it may stand for many events)."""
            fields = made.get(id(c))
            if fields is None:
                pkey = (c.kind, c.prefix, c.value)
                shown = previews.get(pkey)
                if shown is None:
                    shown = previews[pkey] = (c.prefix + preview(_VENDOR_PREVIEW.get(c.kind, c.kind), c.value)
                                              if c.value else "(value not found)")
                severity = severities.get(c.kind)
                if severity is None:
                    severity = severities[c.kind] = severity_for(c.kind, data_flow)
                fields = made[id(c)] = (c.kind, c.detector, round(c.confidence, 3), severity, shown,
                                        c.value if store_clear else None, c.span)
            return fields

        for c, h in kept_candidates:
            positions = c.positions
            if positions is not None and shared[(c.location, h, c.vendor)] == 1 \
                    and len(set(positions)) == len(positions):
                # Nothing else reports this value at this path: one finding per event, no grouping.
                kind, detector, confidence, severity, shown, value, span = fields_of(c)
                for position in positions:
                    findings.append(Finding(kind, detector, confidence, severity, c.location, shown, h, value,
                                            position, span))
                continue
            for position in (c.event_position,) if positions is None else positions:
                key = (c.location, position, h, c.vendor)
                members = groups.get(key)
                if members is None:
                    groups[key] = [c]
                else:
                    members.append(c)
        if len(findings) >= MAX_FINDINGS:
            return findings[:MAX_FINDINGS]

        def emit(kind: str, detector: str, best: _Candidate, location: str, position: int | None, h: str,
                 spans: list[tuple[int, int]]) -> None:
            pkey = (kind, best.prefix, best.value)
            shown = previews.get(pkey)
            if shown is None:
                shown = previews[pkey] = (best.prefix + preview(_VENDOR_PREVIEW.get(kind, kind), best.value)
                                          if best.value else "(value not found)")
            severity = severities.get(kind)
            if severity is None:
                severity = severities[kind] = severity_for(kind, data_flow)
            findings.append(Finding(
                kind=kind, detector=detector, confidence=round(best.confidence, 3), severity=severity,
                location=location, preview=shown, value_hash=h, value=best.value if store_clear else None,
                event_position=position, span=spans[0] if spans else None, extra_spans=tuple(spans[1:]),
            ))

        for (location, position, h, _), members in groups.items():
            if len(members) == 1:  # the common case: one detector, one occurrence
                kind, detector, confidence, severity, shown, value, span = fields_of(members[0])
                findings.append(Finding(kind, detector, confidence, severity, location, shown, h, value, position,
                                        span))
            else:
                top = max(c.rank for c in members)
                kept: dict[tuple[str, str], list[_Candidate]] = {}
                for c in members:
                    if c.rank == top:
                        kept.setdefault((c.kind, c.detector), []).append(c)
                # Spans of outranked candidates (a regex e-mail under a known e-mail) still need blanking.
                leftover = sorted({c.span for c in members if c.rank != top and c.span is not None})
                for (kind, detector), cs in kept.items():
                    best = max(cs, key=lambda c: c.confidence)
                    spans = sorted({c.span for c in cs if c.span is not None} | set(leftover))
                    leftover = []
                    emit(kind, detector, best, location, position, h, spans)
            if len(findings) >= MAX_FINDINGS:
                return findings[:MAX_FINDINGS]
        if body_spans is not None:
            # The body was not pattern-scanned: the body occurrences of values found in events travel with
            # the event finding, as folded body findings do below. Located when first read (blanking).
            targets: dict[tuple[str, str], Finding] = {}
            for f in findings:
                if f.event_position is not None and f.detector != "vendor-annotation":
                    targets.setdefault((f.kind, f.value_hash), f)
            if targets:
                pending = _PendingSpans(self, body_spans[0], body_spans[1], hashes, targets)
                for f in targets.values():
                    f.__dict__["_pending"] = pending
        return _fold_body_into_events(findings)


class _PendingSpans:
    """Body spans of values found in events, located on first read of a target's extra_spans."""

    __slots__ = ("body", "engine", "found", "hashes", "targets")

    def __init__(self, engine: FindingsEngine, body: bytes, found: list[_Candidate],
                 hashes: dict[tuple[str, str], str], targets: dict[tuple[str, str], Finding]):
        self.engine, self.body, self.found, self.hashes, self.targets = engine, body, found, hashes, targets

    def resolve(self) -> None:
        targets, self.targets = self.targets, {}
        for f in targets.values():
            f.__dict__["_pending"] = None
        try:
            spans = self.engine._value_spans(self.body, self.found)
        except Exception as e:  # reading an attribute must not raise
            log.error("teletap: locating body spans failed: %s: %s", type(e).__name__, e)
            spans = {}
        self.body, self.found = b"", []
        merged: dict[tuple[str, str], set[tuple[int, int]]] = {}
        for (kind, value), found in spans.items():
            h = self.hashes.get((kind, value))
            if h is not None and (kind, h) in targets:
                merged.setdefault((kind, h), set()).update(found)
        for key, found_spans in merged.items():
            f = targets[key]
            f.extra_spans = tuple(sorted(set(f.__dict__.get("_extra_spans", ())) | found_spans))


def _fold_body_into_events(findings: list[Finding]) -> list[Finding]:
    """A value found in the raw body and again in a decoded event is one datum: report it once, at its
    event path (which says what the field is), carrying the body spans along so blanking still works."""
    if not any(f.location == "body" for f in findings):
        return findings
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
        # Through __dict__: reading target.extra_spans would resolve pending body spans now, not lazily.
        target.extra_spans = tuple(sorted(set(target.__dict__.get("_extra_spans", ())) | set(spans)))
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
