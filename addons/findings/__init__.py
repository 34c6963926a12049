"""Personal-data findings: pattern detectors, known identifiers and canaries, vendor PII annotations.

Pure: no mitmproxy, no SQLite. The ingest worker builds one FindingsEngine and calls `scan` per flow.
See docs/findings.md for kinds, severities, the identifiers file and the redaction options.
"""

from .detectors import UNCLASSIFIED_GUID_CONFIDENCE
from .engine import PII_KINDS, SKIP_HEADERS, FindingsEngine, blank_body, resolve_path
from .identifiers import KNOWN_KINDS, Identifier, IdentifierFileError, KnownMatcher, load_identifiers
from .model import BASE_SEVERITY, VENDOR_PII_SEVERITY, Finding, severity_for
from .redact import normalise, preview, value_hash

__all__ = [
    "BASE_SEVERITY",
    "KNOWN_KINDS",
    "PII_KINDS",
    "SKIP_HEADERS",
    "UNCLASSIFIED_GUID_CONFIDENCE",
    "VENDOR_PII_SEVERITY",
    "Finding",
    "FindingsEngine",
    "Identifier",
    "IdentifierFileError",
    "KnownMatcher",
    "blank_body",
    "load_identifiers",
    "normalise",
    "preview",
    "resolve_path",
    "severity_for",
    "value_hash",
]
