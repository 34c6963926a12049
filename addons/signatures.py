"""Endpoint signatures: YAML loading, validation (linter) and the compiled matcher.

Pure module: no mitmproxy, no SQLite. The file format, the category vocabulary and the precedence rules are
described in ``docs/signatures.md``; the short version of the precedence is in :class:`Matcher`.

Safety: files are parsed with PyYAML's SafeLoader only (``yaml.compose`` gives the node tree, whose marks
give every error its ``file:line:column``; scalars are built by the same safe constructor). Every regular
expression is compiled by RE2, which runs in linear time and has no backreferences or lookarounds, so no
signature file can make per-flow matching slow.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import re2
import yaml

SCHEMA_VERSION = 1

#: The category vocabulary. Keys are what a file may say; values are what they cover (docs/signatures.md).
CATEGORIES: dict[str, str] = {
    "diagnostic-data": "telemetry upload (1DS/OneCollector, Aria, Vortex, Nexus, Application Insights)",
    "telemetry-config": "rules and settings that steer telemetry (nexusrules, OneSettings)",
    "crash-reporting": "crash and error reports (Watson, WER, OCA, crash-dump storage)",
    "experimentation": "flighting and feature configuration (ECS, TAS, config.edge.skype.com)",
    "connected-experience": "cloud features that analyse or download content (Editor, Dictation, Bing)",
    "authentication": "sign-in and device authentication",
    "licensing": "licensing and activation",
    "updates-cdn": "software updates and content delivery",
    "security-reputation": "URL/file reputation and malware protection (SmartScreen, MAPS)",
    "activity-sync": "activity history, Timeline, roaming of recent files",
    "advertising": "advertising and advertising measurement",
    "analytics": "product or web analytics SDKs and services",
    "third-party-sharing": "data sent to a company other than the product's vendor",
    "connectivity-check": "network connectivity probes (NCSI)",
    "certificate-validation": "certificate revocation and trust lists (OCSP, CRL, CTL)",
    "service": "the product's own service traffic (mail, files, meetings, portals)",
}

#: Who receives the data, seen from the product's vendor.
DATA_FLOWS: dict[str, str] = {
    "first-party": "the product's vendor",
    "vendor-affiliate": "a company owned by the vendor (LinkedIn, Bing for Microsoft)",
    "third-party": "an unrelated company",
}

#: Diagnostic levels per product family (landscape.md §6).
LEVELS: dict[str, tuple[str, ...]] = {
    "windows": ("security", "required", "enhanced", "optional"),
    "office": ("required", "optional", "neither"),
}

CONTROL_TYPES = ("gpo", "registry", "mdm", "tenant", "app-setting", "macos-defaults", "firewall", "other")
PROTOCOLS = ("onecollector", "aria-collector", "vortex", "app-insights", "onesettings", "ecs", "nexus", "http")

MAX_REGEX_LENGTH = 256  # long regexes are unreviewable; a host or path does not need more
MAX_PATTERN_LENGTH = 253  # the longest DNS name
MAX_FILE_BYTES = 4 * 1024 * 1024
_REGEX_MAX_MEM = 1 << 20  # per regex program; RE2 refuses a pattern that would need more
_SET_MAX_MEM = 64 << 20  # for the combined sets built by the matcher

_ID_RE = re2.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_HOST_CHARS_RE = re2.compile(r"[a-z0-9*_.-]+")
_METHOD_RE = re2.compile(r"[A-Z]{1,20}")
_CTYPE_RE = re2.compile(r"[a-z0-9!#$&^_.+-]+/(\*|[a-z0-9!#$&^_.+-]+)")


# -- errors ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class LintError:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    key: str  # where in the document, e.g. ``signatures[2].match.hosts[0]``
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.key}: {self.message}"


class SignatureError(ValueError):
    """Raised by :meth:`SignatureSet.load` when files are invalid; the message lists every problem."""

    def __init__(self, errors: Sequence[LintError]):
        self.errors = list(errors)
        lines = [f"{len(self.errors)} problem(s) in signature files:"] + [str(e) for e in self.errors]
        super().__init__("\n".join(lines))


# -- the data model ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchSpec:
    hosts: tuple[str, ...] = ()  # normalised: lower case, no trailing dot, IPs compressed
    host_regex: tuple[str, ...] = ()
    path_prefix: tuple[str, ...] = ()
    path_glob: tuple[str, ...] = ()
    path_regex: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    content_types: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list]:
        return {k: list(v) for k, v in self.__dict__.items() if v}


@dataclass(frozen=True, eq=False)
class Signature:
    id: str
    name: str
    vendor: str
    product: str | None
    component: str | None
    category: str
    data_flow: str
    essential: bool
    documentation_url: str | None
    match: MatchSpec = field(default_factory=MatchSpec)
    expect: dict[str, Any] = field(default_factory=dict)
    levels: dict[str, list[str]] = field(default_factory=dict)
    controls: list[dict[str, Any]] = field(default_factory=list)
    documentation: dict[str, Any] = field(default_factory=dict)  # urls, quote, checked (ISO date), revision
    examples: dict[str, list[str]] = field(default_factory=dict)  # match, no_match
    notes: str | None = None
    priority: int = 0
    deprecated: bool = False
    imported_from: dict[str, Any] = field(default_factory=dict)
    source_file: str | None = None
    line: int = 0

    def canonical(self) -> dict[str, Any]:
        """Everything that defines the signature, without where it was read from."""
        return {
            "id": self.id, "name": self.name, "vendor": self.vendor, "product": self.product,
            "component": self.component, "category": self.category, "data_flow": self.data_flow,
            "essential": self.essential, "match": self.match.as_dict(), "expect": self.expect,
            "levels": self.levels, "controls": self.controls, "documentation": self.documentation,
            "examples": self.examples, "notes": self.notes, "priority": self.priority,
            "deprecated": self.deprecated, "imported_from": self.imported_from,
        }


# -- host and path patterns --------------------------------------------------------------------------------


def normalize_host(host: str | None) -> str | None:
    """Lower case, no trailing dot, no IPv6 brackets, IDNA-encoded; ``None`` for an empty host."""
    if not host:
        return None
    h = host.strip().rstrip(".").lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if not h:
        return None
    if not h.isascii():
        try:
            h = h.encode("idna").decode("ascii")
        except UnicodeError:
            return h
    if ":" in h or h[-1].isdigit():
        try:
            return ipaddress.ip_address(h).compressed
        except ValueError:
            pass
    return h


@dataclass(frozen=True)
class HostPattern:
    """A parsed ``match.hosts`` entry.

    ``suffix`` is the run of literal labels right of the last label containing ``*``; ``left`` is the glob
    for everything left of it (``None`` for an exact host). In ``left``, a label that is exactly ``*``
    matches one or more whole labels, and ``*`` inside a label matches any characters, dots included
    (Microsoft's tables use ``*smartscreen-prod.microsoft.com`` to mean "any prefix").
    """

    text: str
    suffix: tuple[str, ...]
    left: str | None

    @property
    def exact(self) -> bool:
        return self.left is None

    @property
    def specificity(self) -> tuple[int, int, int]:
        if self.left is None:
            return (3, 0, 0)
        return (2, len(self.suffix), len(self.text.replace("*", "")))

    def left_regex(self) -> str:
        assert self.left is not None
        parts = []
        for label in self.left.split("."):
            if label == "*":
                parts.append(".+")
            else:
                parts.append(".*".join(re2.escape(chunk) for chunk in label.split("*")))
        return r"\.".join(parts)


def parse_host_pattern(text: str) -> HostPattern | str:
    """A :class:`HostPattern`, or a message saying what was expected."""
    raw = text.strip().lower()
    if raw.endswith(".") and not raw.endswith("*."):
        raw = raw[:-1]
    if not raw:
        return "expected a host name, IP literal or wildcard pattern, got an empty string"
    if len(raw) > MAX_PATTERN_LENGTH:
        return f"expected at most {MAX_PATTERN_LENGTH} characters, got {len(raw)}"
    ip = normalize_host(raw) if "*" not in raw else None
    if ip is not None and (":" in ip or ip[-1].isdigit()):
        try:
            ipaddress.ip_address(ip)
            return HostPattern(ip, (ip,), None)
        except ValueError:
            pass
    if not raw.isascii():
        try:
            raw = raw.encode("idna").decode("ascii")
        except UnicodeError:
            return f"expected a host name, got {text!r} (not valid IDNA)"
    if not _HOST_CHARS_RE.fullmatch(raw):
        return (f"expected a host name, IP literal or wildcard pattern (letters, digits, '-', '_', '.', '*'), "
                f"got {text!r}")
    labels = raw.split(".")
    if any(not label for label in labels):
        return f"expected a host name without empty labels, got {text!r}"
    if "*" in labels[-1]:
        return (f"'*' in the last label is not a host wildcard ({text!r}); Microsoft's 'host*' means any "
                "path on that host: write the host and, if needed, match.path_prefix")
    star = max((i for i, label in enumerate(labels) if "*" in label), default=-1)
    if star < 0:
        return HostPattern(raw, tuple(labels), None)
    suffix = tuple(labels[star + 1:])
    if len(suffix) < 2:
        return (f"wildcard {text!r} is too broad: expected at least two literal labels after the last '*' "
                "(e.g. '*.example.com')")
    if "**" in raw:
        return f"expected single '*' wildcards, got {text!r}"
    return HostPattern(raw, suffix, ".".join(labels[: star + 1]))


def _glob_regex(glob: str) -> str:
    # fnmatch semantics ('*' any run, '?' one character, [...] classes) rendered for RE2.
    translated = fnmatch.translate(glob)  # '(?s:...)\\Z'
    body = translated[4:-3] if translated.startswith("(?s:") and translated.endswith(")\\Z") else translated
    return "(?s:" + body + ")"


def _path_only(path: str | None) -> str | None:
    if path is None:
        return None
    p = path.split("?", 1)[0].split("#", 1)[0]
    return (p or "/").lower()


def _media_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _re2_options(max_mem: int = _REGEX_MAX_MEM, case_sensitive: bool = False) -> re2.Options:
    o = re2.Options()
    o.log_errors = False  # errors are reported as lint errors, not on stderr
    o.max_mem = max_mem
    o.case_sensitive = case_sensitive
    return o


def check_regex(pattern: str) -> str | None:
    """``None`` if the pattern is acceptable, else a message saying what was expected."""
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"dangerous regex: expected at most {MAX_REGEX_LENGTH} characters, got {len(pattern)}"
    if "(?=" in pattern or "(?!" in pattern or "(?<=" in pattern or "(?<!" in pattern:
        return "invalid regex: lookaround assertions are not supported (RE2 guarantees linear-time matching)"
    try:
        compiled = re2.compile(pattern, _re2_options())
    except re2.error as e:
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        if "invalid escape sequence: \\" in msg and msg[-1:].isdigit():
            return "invalid regex: backreferences are not supported (RE2 guarantees linear-time matching)"
        if "pattern too large" in msg or "invalid repetition size" in msg or "bad repetition" in msg:
            return f"dangerous regex: the compiled program would be too large ({msg})"
        return f"invalid regex: {msg}"
    if compiled.fullmatch("") is not None or compiled.fullmatch("teletap-canary.example.invalid") is not None:
        return "dangerous regex: it matches the empty string or any host; expected something specific"
    return None


# -- loading and validation --------------------------------------------------------------------------------

_TOP_KEYS = ("schema_version", "signatures")
_SIG_KEYS = ("id", "name", "vendor", "product", "component", "category", "data_flow", "match", "expect",
             "levels", "controls", "essential", "documentation", "examples", "notes", "priority",
             "deprecated", "imported_from")
_REQUIRED_SIG_KEYS = ("id", "name", "vendor", "category", "data_flow", "match", "documentation", "examples")
_MATCH_KEYS = ("hosts", "host_regex", "path_prefix", "path_glob", "path_regex", "methods", "ports",
               "content_types")
_EXPECT_KEYS = ("tls_pinned", "protocol", "payload_format")
_DOC_KEYS = ("urls", "quote", "checked", "revision")
_CONTROL_KEYS = ("type", "name", "path", "key", "value", "values", "url", "notes")
_EXAMPLE_KEYS = ("match", "no_match")


def _expected(options: Iterable[str]) -> str:
    return ", ".join(options)


class _FileParser:
    """Validates one file's node tree, collecting errors with their marks."""

    def __init__(self, path: Path, display: str):
        self.path = path
        self.file = display
        self.errors: list[LintError] = []
        self.loader: yaml.SafeLoader | None = None

    def err(self, node: yaml.Node | None, key: str, message: str) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else (1, 1)
        self.errors.append(LintError(self.file, line, col, key, message))

    # Scalars are built by the SafeLoader's own constructor, so tags behave exactly as in yaml.safe_load;
    # what it refuses (unsafe tags, impossible dates) becomes a lint error instead of an exception.
    def scalar(self, node: yaml.Node, key: str) -> Any:
        assert self.loader is not None
        try:
            return self.loader.construct_object(node, deep=False)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            problem = getattr(e, "problem", None) or str(e)
            self.err(node, key, f"invalid value {node.value!r} ({node.tag}): {problem}")
            return _INVALID

    def mapping(self, node: yaml.Node, key: str,
                allowed: Sequence[str]) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.err(node, key, f"expected a mapping, got {_kind(node)}")
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != "tag:yaml.org,2002:str":
                self.err(knode, key, f"expected a string key, got {_kind(knode)}")
                continue
            name = knode.value
            sub = f"{key}.{name}" if key else name
            if name in out:
                self.err(knode, sub, "duplicate key (YAML would silently keep only the last one)")
                continue
            if name not in allowed:
                self.err(knode, sub, f"unknown key; expected one of: {_expected(allowed)}")
                continue
            out[name] = (knode, vnode)
        return out

    def string(self, node: yaml.Node, key: str, *, allow_empty: bool = False) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
            value = str(node.value)
            if not allow_empty and not value.strip():
                self.err(node, key, "expected a non-empty string")
                return None
            return value
        self.err(node, key, f"expected a string, got {_kind(node)}")
        return None

    def optional_string(self, node: yaml.Node, key: str) -> str | None:
        if _is_null(node):
            return None
        return self.string(node, key)

    def boolean(self, node: yaml.Node, key: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
            value = self.scalar(node, key)
            return None if value is _INVALID else bool(value)
        self.err(node, key, f"expected true or false, got {_kind(node)}")
        return None

    def integer(self, node: yaml.Node, key: str, lo: int, hi: int) -> int | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            value = self.scalar(node, key)
            if value is _INVALID:
                return None
            value = int(value)
            if lo <= value <= hi:
                return value
            self.err(node, key, f"expected an integer from {lo} to {hi}, got {value}")
            return None
        self.err(node, key, f"expected an integer, got {_kind(node)}")
        return None

    def choice(self, node: yaml.Node, key: str, options: Iterable[str]) -> str | None:
        value = self.string(node, key)
        options = list(options)
        if value is not None and value not in options:
            self.err(node, key, f"expected one of: {_expected(options)}; got {value!r}")
            return None
        return value

    def seq(self, node: yaml.Node, key: str, *, allow_empty: bool = False) -> list[yaml.Node] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, key, f"expected a list, got {_kind(node)}")
            return None
        if not node.value and not allow_empty:
            self.err(node, key, "expected a non-empty list")
            return None
        return list(node.value)

    def string_list(self, node: yaml.Node, key: str) -> list[tuple[yaml.Node, str]]:
        items = self.seq(node, key)
        out = []
        for i, item in enumerate(items or []):
            value = self.string(item, f"{key}[{i}]")
            if value is not None:
                out.append((item, value))
        return out

    # -- the document --------------------------------------------------------------------------------------

    def parse(self) -> list[tuple[Signature, dict[str, yaml.Node]]]:
        try:
            size = self.path.stat().st_size
            if size > MAX_FILE_BYTES:
                self.err(None, "file", f"expected at most {MAX_FILE_BYTES} bytes, got {size}")
                return []
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.err(None, "file", f"cannot read: {e}")
            return []
        try:
            self.loader = yaml.SafeLoader(text)
            try:
                root = self.loader.get_single_node()
            finally:
                self.loader.dispose()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            what = "; ".join(x for x in (e.context, e.problem) if x)
            self.errors.append(LintError(self.file, line, col, "yaml", f"invalid YAML: {what}"))
            return []
        except yaml.YAMLError as e:
            self.err(None, "yaml", f"invalid YAML: {e}")
            return []
        if root is None:
            self.err(None, "file", "expected a mapping with 'schema_version' and 'signatures', got an empty file")
            return []
        top = self.mapping(root, "", _TOP_KEYS)
        if top is None:
            return []
        if "schema_version" not in top:
            self.err(root, "schema_version", f"required key missing; expected schema_version: {SCHEMA_VERSION}")
        else:
            v = self.integer(top["schema_version"][1], "schema_version", 1, 1_000_000)
            if v is not None and v != SCHEMA_VERSION:
                self.err(top["schema_version"][1], "schema_version",
                         f"expected {SCHEMA_VERSION} (this teletap understands version {SCHEMA_VERSION}), got {v}")
        if "signatures" not in top:
            self.err(root, "signatures", "required key missing; expected a list of signatures")
            return []
        items = self.seq(top["signatures"][1], "signatures")
        out = []
        for i, item in enumerate(items or []):
            parsed = self.signature(item, f"signatures[{i}]")
            if parsed is not None:
                out.append(parsed)
        return out

    def signature(self, node: yaml.Node, key: str) -> tuple[Signature, dict[str, yaml.Node]] | None:
        m = self.mapping(node, key, _SIG_KEYS)
        if m is None:
            return None
        before = len(self.errors)
        missing = {"documentation": "missing provenance: expected documentation with urls and checked",
                   "examples": "expected examples with at least one URL or host under 'match'"}
        for req in _REQUIRED_SIG_KEYS:
            if req not in m:
                self.err(node, f"{key}.{req}", missing.get(req, "required key missing"))
        v: dict[str, Any] = {}
        nodes: dict[str, yaml.Node] = {k: vn for k, (_, vn) in m.items()}
        if "id" in m:
            ident = self.string(m["id"][1], f"{key}.id")
            if ident is not None and not _ID_RE.fullmatch(ident):
                self.err(m["id"][1], f"{key}.id",
                         "expected a stable id of lower-case letters, digits, '.', '_' or '-' (at most 100), "
                         f"got {ident!r}")
                ident = None
            v["id"] = ident
        for name in ("name", "vendor"):
            if name in m:
                v[name] = self.string(m[name][1], f"{key}.{name}")
        for name in ("product", "component", "notes"):
            v[name] = self.optional_string(m[name][1], f"{key}.{name}") if name in m else None
        if "category" in m:
            v["category"] = self.choice(m["category"][1], f"{key}.category", CATEGORIES)
        if "data_flow" in m:
            v["data_flow"] = self.choice(m["data_flow"][1], f"{key}.data_flow", DATA_FLOWS)
        v["essential"] = self.boolean(m["essential"][1], f"{key}.essential") if "essential" in m else False
        v["deprecated"] = self.boolean(m["deprecated"][1], f"{key}.deprecated") if "deprecated" in m else False
        v["priority"] = (self.integer(m["priority"][1], f"{key}.priority", -1000, 1000)
                         if "priority" in m else 0)
        v["match"] = self.match(m["match"][1], f"{key}.match") if "match" in m else None
        v["expect"] = self.expect(m["expect"][1], f"{key}.expect") if "expect" in m else {}
        v["levels"] = self.levels(m["levels"][1], f"{key}.levels") if "levels" in m else {}
        v["controls"] = self.controls(m["controls"][1], f"{key}.controls") if "controls" in m else []
        v["documentation"] = (self.documentation(m["documentation"][1], f"{key}.documentation")
                              if "documentation" in m else None)
        v["examples"] = self.examples(m["examples"][1], f"{key}.examples") if "examples" in m else None
        v["imported_from"] = (self.imported_from(m["imported_from"][1], f"{key}.imported_from")
                              if "imported_from" in m else {})
        if len(self.errors) != before:
            return None
        doc = v["documentation"]
        sig = Signature(
            id=v["id"], name=v["name"], vendor=v["vendor"], product=v["product"], component=v["component"],
            category=v["category"], data_flow=v["data_flow"], essential=v["essential"],
            documentation_url=(doc.get("urls") or [None])[0], match=v["match"], expect=v["expect"],
            levels=v["levels"], controls=v["controls"], documentation=doc, examples=v["examples"],
            notes=v["notes"], priority=v["priority"], deprecated=v["deprecated"],
            imported_from=v["imported_from"], source_file=str(self.path), line=node.start_mark.line + 1,
        )
        return sig, nodes

    def match(self, node: yaml.Node, key: str) -> MatchSpec | None:
        m = self.mapping(node, key, _MATCH_KEYS)
        if m is None:
            return None
        if "hosts" not in m and "host_regex" not in m:
            self.err(node, key, "expected 'hosts' or 'host_regex' (a signature must say which hosts it covers)")
        out: dict[str, list] = {k: [] for k in _MATCH_KEYS}
        if "hosts" in m:
            seen: dict[str, yaml.Node] = {}
            for i, (item, value) in enumerate(self.string_list(m["hosts"][1], f"{key}.hosts")):
                parsed = parse_host_pattern(value)
                if isinstance(parsed, str):
                    self.err(item, f"{key}.hosts[{i}]", parsed)
                elif parsed.text in seen:
                    first = seen[parsed.text]
                    self.err(item, f"{key}.hosts[{i}]",
                             f"duplicate host {parsed.text!r} (already listed at line {first.start_mark.line + 1})")
                else:
                    seen[parsed.text] = item
                    out["hosts"].append(parsed.text)
        for rk in ("host_regex", "path_regex"):
            if rk in m:
                for i, (item, value) in enumerate(self.string_list(m[rk][1], f"{key}.{rk}")):
                    problem = check_regex(value)
                    if problem:
                        self.err(item, f"{key}.{rk}[{i}]", problem)
                    else:
                        out[rk].append(value)
        for pk in ("path_prefix", "path_glob"):
            if pk in m:
                for i, (item, value) in enumerate(self.string_list(m[pk][1], f"{key}.{pk}")):
                    if not value.startswith("/"):
                        self.err(item, f"{key}.{pk}[{i}]", f"expected a path starting with '/', got {value!r}")
                    elif len(value) > MAX_REGEX_LENGTH:
                        self.err(item, f"{key}.{pk}[{i}]", f"expected at most {MAX_REGEX_LENGTH} characters")
                    else:
                        out[pk].append(value)
        if "methods" in m:
            for i, (item, value) in enumerate(self.string_list(m["methods"][1], f"{key}.methods")):
                if not _METHOD_RE.fullmatch(value):
                    self.err(item, f"{key}.methods[{i}]", f"expected an upper-case HTTP method, got {value!r}")
                else:
                    out["methods"].append(value)
        if "ports" in m:
            for i, item in enumerate(self.seq(m["ports"][1], f"{key}.ports") or []):
                port = self.integer(item, f"{key}.ports[{i}]", 1, 65535)
                if port is not None:
                    out["ports"].append(port)
        if "content_types" in m:
            for i, (item, value) in enumerate(self.string_list(m["content_types"][1], f"{key}.content_types")):
                if not _CTYPE_RE.fullmatch(value.lower()):
                    self.err(item, f"{key}.content_types[{i}]",
                             f"expected a media type such as 'application/json' or 'application/*', got {value!r}")
                else:
                    out["content_types"].append(value.lower())
        return MatchSpec(**{k: tuple(v) for k, v in out.items()})

    def expect(self, node: yaml.Node, key: str) -> dict[str, Any]:
        m = self.mapping(node, key, _EXPECT_KEYS)
        out: dict[str, Any] = {}
        if m is None:
            return out
        if "tls_pinned" in m:
            out["tls_pinned"] = self.boolean(m["tls_pinned"][1], f"{key}.tls_pinned")
        if "protocol" in m:
            out["protocol"] = self.choice(m["protocol"][1], f"{key}.protocol", PROTOCOLS)
        if "payload_format" in m:
            out["payload_format"] = self.string(m["payload_format"][1], f"{key}.payload_format")
        return out

    def levels(self, node: yaml.Node, key: str) -> dict[str, list[str]]:
        m = self.mapping(node, key, tuple(LEVELS))
        out: dict[str, list[str]] = {}
        for family, (_, vnode) in (m or {}).items():
            values = []
            for i, item in enumerate(self.seq(vnode, f"{key}.{family}") or []):
                level = self.choice(item, f"{key}.{family}[{i}]", LEVELS[family])
                if level is not None:
                    values.append(level)
            out[family] = values
        return out

    def controls(self, node: yaml.Node, key: str) -> list[dict[str, Any]]:
        out = []
        for i, item in enumerate(self.seq(node, key) or []):
            ck = f"{key}[{i}]"
            m = self.mapping(item, ck, _CONTROL_KEYS)
            if m is None:
                continue
            control: dict[str, Any] = {}
            for req in ("type", "name"):
                if req not in m:
                    self.err(item, f"{ck}.{req}", "required key missing")
            if "type" in m:
                control["type"] = self.choice(m["type"][1], f"{ck}.type", CONTROL_TYPES)
            for name in ("name", "path", "key", "value", "url", "notes"):
                if name in m:
                    control[name] = self.string(m[name][1], f"{ck}.{name}")
            if "values" in m:
                vm = m["values"][1]
                if not isinstance(vm, yaml.MappingNode):
                    self.err(vm, f"{ck}.values", f"expected a mapping of value to meaning, got {_kind(vm)}")
                else:
                    values = {}
                    for kn, vn in vm.value:
                        if not isinstance(kn, yaml.ScalarNode) or not isinstance(vn, yaml.ScalarNode):
                            self.err(kn, f"{ck}.values", "expected scalar keys and values")
                            continue
                        values[str(self.scalar(kn, f"{ck}.values"))] = str(self.scalar(vn, f"{ck}.values"))
                    control["values"] = values
            out.append(control)
        return out

    def documentation(self, node: yaml.Node, key: str) -> dict[str, Any] | None:
        m = self.mapping(node, key, _DOC_KEYS)
        if m is None:
            return None
        out: dict[str, Any] = {}
        if "urls" not in m:
            self.err(node, f"{key}.urls", "missing provenance: expected at least one documentation URL")
        else:
            urls = []
            for i, (item, value) in enumerate(self.string_list(m["urls"][1], f"{key}.urls")):
                parts = urlsplit(value)
                if parts.scheme not in ("https", "http") or not parts.netloc:
                    self.err(item, f"{key}.urls[{i}]", f"expected an http(s) URL, got {value!r}")
                else:
                    urls.append(value)
            out["urls"] = urls
        if "checked" not in m:
            self.err(node, f"{key}.checked", "missing provenance: expected the date the source was checked "
                     "(YYYY-MM-DD)")
        else:
            cnode = m["checked"][1]
            value = self.scalar(cnode, f"{key}.checked") if isinstance(cnode, yaml.ScalarNode) else None
            if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
                out["checked"] = value.isoformat()
            elif value is not _INVALID:
                self.err(cnode, f"{key}.checked", f"expected a date YYYY-MM-DD, got {_kind(cnode)}")
        for name in ("quote", "revision"):
            if name in m:
                out[name] = self.string(m[name][1], f"{key}.{name}")
        return out

    def examples(self, node: yaml.Node, key: str) -> dict[str, list[str]] | None:
        m = self.mapping(node, key, _EXAMPLE_KEYS)
        if m is None:
            return None
        out: dict[str, list[str]] = {"match": [], "no_match": []}
        if "match" not in m:
            self.err(node, f"{key}.match", "expected at least one URL or host that must match")
        for name in _EXAMPLE_KEYS:
            if name in m:
                for i, (item, value) in enumerate(self.string_list(m[name][1], f"{key}.{name}")):
                    try:
                        parse_target(value)
                    except ValueError as e:
                        self.err(item, f"{key}.{name}[{i}]", str(e))
                        continue
                    out[name].append(value)
        return out

    def imported_from(self, node: yaml.Node, key: str) -> dict[str, Any]:
        # Free-form provenance of generated signatures (e.g. M365 record id, serviceArea, required flag).
        if not isinstance(node, yaml.MappingNode):
            self.err(node, key, f"expected a mapping, got {_kind(node)}")
            return {}
        out: dict[str, Any] = {}
        for kn, vn in node.value:
            if not isinstance(kn, yaml.ScalarNode):
                self.err(kn, key, "expected scalar keys")
                continue
            if isinstance(vn, yaml.ScalarNode):
                value = self.scalar(vn, f"{key}.{kn.value}")
                out[str(kn.value)] = value.isoformat() if isinstance(value, _dt.date) else value
            elif isinstance(vn, yaml.SequenceNode) and all(isinstance(x, yaml.ScalarNode) for x in vn.value):
                out[str(kn.value)] = [self.scalar(x, f"{key}.{kn.value}") for x in vn.value]
            else:
                self.err(vn, f"{key}.{kn.value}", "expected a scalar or a list of scalars")
        return out


_INVALID = object()  # a scalar the safe constructor refused (already reported)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
             "null": "null", "timestamp": "a date/time"}
    shown = node.value if len(str(node.value)) <= 40 else str(node.value)[:37] + "..."
    return f"{names.get(tag, tag)} ({shown!r})" if tag != "null" else "null"


def parse_target(text: str) -> tuple[str, str | None, str | None, int | None]:
    """``[METHOD ]URL-or-host`` → (host, path, method, port). Raises ValueError with a readable message."""
    s = text.strip()
    method = None
    if " " in s:
        method, s = s.split(None, 1)
        if not _METHOD_RE.fullmatch(method):
            raise ValueError(f"expected '[METHOD ]URL-or-host' with an upper-case method, got {text!r}")
    if "://" not in s:
        s = "//" + s
    try:
        parts = urlsplit(s)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"expected a URL or host, got {text!r} ({e})") from None
    host = normalize_host(parts.hostname)
    if not host:
        raise ValueError(f"expected a URL or host, got {text!r}")
    if port is None and parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
    path = parts.path or None
    if path is not None and parts.query:
        path += "?" + parts.query
    if path is None and parts.scheme:
        path = "/"
    return host, path, method, port


# -- the set -----------------------------------------------------------------------------------------------


def _yaml_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file()))
        else:
            files.append(p)
    return files


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _conflict_key(sig: Signature) -> tuple:
    m = sig.match
    return (tuple(sorted(m.path_prefix)), tuple(sorted(m.path_glob)), tuple(sorted(m.path_regex)),
            tuple(sorted(m.methods)), tuple(sorted(m.ports)), tuple(sorted(m.content_types)), sig.priority)


def _load(paths: Sequence[Path]) -> tuple[list[Signature], list[LintError]]:
    errors: list[LintError] = []
    signatures: list[Signature] = []
    seen_ids: dict[str, tuple[str, int]] = {}
    # pattern → (signature id, file, line) for conflict detection: the same host (or regex) with the same
    # path/method/port/content-type constraints and priority in two signatures means precedence cannot decide.
    patterns: dict[tuple, tuple[str, str, int]] = {}
    files = _yaml_files(paths)
    for path in files:
        if not path.exists():
            errors.append(LintError(str(path), 1, 1, "file", "not found"))
            continue
        parser = _FileParser(path, _display(path))
        parsed = parser.parse()
        errors.extend(parser.errors)
        for sig, nodes in parsed:
            idnode = nodes["id"]
            where = (parser.file, idnode.start_mark.line + 1)
            if sig.id in seen_ids:
                f, ln = seen_ids[sig.id]
                errors.append(LintError(parser.file, idnode.start_mark.line + 1, idnode.start_mark.column + 1,
                                        "id", f"duplicate id {sig.id!r} (first defined at {f}:{ln})"))
                continue
            seen_ids[sig.id] = where
            hosts_node = nodes["match"]
            conflict = False
            ck = _conflict_key(sig)
            for kind, values in (("host", sig.match.hosts), ("host_regex", sig.match.host_regex)):
                for value in values:
                    key = (kind, value, *ck)
                    if key in patterns:
                        other, f, ln = patterns[key]
                        errors.append(LintError(
                            parser.file, hosts_node.start_mark.line + 1, hosts_node.start_mark.column + 1,
                            f"{sig.id}.match",
                            f"conflicting patterns: {kind} {value!r} with the same constraints is already "
                            f"matched by {other!r} ({f}:{ln}); narrow one of them or set a different priority"))
                        conflict = True
                    else:
                        patterns[key] = (sig.id, *where)
            if not conflict:
                signatures.append(sig)
    if not files:
        errors.append(LintError(", ".join(str(p) for p in paths) or "-", 1, 1, "file",
                                "no signature files (*.yaml) found"))
    return signatures, sorted(errors)


def lint(paths: Sequence[Path]) -> list[LintError]:
    """Every problem in the given files or folders (folders are searched for *.yaml), sorted by position."""
    return _load([Path(p) for p in paths])[1]


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass
class SignatureSet:
    signatures: list[Signature]
    hash: str  # sha256 over the canonical content (sorted by id), independent of file paths and order

    @classmethod
    def from_signatures(cls, signatures: Iterable[Signature]) -> SignatureSet:
        sigs = sorted(signatures, key=lambda s: s.id)
        digest = hashlib.sha256(_canonical_json([s.canonical() for s in sigs]).encode()).hexdigest()
        return cls(sigs, digest)

    @classmethod
    def load(cls, paths: Sequence[Path] | None = None) -> SignatureSet:
        if paths is None:
            from .resources import signatures_dir

            paths = [signatures_dir()]
        signatures, errors = _load([Path(p) for p in paths])
        if errors:
            raise SignatureError(errors)
        return cls.from_signatures(signatures)

    def by_id(self) -> dict[str, Signature]:
        return {s.id: s for s in self.signatures}


def signature_rows(sigset: SignatureSet) -> list[dict]:
    """Rows for the SQLite ``signatures`` table."""
    rows = []
    for s in sigset.signatures:
        rows.append({
            "id": s.id, "name": s.name, "vendor": s.vendor, "product": s.product, "component": s.component,
            "category": s.category, "data_flow": s.data_flow, "essential": int(s.essential),
            "levels": _canonical_json(s.levels), "controls": _canonical_json(s.controls),
            "documentation_url": s.documentation_url, "documentation": _canonical_json(s.documentation),
            "expect": _canonical_json(s.expect), "match": _canonical_json(s.match.as_dict()),
            "notes": s.notes, "source_file": s.source_file,
        })
    return rows


# -- the matcher -------------------------------------------------------------------------------------------


class _Rule:
    """One signature's non-host constraints, compiled."""

    __slots__ = ("content_types", "index", "methods", "path_globs", "path_prefixes", "path_regexes", "ports",
                 "priority", "sig", "unconstrained")

    def __init__(self, sig: Signature, index: int):
        self.sig = sig
        self.index = index
        self.priority = sig.priority
        m = sig.match
        self.path_prefixes = tuple(p.lower() for p in m.path_prefix)
        self.path_globs = tuple((re2.compile(_glob_regex(g.lower()), _re2_options()), len(g.replace("*", "")))
                                for g in m.path_glob)
        self.path_regexes = tuple((re2.compile(r, _re2_options()), len(r) // 2) for r in m.path_regex)
        self.methods = frozenset(m.methods)
        self.ports = frozenset(m.ports)
        self.content_types = m.content_types
        self.unconstrained = not (self.path_prefixes or self.path_globs or self.path_regexes or self.methods
                                  or self.ports or self.content_types)

    def score(self, path: str | None, method: str | None, port: int | None,
              ctype: str | None) -> tuple[int, int, int] | None:
        """(path specificity, other constraints met, -constraints that could not be checked), or None."""
        if self.unconstrained:
            return _NO_CONSTRAINTS
        unknown = 0
        path_score = 0
        if self.path_prefixes or self.path_globs or self.path_regexes:
            if path is None:
                unknown += 1
            else:
                best = -1
                for prefix in self.path_prefixes:
                    if path.startswith(prefix):
                        best = max(best, len(prefix))
                for rx, weight in self.path_globs:
                    if rx.fullmatch(path) is not None:
                        best = max(best, weight)
                for rx, weight in self.path_regexes:
                    if rx.search(path) is not None:
                        best = max(best, weight)
                if best < 0:
                    return None
                path_score = best + 1
        met = 0
        for wanted, value in ((self.methods, method), (self.ports, port)):
            if wanted:
                if value is None:
                    unknown += 1
                elif value in wanted:
                    met += 1
                else:
                    return None
        if self.content_types:
            if ctype is None:
                unknown += 1
            elif any(ctype == t or (t.endswith("/*") and ctype.startswith(t[:-1])) for t in self.content_types):
                met += 1
            else:
                return None
        return path_score, met, -unknown


_NO_CONSTRAINTS = (0, 0, 0)


class _TrieNode:
    __slots__ = ("children", "globs", "set", "single")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}
        self.globs: list[tuple[str, tuple[int, int, int], _Rule]] = []
        self.set: Any = None
        self.single: Any = None


class Matcher:
    """Compiled once from a :class:`SignatureSet`; ``match`` costs O(labels in the host), not O(signatures).

    Lookup: an exact-host table, then a trie of reversed literal labels whose nodes hold the wildcard
    patterns ending there (each node's globs are one RE2 set), then one RE2 set of all ``host_regex``.
    Every host candidate's rule (paths, methods, ports, content types) is checked, and the best wins:

    1. host specificity: exact host > wildcard with more literal labels after the last ``*`` > wildcard with
       more literal characters > ``host_regex``;
    2. path specificity: a matched path constraint beats none, longer literal prefix/glob beats shorter;
    3. more method/port/content-type constraints met;
    4. fewer constraints that could not be checked (e.g. no path for a TLS failure seen only by SNI): a
       constraint on a value the caller did not supply is treated as unknown, not as a mismatch;
    5. higher ``priority``; 6. the smaller id (deterministic).
    """

    def __init__(self, sigset: SignatureSet):
        self.sigset = sigset
        self._exact: dict[str, list[_Rule]] = {}
        self._trie = _TrieNode()
        self._regex_rules: list[_Rule] = []
        self._regex_set: Any = None
        regexes: list[str] = []
        # Index in id order: precedence's last tie-break prefers the smaller id.
        for index, sig in enumerate(sorted(sigset.signatures, key=lambda s: s.id)):
            rule = _Rule(sig, index)
            for text in sig.match.hosts:
                hp = parse_host_pattern(text)
                if isinstance(hp, str):  # validated on load; a hand-built Signature may still be wrong
                    raise ValueError(f"signature {sig.id}: {hp}")
                if hp.exact:
                    self._exact.setdefault(hp.text, []).append(rule)
                    continue
                node = self._trie
                for label in reversed(hp.suffix):
                    node = node.children.setdefault(label, _TrieNode())
                node.globs.append((hp.left_regex(), hp.specificity, rule))
            for rx in sig.match.host_regex:
                regexes.append(rx)
                self._regex_rules.append(rule)
        self._compile_trie(self._trie)
        if regexes:
            self._regex_set = re2.Set.FullMatchSet(_re2_options(_SET_MAX_MEM))
            for rx in regexes:
                self._regex_set.Add(rx)
            self._regex_set.Compile()

    def _compile_trie(self, root: _TrieNode) -> None:
        stack = [root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if len(node.globs) == 1:
                node.single = re2.compile(node.globs[0][0], _re2_options())
            elif node.globs:
                node.set = re2.Set.FullMatchSet(_re2_options(_SET_MAX_MEM))
                for rx, _, _ in node.globs:
                    node.set.Add(rx)
                node.set.Compile()

    def candidates(self, host: str) -> list[tuple[tuple[int, int, int], _Rule]]:
        """Every rule whose host pattern covers ``host`` (already normalised), with its host specificity."""
        out: list[tuple[tuple[int, int, int], _Rule]] = [((3, 0, 0), r) for r in self._exact.get(host, ())]
        labels = host.split(".")
        node = self._trie
        for depth, label in enumerate(reversed(labels), start=1):
            node = node.children.get(label)  # type: ignore[assignment]
            if node is None:
                break
            if node.globs and depth < len(labels):
                left = ".".join(labels[: len(labels) - depth])
                if node.single is not None:
                    if node.single.fullmatch(left) is not None:
                        out.append((node.globs[0][1], node.globs[0][2]))
                else:
                    for i in node.set.Match(left) or ():
                        out.append((node.globs[i][1], node.globs[i][2]))
        if self._regex_set is not None:
            for i in self._regex_set.Match(host) or ():
                out.append(((1, 0, 0), self._regex_rules[i]))
        return out

    def match(self, host: str | None, path: str | None = None, method: str | None = None,
              port: int | None = None, content_type: str | None = None) -> Signature | None:
        h = normalize_host(host)
        if h is None:
            return None
        p = _path_only(path)
        meth = method.upper() if method else None
        ctype = _media_type(content_type)
        best_key: tuple | None = None
        best: Signature | None = None
        for host_rank, rule in self.candidates(h):
            score = rule.score(p, meth, port, ctype)
            if score is None:
                continue
            # Signatures are sorted by id, so -index prefers the smaller id on a tie.
            key = (host_rank, score, rule.priority, -rule.index)
            if best_key is None or key > best_key:
                best_key, best = key, rule.sig
        return best

    def match_target(self, target: str) -> Signature | None:
        """Match ``[METHOD ]URL-or-host`` as written in examples and on the command line."""
        host, path, method, port = parse_target(target)
        return self.match(host, path, method, port)


# -- examples ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExampleFailure:
    signature: Signature
    example: str
    expected_match: bool
    got: str | None  # the id that matched instead, or None

    def __str__(self) -> str:
        where = f"{self.signature.source_file}:{self.signature.line}"
        if self.expected_match:
            got = f"matched {self.got!r} instead" if self.got else "matched nothing"
            return f"{where}: {self.signature.id}: example {self.example!r} should match this signature, {got}"
        return f"{where}: {self.signature.id}: example {self.example!r} must not match this signature, but does"


def run_examples(sigset: SignatureSet, matcher: Matcher | None = None) -> tuple[int, list[ExampleFailure]]:
    """Run every signature's examples against the whole set; returns (examples run, failures)."""
    matcher = matcher or Matcher(sigset)
    failures = []
    count = 0
    for sig in sigset.signatures:
        for expected, examples in ((True, sig.examples.get("match", [])), (False, sig.examples.get("no_match", []))):
            for example in examples:
                count += 1
                got = matcher.match_target(example)
                got_id = got.id if got else None
                if (got_id == sig.id) != expected:
                    failures.append(ExampleFailure(sig, example, expected, got_id))
    return count, failures
