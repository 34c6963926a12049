"""Known identifiers and canaries: loading the CSV and matching every encoded form in one pass.

Each identifier is expanded once into its encoded forms. Forms that can appear anywhere inside other
text (plain, case variants, URL-encoded, UTF-16LE, hex, base64 at the three byte alignments) go into one
Aho–Corasick automaton over ASCII-lower-cased text, so a body is scanned once whatever the number of
identifiers. Digests (MD5/SHA-1/SHA-256) are whole tokens of a fixed length: they are looked up in a dict
per hex run instead, which keeps the automaton (and its memory) small for tens of thousands of values.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import ahocorasick

# CSV kind -> finding kind
KNOWN_KINDS: dict[str, str] = {
    "email": "known-email",
    "upn": "known-upn",
    "name": "known-name",
    "username": "known-username",
    "device": "known-device",
    "tenant": "known-tenant",
    "phone": "known-phone",
    "ip": "known-ip",
    "other": "known-other",
    "canary": "canary",
    # The organisation's host names and domains: matched by the host-name detector (which also finds
    # every host under a domain), not as literal strings.
    "hostname": "hostname",
    "domain": "hostname",
}
HOST_KINDS = frozenset(("hostname", "domain"))
MIN_VALUE_BYTES = 3
MIN_BASE64_KEY = 8  # shorter fragments of a base64 stream would match by chance


@dataclass(frozen=True, slots=True)
class Identifier:
    kind: str  # a key of KNOWN_KINDS
    value: str
    line: int | None = None

    @property
    def finding_kind(self) -> str:
        return KNOWN_KINDS[self.kind]

    @property
    def normalised(self) -> str:
        # Canaries are matched case-insensitively too, but hashed as planted.
        v = self.value.strip()
        return v if self.kind == "canary" else v.lower()


class IdentifierFileError(ValueError):
    pass


def load_identifiers(path: Path) -> list[Identifier]:
    """Read a `kind,value` CSV (UTF-8, BOM tolerated). Raises IdentifierFileError naming the line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise IdentifierFileError(f"{path}: cannot read identifiers file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise IdentifierFileError(f"{path}: not UTF-8 text (byte {e.start})") from e
    rows = csv.reader(text.splitlines())
    out: list[Identifier] = []
    header_seen = False
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if not header_seen:
            if [c.strip().lower() for c in row[:2]] != ["kind", "value"] or any(c.strip() for c in row[2:]):
                raise IdentifierFileError(f"{path}:{lineno}: expected the header row 'kind,value', got {row!r}")
            header_seen = True
            continue
        if len(row) != 2:
            raise IdentifierFileError(
                f"{path}:{lineno}: expected 2 columns (kind,value), got {len(row)}; quote values that contain commas")
        kind, value = row[0].strip().lower(), row[1].strip()
        if kind not in KNOWN_KINDS:
            raise IdentifierFileError(
                f"{path}:{lineno}: unknown kind {row[0]!r}; expected one of {', '.join(KNOWN_KINDS)}")
        if len(value.encode("utf-8")) < MIN_VALUE_BYTES:
            raise IdentifierFileError(
                f"{path}:{lineno}: value {value!r} is too short (at least {MIN_VALUE_BYTES} bytes) to match reliably")
        if kind in ("email", "upn") and "@" not in value:
            raise IdentifierFileError(f"{path}:{lineno}: {kind} value {value!r} has no '@'")
        out.append(Identifier(kind, value, lineno))
    if not header_seen:
        raise IdentifierFileError(f"{path}: empty file; expected the header row 'kind,value'")
    return out


# -- encoded forms -----------------------------------------------------------------------------------
def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def base64_fragments(data: bytes) -> Iterator[tuple[int, str]]:
    """The base64 text that `data` produces at byte offset 0, 1 and 2 of any stream, edges removed.

    At offset k the first characters also encode the k bytes before `data`, and the last character
    (unless the stream ends on a 3-byte boundary) also encodes the byte after it: both are dropped, so
    what remains is the same whatever surrounds the value.
    """
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + data).decode("ascii").rstrip("=")
        enc = enc[(0, 2, 3)[k]:]
        if (k + len(data)) % 3:
            enc = enc[:-1]
        if len(enc) >= MIN_BASE64_KEY:
            yield k, enc


@dataclass(frozen=True, slots=True)
class _Form:
    ident: int  # index into KnownMatcher.identifiers
    label: str  # detector suffix: plain, case-variant, urlencoded, utf16le, hex, base64, base64url
    exact: str | None  # case-sensitive form (base64), verified against the original text
    bounded: bool  # must not sit inside a longer word
    length: int


@dataclass(frozen=True, slots=True)
class KnownHit:
    identifier: Identifier
    detector: str  # 'known:<label>'
    start: int
    end: int


_HEX_TOKEN = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32})(?![0-9A-Fa-f])", re.ASCII)
_DIGESTS = (("md5", hashlib.md5), ("sha1", hashlib.sha1), ("sha256", hashlib.sha256))


def _word_byte(c: str) -> bool:
    return (c.isascii() and c.isalnum()) or ord(c) >= 0x80


class KnownMatcher:
    """Finds identifiers in byte text (latin-1 decoded bytes). Build once; `find` is thread-safe."""

    def __init__(self, identifiers: Sequence[Identifier]):
        self.identifiers = [i for i in identifiers if i.kind not in HOST_KINDS]
        self._automaton = ahocorasick.Automaton()
        self._digests: dict[str, list[tuple[int, str]]] = {}
        pending: dict[str, list[_Form]] = {}

        def add(key: bytes, form: _Form) -> None:
            pending.setdefault(key.lower().decode("latin-1"), []).append(form)

        for i, ident in enumerate(self.identifiers):
            v = ident.value.strip()
            bounded = ident.kind != "canary"  # a canary is unique by construction, wherever it sits
            variants = dict.fromkeys([v, v.lower(), v.upper(), v.title()], "plain")
            guid_like = re.fullmatch(r"\{?[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}?", v)
            if guid_like:
                variants[v.strip("{}").replace("-", "")] = "guid-nohyphens"  # as often sent
            for form, plain_label in variants.items():
                b = _b(form)
                add(b, _Form(i, plain_label, None, bounded, len(b)))
                for enc in dict.fromkeys([quote(form, safe=""), quote_plus(form, safe=""), quote(form, safe="@")]):
                    if enc != form:
                        add(_b(enc), _Form(i, "urlencoded", None, bounded, len(enc)))
                u16 = form.encode("utf-16-le", "surrogatepass")
                add(u16, _Form(i, "utf16le", None, bounded, len(u16)))
            for form in dict.fromkeys([v, v.lower()]):
                b = _b(form)
                if len(b) >= 4:
                    add(b.hex().encode(), _Form(i, "hex", None, False, 2 * len(b)))
                for _, frag in base64_fragments(b):
                    add(frag.encode(), _Form(i, "base64", frag, False, len(frag)))
                    url = frag.translate(str.maketrans("+/", "-_"))
                    if url != frag:
                        add(url.encode(), _Form(i, "base64url", url, False, len(url)))
            # Hashing SDKs usually lower-case and trim first (e-mail); a canary may be lower-cased by the
            # application that carries it, so every kind gets the normalised digests too.
            for source, suffix in ((v, ""), (v.lower(), "-normalised")):
                if suffix and source == v:
                    continue
                for name, fn in _DIGESTS:
                    self._digests.setdefault(fn(_b(source)).hexdigest(), []).append((i, f"{name}{{case}}{suffix}"))
        for key, forms in pending.items():
            # Two identifiers may share a form (same value listed as email and upn): keep both.
            self._automaton.add_word(key, tuple(dict.fromkeys(forms)))
        if pending:
            self._automaton.make_automaton()
        self._empty = not pending

    def __len__(self) -> int:
        return len(self.identifiers)

    def find(self, t: str, lower: str | None = None) -> list[KnownHit]:
        """All occurrences in byte text `t`; `lower` is `t` ASCII-lower-cased if the caller has it."""
        if self._empty:
            return []
        if lower is None:
            lower = t.encode("latin-1").lower().decode("latin-1")
        out: list[KnownHit] = []
        n = len(t)
        for end, forms in self._automaton.iter(lower):
            for f in forms:
                start = end + 1 - f.length
                if f.exact is not None and t[start:end + 1] != f.exact:
                    continue
                if f.bounded:
                    if f.label == "utf16le":
                        # Neighbouring UTF-16 code units: a letter or digit followed by a zero byte.
                        if (start >= 2 and t[start - 1] == "\x00" and t[start - 2].isalnum()) or (
                                end + 2 < n and t[end + 2] == "\x00" and t[end + 1].isalnum()):
                            continue
                    elif (start > 0 and _word_byte(t[start - 1])) or (end + 1 < n and _word_byte(t[end + 1])):
                        continue
                label = f.label
                if label == "plain":
                    ident = self.identifiers[f.ident]
                    if t[start:end + 1] != _b(ident.value.strip()).decode("latin-1"):
                        label = "case-variant"
                elif label == "hex":
                    seg = t[start:end + 1]
                    label = "hex-upper" if seg.isupper() else "hex" if seg.islower() or seg.isdigit() else "hex-mixed"
                out.append(KnownHit(self.identifiers[f.ident], f"known:{label}", start, end + 1))
        if self._digests and len(t) >= 32:
            for m in _HEX_TOKEN.finditer(t):
                token = m.group(0)
                entries = self._digests.get(token.lower())
                if not entries:
                    continue
                case = "-lower" if token == token.lower() else "-upper" if token == token.upper() else "-mixed"
                for i, label in entries:
                    out.append(KnownHit(self.identifiers[i], "known:" + label.format(case=case), m.start(), m.end()))
        return out
