"""Pattern detectors for personal data, with validators that turn shapes into findings.

All detectors work on "byte text": bytes decoded as latin-1, so a character offset is a byte offset in
the body (needed for blanking) and arbitrary binary input is valid text. Patterns are ASCII.

Linear-time discipline: every repetition is bounded, and no repeated group can match the same text in
two ways (the classes inside and right after a repetition do not overlap, or a fixed-width atom
separates them). Candidates are then checked in Python (checksums, ranges, context), which is where
precision comes from. The fuzz and adversarial-input tests hold this to account.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

# Key name (or JSON path) that describes the value at an offset, or None. Supplied by the engine.
ContextFn = Callable[[int], "str | None"]


@dataclass(slots=True)
class Hit:
    kind: str
    detector: str
    confidence: float
    start: int
    end: int
    value: str
    prefix: str = ""  # shown before the redacted value in the preview (e.g. "C:\Users\")


MAX_HITS = 10_000  # candidates per detector per text: a body made of one pattern repeated stays cheap


def _each(pattern: re.Pattern[str], t: str) -> Iterator[re.Match[str]]:
    return islice(pattern.finditer(t), MAX_HITS)


def clear(t: str, start: int, end: int) -> str:
    """The clear value at a span of byte text, as the UTF-8 it most likely was."""
    return t[start:end].encode("latin-1", "replace").decode("utf-8", "replace")


# -- context -----------------------------------------------------------------------------------------
# `"key": "`, `key=`, `'key' : '` right before a value (1DS localIds carry a one-letter prefix "s:").
# The key needs two characters so that the prefix itself ("s:") is not taken for a key.
_KEY_BEFORE = re.compile(r"([A-Za-z_$][\w.$-]{1,63})[\"']?\s{0,3}[:=]\s{0,3}[\"']?(?:[a-z]:)?$", re.ASCII)
_NORM = re.compile(r"[^a-z0-9]", re.ASCII)
_PATH_SPLIT = re.compile(r"[.\[\]/:]+")


def key_before(t: str, pos: int, floor: int = 0) -> str | None:
    # The pattern ends at pos with `[:=]\s{0,3}["']?(?:[a-z]:)?`: without ':' or '=' in the last 7
    # characters it cannot match, and most values (paths, names) are not preceded by one.
    near = t[max(floor, pos - 7):pos]
    if ":" not in near and "=" not in near:
        return None
    window = t[max(floor, pos - 80):pos]
    if not window:
        return None
    m = _KEY_BEFORE.search(window)
    return m.group(1) if m else None


@lru_cache(maxsize=8192)  # telemetry repeats the same few hundred keys in every event
def key_parts(key: str | None) -> tuple[str, str]:
    """(last component, parent component) of a key or path, lower-cased, alphanumerics only."""
    if not key:
        return "", ""
    parts = [_NORM.sub("", p.lower()) for p in _PATH_SPLIT.split(key)]
    parts = [p for p in parts if p and not p.isdigit()]
    if not parts:
        return "", ""
    return parts[-1], (parts[-2] if len(parts) > 1 else "")


@lru_cache(maxsize=8192)  # the same keys and word lists for every value of a batch
def key_has(key: str | None, words: tuple[str, ...]) -> bool:
    last, parent = key_parts(key)
    return any(w in last or w in parent for w in words)


def _before_has(t: str, pos: int, words: tuple[str, ...], width: int = 40) -> bool:
    window = t[max(0, pos - width):pos].lower()
    return any(w in window for w in words)


# -- e-mail / UPN -----------------------------------------------------------------------------------
# Local parts may be UTF-8 (RFC 6531: "jörg@…"): bytes 0x80-0xFF count as letters there. The local part
# is at most 64 bytes, so the repetition is bounded by the standard itself.
_EMAIL = re.compile(
    r"(?<![\w.%+\x80-\xff-])([A-Za-z0-9\x80-\xff][A-Za-z0-9\x80-\xff._%+-]{0,63})(@|%40)"
    r"((?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24})(?![\w-])", re.ASCII)
# Retina assets ("icon@2x.png") and scoped packages look like e-mail addresses.
_FILE_TLDS = frozenset(("png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "mjs", "css", "json", "xml",
                        "html", "htm", "map", "woff", "woff2", "ttf", "dll", "exe"))
_PCT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_UPN_KEYS = ("upn", "principal", "loginname", "signinname", "logonname")


def _emails(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_EMAIL, t):
        local, domain, start = m.group(1), m.group(3), m.start()
        if "%" in local:
            # "mailto%3Ajane%40…" in a form body: the address starts after the last escape.
            tail = _PCT_ESCAPE.split(local)[-1]
            start += len(local) - len(tail)
            local = tail
            if not local or not (local[0].isalnum() or local[0] >= "\x80") or "%" in local:
                continue
        tld = domain.rsplit(".", 1)[-1].lower()
        if tld in _FILE_TLDS or local.endswith(".") or ".." in local:
            continue
        value = clear(t, start, start + len(local)) + "@" + domain
        key = ctx(start)
        upn = key_has(key, _UPN_KEYS) or domain.lower().endswith(".onmicrosoft.com")
        kind = "upn" if upn else "email"
        out.append(Hit(kind, f"regex:{kind}", 0.95, start, m.end(), value))
    return out


# -- IP addresses ------------------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)", re.ASCII)
_VERSION_WORDS = ("version", "ver", "build", "release", "osver", "appver", "sdk")
_PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in
                    ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"))


def classify_ip(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """'public' / 'private', or None for addresses that say nothing about anyone.

    Documentation ranges (192.0.2.0/24, 2001:db8::/32, …) count as public on purpose: they never occur
    in real traffic, so tests and demos use them to stand for public addresses.
    """
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return classify_ip(addr.ipv4_mapped)
        if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
            return None
        if addr in ipaddress.ip_network("fc00::/7") or addr.is_link_local or addr.is_site_local:
            return "private"
        return "public"
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast or int(addr) == 0xFFFFFFFF:
        return None
    n = int(addr)
    inverted = ~n & 0xFFFFFFFF
    if n >> 24 == 255 and (inverted & (inverted + 1)) == 0:  # a netmask such as 255.255.255.0
        return None
    if int(addr) >> 28 == 0xF:  # 240.0.0.0/4 reserved
        return None
    return "private" if any(addr in net for net in _PRIVATE_V4) else "public"


def _ipv4(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_IPV4, t):
        s = m.start()
        # Product tokens ("Chrome/120.0.0.0") and "version 1.0.0.0" are versions, not addresses.
        if s >= 2 and t[s - 1] == "/" and t[s - 2].isalnum():
            continue
        if _before_has(t, s, ("version", "ver ", "ver=", "build"), 12) or (s >= 1 and t[s - 1] in "vV"):
            continue
        if key_has(ctx(s), _VERSION_WORDS):
            continue
        value = m.group(0)
        cls = classify_ip(ipaddress.IPv4Address(value))
        if cls is not None:
            out.append(Hit(f"ipv4-{cls}", "regex:ipv4", 0.9, s, m.end(), value))
    return out


_IPV6 = re.compile(r"(?<![\w:.])((?:[0-9A-Fa-f]{1,4}:|:){2,7}(?:[0-9A-Fa-f]{1,4}|:))(?:%[0-9A-Za-z]{1,16})?(?![\w:.])",
                   re.ASCII)


# JSON is full of colons, but a colon between two hex digits only occurs in addresses and clocks.
_HEX_COLON_HEX = re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f]", re.ASCII)


def _ipv6(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_IPV6, t):
        text = m.group(1)
        if "::" not in text and text.count(":") != 7:
            continue
        groups = [g for g in text.split(":") if g]
        # Compressed forms need three groups or a full first group ("fe80::1"); "10:20::" is a clock.
        if len(groups) < 3 and not (groups and len(groups[0]) == 4):
            continue
        try:
            addr = ipaddress.IPv6Address(text)
        except ValueError:
            continue
        cls = classify_ip(addr)
        if cls is not None:
            kind = (f"ipv4-{cls}" if addr.ipv4_mapped is not None else f"ipv6-{cls}")
            out.append(Hit(kind, "regex:ipv6", 0.9, m.start(), m.start() + len(text), text))
    return out


# -- MAC ---------------------------------------------------------------------------------------------
_MAC = re.compile(r"(?<![\w:.-])[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}(?![\w:-])", re.ASCII)
_MAC_BARE = re.compile(r"(?<![\w-])[0-9A-Fa-f]{12}(?![\w-])", re.ASCII)


def _macs(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_MAC, t):
        hexes = re.sub(r"[:-]", "", m.group(0)).lower()
        if hexes in ("000000000000", "ffffffffffff"):
            continue
        conf = 0.85
        if hexes.isdigit():
            if m.group(1) == "-":  # "25-11-26-12-30-00": a date and time, not a MAC
                continue
            conf = 0.6
        if key_has(ctx(m.start()), ("mac",)):
            conf = 0.95
        out.append(Hit("mac", "regex:mac", conf, m.start(), m.end(), m.group(0)))
    return out


def _macs_bare(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_MAC_BARE, t):
        # Twelve hex digits are a MAC only where the key says so.
        if key_has(ctx(m.start()), ("mac",)) and m.group(0).lower() not in ("000000000000", "ffffffffffff"):
            out.append(Hit("mac", "context:mac", 0.8, m.start(), m.end(), m.group(0)))
    return out


# -- Windows SIDs ------------------------------------------------------------------------------------
_SID = re.compile(r"(?<![\w-])[Ss]-1-(\d{1,3})((?:-\d{1,10}){1,15})(?![\w-])", re.ASCII)


def _sids(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_SID, t):
        authority = int(m.group(1))
        subs = [int(x) for x in m.group(2)[1:].split("-")]
        if any(x > 0xFFFFFFFF for x in subs):
            continue
        # Only domain/machine accounts (S-1-5-21-…) and Entra ID objects (S-1-12-1-…) name someone;
        # well-known SIDs (S-1-5-18 LocalSystem, S-1-5-32-544 Administrators…) are the same everywhere.
        if (authority == 5 and subs[0] == 21 and len(subs) >= 4) or (
                authority == 12 and subs[0] == 1 and len(subs) == 5):
            out.append(Hit("sid", "regex:sid", 0.95, m.start(), m.end(), m.group(0).upper()))
    return out


# -- GUIDs -------------------------------------------------------------------------------------------
_GUID = re.compile(
    r"(?<![\w-])\{?([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}?(?![\w-])",
    re.ASCII)
# Checked against the last key component first: ids of events, requests, schemas, products… are
# per-message or per-product, not per-person.
_GUID_NEG = ("event", "schema", "request", "correlation", "activity", "trace", "span", "operation", "batch",
             "flight", "experiment", "product", "clsid", "provider", "template", "build", "etag", "nonce",
             "message", "transaction", "sequence", "ikey", "instrumentation", "apikey", "policy", "rule",
             "feature", "config", "setting", "scenario", "job", "task", "package", "sku", "license", "format",
             "app", "type", "class", "interface", "version", "category", "channel", "region", "ring")
_GUID_POS = (("device", "device"), ("machine", "device"), ("computer", "device"), ("hardware", "device"),
             ("install", "device"), ("sqm", "device"), ("serial", "device"),
             ("user", "user"), ("account", "user"), ("person", "user"), ("member", "user"),
             ("owner", "user"), ("actor", "user"), ("profile", "user"), ("identity", "user"),
             ("customer", "user"), ("puid", "user"), ("anid", "user"), ("muid", "user"), ("aad", "user"),
             ("msa", "user"), ("objectid", "user"),
             ("client", "client"), ("tenant", "tenant"), ("session", "session"), ("localid", "device"))
_GUID_EXACT = {"oid": "user", "sub": "user", "cid": "user", "uid": "user", "tid": "tenant", "sid": "session"}
_GENERIC_KEYS = frozenset(("id", "guid", "uuid", "value", "val", "key", "identifier"))
_GUID_CONF = {"device": 0.9, "user": 0.9, "client": 0.85, "tenant": 0.7, "session": 0.6}
UNCLASSIFIED_GUID_CONFIDENCE = 0.3


@lru_cache(maxsize=8192)
def guid_role(key: str | None) -> str | None:
    """'device', 'user', 'client', 'tenant', 'session'; '' for a known non-identifier; None: unknown."""
    last, parent = key_parts(key)
    for name in ((last,) if last not in _GENERIC_KEYS else ()) + ((parent,) if parent else ()):
        if name in _GUID_EXACT:
            return _GUID_EXACT[name]
        if any(w in name for w in _GUID_NEG):
            return ""
        for word, role in _GUID_POS:
            if word in name:
                return role
    return None


def _guids(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_GUID, t):
        g = m.group(1).lower()
        if g == "00000000-0000-0000-0000-000000000000":
            continue
        role = guid_role(ctx(m.start()))
        if role == "":
            continue
        if role is None:
            out.append(Hit("guid", "regex:guid", UNCLASSIFIED_GUID_CONFIDENCE, m.start(1), m.end(1), g))
        else:
            out.append(Hit("guid", f"context:guid-{role}", _GUID_CONF[role], m.start(1), m.end(1), g))
    return out


# -- user paths --------------------------------------------------------------------------------------
_WIN_PROFILE = re.compile(
    r"(?i)(?<![\w])((?:[a-z]:)?(?:\\{1,2}|/)(?:users|documents and settings)(?:\\{1,2}|/))"
    r"([^\\/:*?\"<>|\r\n\t\x00]{1,64})", re.ASCII)
_WIN_PROFILE_NODRIVE_OK = re.compile(r"(?i)^[a-z]:", re.ASCII)
_UNIX_HOME = re.compile(r"(?<![\w/.~-])(/home/|/Users/)([A-Za-z0-9._-]{1,64})", re.ASCII)
_GENERIC_PROFILES = frozenset(("public", "default", "default user", "all users", "defaultuser0", "defaultapppool",
                               "administrator", "systemprofile", "localservice", "networkservice", "user",
                               "username", "shared", "guest"))


def _user_paths(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_WIN_PROFILE, t):
        prefix = m.group(1)
        # "/users/123" without a drive letter is a web API path, not a profile folder.
        if "\\" not in prefix and not _WIN_PROFILE_NODRIVE_OK.match(prefix):
            continue
        name = m.group(2).rstrip(" .")
        if not name or name.lower() in _GENERIC_PROFILES or name[0] in "%${<.":
            continue
        s = m.start(2)
        out.append(Hit("user-path", "regex:user-path", 0.9, s, s + len(name),
                       name if name.isascii() else clear(t, s, s + len(name)),
                       prefix=prefix.replace("\\\\", "\\")))
    if "/home/" not in t and "/Users/" not in t:  # the Unix pattern needs one of them
        return out
    for m in _each(_UNIX_HOME, t):
        name = m.group(2)
        if name.lower() in _GENERIC_PROFILES or name.lower() in ("shared", "runner", "root") or name[0] == ".":
            continue
        out.append(Hit("user-path", "regex:user-path", 0.85, m.start(2), m.end(2), name, prefix=m.group(1)))
    return out


# -- documents and SharePoint/OneDrive --------------------------------------------------------------
_DOC_EXT = re.compile(
    r"(?i)\.(docx|docm|doc|xlsx|xlsm|xlsb|xls|pptx|pptm|ppt|pdf|one|msg|eml|vsdx|vsd|odt|ods|odp|rtf|pst|ost)"
    r"(?![\w])", re.ASCII)
_JSON_KEY_AFTER = re.compile(r"[\"']\s{0,3}:", re.ASCII)
_DOC_STOP = frozenset("\"'/\\|<>:*?\x00\r\n\t=&;{}[]")


def _documents(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_DOC_EXT, t):
        dot = m.start()
        i, floor = dot, max(0, dot - 120)
        # Control bytes end a name too: in binary bodies (Bond) a length byte precedes the string.
        while i > floor and t[i - 1] not in _DOC_STOP and t[i - 1] >= " ":
            i -= 1
        if i == floor and floor > 0 and t[i - 1] not in _DOC_STOP and t[i - 1] >= " ":
            # No delimiter within reach: keep only the last whitespace-free token.
            sp = t.rfind(" ", i, dot)
            i = sp + 1 if sp >= 0 else dot
        while i < dot and t[i] in " +":
            i += 1
        stem = t[i:dot]
        if _JSON_KEY_AFTER.match(t, m.end()):  # '"Data.Doc": …' is a property name, not a file
            continue
        if not stem or stem.startswith(".") or not (stem[-1].isalnum() or any(c.isalnum() for c in stem)):
            continue
        conf = 0.9 if key_has(ctx(i), ("name", "file", "doc", "title", "path")) else 0.8
        value = t[i:m.end()]
        out.append(Hit("document", "regex:document", conf, i, m.end(),
                       value if value.isascii() else clear(t, i, m.end())))
    return out


_SHAREPOINT = re.compile(
    r"(?i)(?<![\w.-])(https?://)?([a-z0-9][a-z0-9-]{0,62}\.sharepoint(?:-df)?\.(?:com|cn|de|us))"
    r"(?![\w-])(/[^\s\"'<>\\\x00?#]{0,1024})?", re.ASCII)
_ONEDRIVE = re.compile(r"(?i)https?://(?:onedrive\.live\.com|1drv\.ms|d\.docs\.live\.net)(/[^\s\"'<>\\\x00?#]{1,1024})",
                       re.ASCII)


def _sharepoint(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_SHAREPOINT, t):
        tenant = m.group(2).split(".")[0].lower()
        if tenant in ("www", "static", "cdn"):
            continue
        path = m.group(3) or ""
        conf = 0.95 if len(path) > 1 else 0.75
        value = clear(t, m.start(), m.end())
        out.append(Hit("sharepoint-url", "regex:sharepoint-url", conf, m.start(), m.end(), value))
    for m in _each(_ONEDRIVE, t):
        value = clear(t, m.start(), m.end())
        out.append(Hit("sharepoint-url", "regex:onedrive-url", 0.9, m.start(), m.end(), value))
    return out


# -- phone numbers -----------------------------------------------------------------------------------
_PHONE = re.compile(r"(?<![\w+.-])(\+?\(?\d[\d ().-]{5,22}\d)(?![\w.-]|\.\d)", re.ASCII)
_PHONE_KEYS = ("phone", "tel", "mobile", "msisdn", "fax", "gsm", "cell")
_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}", re.ASCII)
_SEP_RUN = re.compile(r"[ .-]{2}|[.-][ ]|[ ][.-]", re.ASCII)


def _phones(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_PHONE, t):
        s = m.group(1)
        digits = sum(c.isdigit() for c in s)
        if not 8 <= digits <= 15 or _SEP_RUN.search(s) or s.count("(") != s.count(")") or _DATE_LIKE.search(s):
            continue
        if "." in s and "-" in s:
            continue
        context = key_has(ctx(m.start()), _PHONE_KEYS) or _before_has(t, m.start(), ("tel:", "phone", "mobile"), 16)
        if s.startswith("+"):
            conf = 0.95 if context else 0.85
        elif context:
            conf = 0.9
        else:
            continue  # a bare national number is indistinguishable from a counter or timestamp
        out.append(Hit("phone", "regex:phone", conf, m.start(), m.end(), s))
    return out


# -- IBAN --------------------------------------------------------------------------------------------
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)(?![A-Za-z0-9])",
                   re.ASCII)
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_valid(s: str) -> bool:
    s = s.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s) or not s.isalnum():
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ibans(t: str, ctx: ContextFn) -> list[Hit]:
    return [Hit("iban", "regex:iban", 0.95, m.start(), m.end(), m.group(1))
            for m in _each(_IBAN, t) if iban_valid(m.group(1))]


# -- payment cards -----------------------------------------------------------------------------------
_CARD = re.compile(r"(?<![\d.-])(\d(?:[ -]?\d){12,18})(?![\d-]|\.\d)", re.ASCII)
_NUMERIC_ID_KEYS = ("id", "time", "count", "seq", "size", "hash", "epoch", "ticks", "length", "duration",
                    "version", "ts", "num")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_brand_ok(d: str) -> bool:
    n = len(d)
    p2, p4 = int(d[:2]), int(d[:4])
    return (
        (d[0] == "4" and n in (13, 16, 19))
        or (51 <= p2 <= 55 and n == 16) or (2221 <= p4 <= 2720 and n == 16)
        or (p2 in (34, 37) and n == 15)
        or ((d.startswith("6011") or d.startswith("65") or 644 <= int(d[:3]) <= 649) and 16 <= n <= 19)
        or (p2 == 35 and 16 <= n <= 19)
        or ((300 <= int(d[:3]) <= 305 or p2 in (36, 38, 39)) and 14 <= n <= 19)
        or (p2 == 62 and 16 <= n <= 19)
    )


def _cards(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_CARD, t):
        s = m.group(1)
        seps = {c for c in s if not c.isdigit()}
        digits = "".join(c for c in s if c.isdigit())
        if len(seps) > 1 or not luhn_valid(digits) or not _card_brand_ok(digits) or len(set(digits)) < 2:
            continue
        conf = 0.8
        if seps:
            groups = [len(g) for g in s.split(seps.pop())]
            if groups[0] != 4 or any(not 4 <= g <= 6 for g in groups[1:-1]) or not 1 <= groups[-1] <= 6:
                continue
            conf = 0.9
        key = ctx(m.start())
        last, _ = key_parts(key)
        if key_has(key, CARD_KEYS):
            conf = 0.95
        elif any(w in last for w in _NUMERIC_ID_KEYS):
            conf = 0.3  # a Luhn-valid counter or timestamp, most likely
        elif not seps and json_number_at(t, m.start(), m.end()):
            # Card numbers are strings; a bare JSON number passes Luhn and the issuer check one time
            # in fifty, which on telemetry full of 16-digit counters is too often to report.
            conf = NUMERIC_CARD_CONFIDENCE
        out.append(Hit("payment-card", "regex:payment-card", conf, m.start(), m.end(), s))
    return out


CARD_KEYS = ("card", "pan", "ccnum", "creditcard")
NUMERIC_CARD_CONFIDENCE = 0.4


def json_number_at(t: str, start: int, end: int) -> bool:
    """True if t[start:end] sits in JSON as a number (after ':', '[' or ',', not in quotes)."""
    before = t[max(0, start - 4):start].rstrip(" ")
    after = t[end:end + 4].lstrip(" ")
    return bool(before) and before[-1] in ":[," and (not after or after[0] in ",}]\r\n")


# -- Dutch BSN and US SSN ----------------------------------------------------------------------------
_BSN = re.compile(r"(?<![\d.-])(\d{9}|\d{4}\.\d{2}\.\d{3})(?!\d|[.-]\d)", re.ASCII)
_BSN_KEYS = ("bsn", "burgerservice", "sofi")


def bsn_valid(s: str) -> bool:
    d = [int(c) for c in s if c.isdigit()]
    if len(d) != 9 or not any(d):
        return False
    return (sum(d[i] * (9 - i) for i in range(8)) - d[8]) % 11 == 0


def _bsns(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_BSN, t):
        if not bsn_valid(m.group(1)):
            continue
        context = key_has(ctx(m.start()), _BSN_KEYS) or _before_has(t, m.start(), ("bsn", "burgerservice"), 40)
        # One random nine-digit number in eleven passes the 11-check: without context it is a guess.
        out.append(Hit("bsn", "regex:bsn", 0.9 if context else 0.3, m.start(), m.end(), m.group(1)))
    return out


_SSN = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])", re.ASCII)
_SSN_BARE = re.compile(r"(?<![\w-])(\d{3})(\d{2})(\d{4})(?![\w-])", re.ASCII)
_SSN_KEYS = ("ssn", "socialsecurity")


def ssn_valid(area: str, group: str, serial: str) -> bool:
    a = int(area)
    return a != 0 and a != 666 and a < 900 and group != "00" and serial != "0000"


def _ssns(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_SSN, t):
        if ssn_valid(*m.groups()):
            conf = 0.95 if key_has(ctx(m.start()), _SSN_KEYS) else 0.85
            out.append(Hit("ssn", "regex:ssn", conf, m.start(), m.end(), m.group(0)))
    return out


def _ssns_bare(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_SSN_BARE, t):
        if ssn_valid(*m.groups()) and key_has(ctx(m.start()), _SSN_KEYS):
            out.append(Hit("ssn", "context:ssn", 0.8, m.start(), m.end(), m.group(0)))
    return out


# -- geographic coordinates --------------------------------------------------------------------------
_GEO_PAIR = re.compile(r"(?<![\w.-])(-?\d{1,2}\.\d{4,12})\s{0,2},\s{0,2}(-?\d{1,3}\.\d{4,12})(?![\w.])", re.ASCII)
_GEO_LAT = re.compile(r"(?i)[\"']?(?:lat|latitude)[\"']?\s{0,2}[:=]\s{0,2}[\"']?(-?\d{1,2}\.\d{2,12})", re.ASCII)
_GEO_LON = re.compile(r"(?i)[\"']?(?:lon|lng|long|longitude)[\"']?\s{0,2}[:=]\s{0,2}[\"']?(-?\d{1,3}\.\d{2,12})",
                      re.ASCII)
_GEO_KEYS = ("lat", "lon", "lng", "geo", "location", "coord", "position", "gps")


def geo_valid(lat: float, lon: float) -> bool:
    return -90 <= lat <= 90 and -180 <= lon <= 180 and not (lat == 0 and lon == 0)


def _geo(t: str, ctx: ContextFn) -> list[Hit]:
    out = []
    for m in _each(_GEO_PAIR, t):
        lat, lon = float(m.group(1)), float(m.group(2))
        if geo_valid(lat, lon):
            conf = 0.9 if key_has(ctx(m.start()), _GEO_KEYS) else 0.6
            out.append(Hit("geo", "regex:geo", conf, m.start(), m.end(), f"{m.group(1)},{m.group(2)}"))
    if "lat" in t or "LAT" in t or "Lat" in t:
        for m in _each(_GEO_LAT, t):
            lon_m = _GEO_LON.search(t, m.end(), m.end() + 200)
            if lon_m and geo_valid(float(m.group(1)), float(lon_m.group(1))):
                out.append(Hit("geo", "context:geo", 0.9, m.start(1), lon_m.end(1),
                               f"{m.group(1)},{lon_m.group(1)}"))
    return out


# -- organisation host names -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OrgHosts:
    pattern: re.Pattern[str]
    names: tuple[str, ...]  # lower-cased; the regex only runs when one occurs in the text

    def present(self, lower: str) -> bool:
        return any(n in lower for n in self.names)


def org_host_regex(names: list[str]) -> OrgHosts | None:
    """Matches the organisation's host names and anything under its domains (case-insensitive)."""
    names = sorted({n.strip().lower().strip(".") for n in names if n and n.strip(". ")}, key=len, reverse=True)
    if not names:
        return None
    alternation = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"(?i)(?<![\w.@-])((?:[a-z0-9-]{{1,63}}\.){{0,10}}(?:{alternation}))(?![\w-])", re.ASCII)
    return OrgHosts(pattern, tuple(names))


def hostnames(t: str, pattern: re.Pattern[str]) -> list[Hit]:
    return [Hit("hostname", "config:hostname", 0.9, m.start(1), m.end(1), m.group(1).lower())
            for m in _each(pattern, t)]


# -- all detectors -----------------------------------------------------------------------------------
# Each detector runs only when a cheap test on the text, or on the "hint" (the lower-cased text plus
# the key names around it), says it can find something: skipping a regex pass is most of the speed.
# Detectors that report only with context are gated on their key words.
Gate = Callable[[str, str, float], bool]  # (text, hint, min_confidence)
_DETECTORS: tuple[tuple[Callable[[str, ContextFn], list[Hit]], Gate], ...] = (
    (_emails, lambda t, h, c: "@" in t or "%40" in t),
    (_ipv4, lambda t, h, c: "." in t),
    (_ipv6, lambda t, h, c: "::" in t or _HEX_COLON_HEX.search(t) is not None),
    (_macs, lambda t, h, c: _HEX_COLON_HEX.search(t) is not None or "-" in t),
    (_macs_bare, lambda t, h, c: "mac" in h),
    (_sids, lambda t, h, c: "s-1-" in h),
    (_guids, lambda t, h, c: "-" in t),
    (_user_paths, lambda t, h, c: "users" in h or "settings" in h or "/home/" in h),
    (_documents, lambda t, h, c: "." in t),
    (_sharepoint, lambda t, h, c: "sharepoint" in h or "onedrive" in h or "1drv" in h or "docs.live" in h),
    (_phones, lambda t, h, c: "+" in t or any(w in h for w in _PHONE_HINTS)),
    (_ibans, lambda t, h, c: True),
    (_cards, lambda t, h, c: True),
    (_bsns, lambda t, h, c: c <= 0.3 or any(w in h for w in _BSN_KEYS)),
    (_ssns, lambda t, h, c: "-" in t),
    (_ssns_bare, lambda t, h, c: "ssn" in h or "socialsecurity" in h),
    (_geo, lambda t, h, c: "." in t),
)
# "tel" alone would match every "telemetry".
_PHONE_HINTS = ("phone", "mobile", "msisdn", "fax", "gsm", "cell", "tel:", "\"tel\"", ".tel", "tel=", "tel\x00")


# RE2 prefilters: each is a relaxation of its detector's pattern (no lookarounds, which RE2 lacks), so
# "no match" here means no match there. RE2 rejects a text in one DFA pass, an order of magnitude
# faster than a backtracking scan; texts that pass get the precise Python pattern and validators.
_WS = r"[ \t\n\r\f\v]"  # Python's ASCII \s (RE2's \s lacks \v)
_PREFILTER_SOURCES: dict[Callable[[str, ContextFn], list[Hit]], str] = {
    _emails: r"[A-Za-z0-9\x{80}-\x{ff}._%+-](@|%40)[A-Za-z0-9-]{1,63}\.",
    _ipv4: r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
    # Single-character lookarounds become a consumed character or the text's edge: still a relaxation,
    # but one that rejects the clocks, counters and GUIDs every telemetry batch is full of.
    _ipv6: r"(?:^|[^\w:.])(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?:[0-9A-Fa-f]{1,4}|:)(?:%[0-9A-Za-z]{1,16})?(?:$|[^\w:.])",
    _macs: r"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}",
    _sids: r"[Ss]-1-\d{1,3}-\d",
    _guids: r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
    _documents: r"(?i)\.(?:doc|xls|ppt|pdf|one|msg|eml|vsd|od[tsp]|rtf|pst|ost)",
    _ibans: r"[A-Z]{2}\d{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}",
    _cards: r"(?:^|[^\d.-])\d(?:[ -]?\d){12,18}(?:$|[^\d-])",
    _bsns: r"\d{9}|\d{4}\.\d{2}\.\d{3}",
    _ssns: r"\d{3}-\d{2}-\d{4}",
    _ssns_bare: r"\d{9}",
    _geo: (rf"(?:^|[^\w.-])-?\d{{1,2}}\.\d{{4,12}}{_WS}{{0,2}},{_WS}{{0,2}}-?\d{{1,3}}\.\d{{4,12}}(?:$|[^\w.])"
           r"|(?i:lat)"),
}
try:
    import re2  # google-re2, a declared dependency

    _PREFILTERS: dict[Callable[[str, ContextFn], list[Hit]], Any] = {
        fn: re2.compile(src) for fn, src in _PREFILTER_SOURCES.items()}
except Exception:  # pragma: no cover - without RE2 every detector simply runs
    _PREFILTERS = {}


def _prefilter_set() -> tuple[Any, dict[Callable[[str, ContextFn], list[Hit]], int]] | None:
    """All prefilters in one RE2 set: one pass over the text says which of them match (a search per
    prefilter costs more in call overhead than in scanning)."""
    if not _PREFILTERS:
        return None
    try:
        rs = re2.Set.SearchSet(re2.Options())
        index = {fn: rs.Add(src) for fn, src in _PREFILTER_SOURCES.items()}
        rs.Compile()
        return rs, index
    except Exception:  # pragma: no cover - an RE2 without sets: one search per prefilter
        return None


_PREFILTER_SET = _prefilter_set()


def detect(t: str, ctx: ContextFn, org_hosts: OrgHosts | None = None, hint: str | None = None,
           min_confidence: float = 0.0) -> list[Hit]:
    """All pattern hits in byte text `t`. hint: lower-cased text plus key names (default: t lower-cased)."""
    if hint is None:
        hint = t.lower()
    hits: list[Hit] = []
    matched: set[int] | None = None
    for fn, worth in _DETECTORS:
        if worth(t, hint, min_confidence):
            pre = _PREFILTERS.get(fn)
            if pre is not None:
                if _PREFILTER_SET is not None:
                    if matched is None:
                        matched = set(_PREFILTER_SET[0].Match(t) or ())  # None when nothing matches
                    if _PREFILTER_SET[1][fn] not in matched:
                        continue
                elif pre.search(t) is None:
                    continue
            hits.extend(fn(t, ctx))
    if org_hosts is not None and org_hosts.present(hint):
        hits.extend(hostnames(t, org_hosts.pattern))
    return hits
