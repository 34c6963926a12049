"""The Finding record, the kinds teletap reports and their base severities."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

LOW, MEDIUM, HIGH = "low", "medium", "high"

# Base severity per kind, before escalation (third-party destination, canary). Kept in one table so
# docs/findings.md and the code cannot drift apart: the docs quote this table.
BASE_SEVERITY: dict[str, str] = {
    # Direct identifiers and contact data
    "email": MEDIUM,
    "upn": MEDIUM,
    "phone": MEDIUM,
    # Network and device identifiers
    "ipv4-public": MEDIUM,
    "ipv4-private": LOW,
    "ipv6-public": MEDIUM,
    "ipv6-private": LOW,
    "mac": MEDIUM,
    "sid": MEDIUM,
    "guid": MEDIUM,
    "hostname": MEDIUM,
    # Content and behaviour
    "user-path": MEDIUM,
    "document": MEDIUM,
    "sharepoint-url": MEDIUM,
    "geo": HIGH,
    # Financial and national identifiers: misuse is directly harmful
    "iban": HIGH,
    "payment-card": HIGH,
    "bsn": HIGH,
    "ssn": HIGH,
    # Known identifiers of the organisation
    "known-email": MEDIUM,
    "known-upn": MEDIUM,
    "known-name": MEDIUM,
    "known-username": MEDIUM,
    "known-device": MEDIUM,
    "known-phone": MEDIUM,
    "known-ip": MEDIUM,
    "known-other": MEDIUM,
    "known-tenant": LOW,
    "canary": HIGH,
    # Vendor annotations: Microsoft's own classification of the field
    "customer-content": HIGH,
}
VENDOR_PII_SEVERITY = MEDIUM  # every 'vendor-pii:<Kind>'
DEFAULT_SEVERITY = MEDIUM

THIRD_PARTY = "third-party"


def severity_for(kind: str, data_flow: str | None) -> str:
    """Base severity, escalated to high for canaries and for anything sent to a third party."""
    if kind == "canary" or data_flow == THIRD_PARTY:
        return HIGH
    if kind.startswith("vendor-pii:"):
        return VENDOR_PII_SEVERITY
    return BASE_SEVERITY.get(kind, DEFAULT_SEVERITY)


@dataclass
class Finding:
    kind: str
    detector: str
    confidence: float
    severity: str
    location: str
    preview: str
    value_hash: str
    value: str | None
    event_position: int | None
    span: tuple[int, int] | None
    # Further body spans of the same value (repeats at this location, or, for an event finding, the
    # raw-body occurrences folded into it); only blank_body needs them.
    extra_spans: tuple[tuple[int, int], ...] = field(default=(), repr=False)


class PendingSpans(Protocol):
    def resolve(self) -> None: ...


# extra_spans may be computed on first read: locating the body spans of values found in decoded events
# costs a pass over the body that only blanking needs. The engine attaches a PendingSpans to the
# findings concerned; reading extra_spans (blank_body, asdict, ==, pickling) resolves it, so callers
# never see the difference.
def _get_extra_spans(self: Finding) -> tuple[tuple[int, int], ...]:
    pending = self.__dict__.get("_pending")
    if pending is not None:
        pending.resolve()  # sets _extra_spans and clears _pending on every finding it concerns
    return self.__dict__.get("_extra_spans", ())


def _set_extra_spans(self: Finding, value: Any) -> None:
    self.__dict__["_extra_spans"] = tuple(value)


def _getstate(self: Finding) -> dict[str, Any]:
    _get_extra_spans(self)
    return {k: v for k, v in self.__dict__.items() if k != "_pending"}


Finding.extra_spans = property(_get_extra_spans, _set_extra_spans)  # type: ignore[assignment,method-assign]
Finding.__getstate__ = _getstate  # type: ignore[attr-defined]
