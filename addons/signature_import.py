"""Importers and exporters for signature files (pure; the CLI wraps them).

* ``import_m365``: the Microsoft 365 endpoints web-service JSON (a list of records, or
  ``{"source": …, "endpoints": […]}`` as in teletap's research extract) → one signature per record id,
  keeping id, service area, network category, required flag, ports, ExpressRoute and notes in
  ``imported_from``. Hosts run by another company (Facebook, Google, certificate authorities …) are split
  into their own signature ``m365.<id>.<vendor>`` with ``data_flow: third-party``.
* ``import_hosts``: a hosts file or plain domain list → one signature covering every host.
* ``export_hosts`` / ``export_zeek_intel``: exact hosts of a set for DNS blocking or Zeek's Intel framework.

Generated signatures have ``priority: -10`` so a hand-written signature for the same host wins without a
conflict (vendor lists are broad: ``*.office.com``, ``*.microsoft.com``).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from .signatures import CATEGORIES, DATA_FLOWS, HostPattern, SignatureSet, parse_host_pattern

IMPORT_PRIORITY = -10
M365_DOC_URLS = [
    "https://learn.microsoft.com/microsoft-365/enterprise/urls-and-ip-address-ranges",
    "https://learn.microsoft.com/microsoft-365/enterprise/microsoft-365-ip-web-service",
]

# Privacy category per M365 record id (endpoints-and-signatures.md §3.3); the network category
# (Optimize/Allow/Default) says nothing about privacy, so it is kept only as provenance.
M365_CATEGORY_BY_ID: dict[int, str] = {
    29: "third-party-sharing", 32: "diagnostic-data", 43: "third-party-sharing", 52: "third-party-sharing",
    56: "authentication", 59: "authentication", 68: "third-party-sharing", 69: "diagnostic-data",
    83: "licensing", 84: "certificate-validation", 88: "connected-experience", 92: "updates-cdn",
    93: "connected-experience", 96: "authentication", 98: "third-party-sharing", 99: "third-party-sharing",
    100: "third-party-sharing", 101: "third-party-sharing", 102: "third-party-sharing",
    103: "third-party-sharing", 105: "third-party-sharing", 106: "third-party-sharing", 109: "analytics",
    110: "advertising", 111: "crash-reporting", 112: "third-party-sharing", 113: "third-party-sharing",
    115: "third-party-sharing", 123: "analytics", 125: "certificate-validation", 126: "connected-experience",
    128: "experimentation", 156: "activity-sync", 157: "certificate-validation", 158: "connected-experience",
    160: "connected-experience",
}
_NOTES_CATEGORY = [
    (re.compile(r"3rd party|third[- ]party|integration", re.I), "third-party-sharing"),
    (re.compile(r"telemetry", re.I), "diagnostic-data"),
    (re.compile(r"analytics", re.I), "analytics"),
]
# Hosts whose purpose differs from their record's (a record mixes e.g. Watson with CDNs).
M365_HOST_CATEGORY: dict[str, str] = {
    "watson.telemetry.microsoft.com": "crash-reporting",
    "watson.microsoft.com": "crash-reporting",
    "vortex.data.microsoft.com": "diagnostic-data",
    "dc.applicationinsights.microsoft.com": "diagnostic-data",
    "dc.services.visualstudio.com": "diagnostic-data",
    "telemetryservice.firstpartyapps.oaspapps.com": "diagnostic-data",
    "ocos-office365-s2s.msedge.net": "experimentation",
}
# Registrable domain → (vendor, category or None to keep the record's, data_flow).
THIRD_PARTY_DOMAINS: dict[str, tuple[str, str | None, str]] = {
    "facebook.com": ("Meta", None, "third-party"), "facebook.net": ("Meta", None, "third-party"),
    "google.com": ("Google", None, "third-party"), "googleapis.com": ("Google", None, "third-party"),
    "google-analytics.com": ("Google", "analytics", "third-party"),
    "youtube.com": ("Google", None, "third-party"), "ytimg.com": ("Google", None, "third-party"),
    "tenor.com": ("Google", None, "third-party"),
    "yahoo.com": ("Yahoo", None, "third-party"), "yahooapis.com": ("Yahoo", None, "third-party"),
    "flurry.com": ("Flurry", "analytics", "third-party"),
    "dropbox.com": ("Dropbox", None, "third-party"), "dropboxapi.com": ("Dropbox", None, "third-party"),
    "box.com": ("Box", None, "third-party"), "adjust.com": ("Adjust", "advertising", "third-party"),
    "localytics.com": ("Localytics", "analytics", "third-party"),
    "helpshift.com": ("Helpshift", None, "third-party"), "uservoice.com": ("UserVoice", None, "third-party"),
    "optimizely.com": ("Optimizely", "experimentation", "third-party"),
    "atdmt.com": ("Atlas", "advertising", "third-party"), "meetup.com": ("Meetup", None, "third-party"),
    "evernote.com": ("Evernote", None, "third-party"), "apple.com": ("Apple", None, "third-party"),
    "bit.ly": ("Bitly", None, "third-party"), "linkedin.com": ("LinkedIn", None, "vendor-affiliate"),
    "akamaihd.net": ("Akamai", "updates-cdn", "third-party"),
    "edgesuite.net": ("Akamai", "updates-cdn", "third-party"),
    **{d: ("Certificate authority", "certificate-validation", "third-party") for d in (
        "digicert.com", "globalsign.com", "globalsign.net", "identrust.com", "letsencrypt.org", "entrust.net",
        "geotrust.com", "omniroot.com", "public-trust.com", "symcb.com", "symcd.com", "verisign.com",
        "verisign.net")},
}


@dataclass
class ImportReport:
    signatures: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # human-readable reasons

    def yaml(self, header: str = "") -> str:
        return dump_signatures(self.signatures, header)


def dump_signatures(signatures: list[dict[str, Any]], header: str = "") -> str:
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = yaml.safe_dump({"schema_version": 1, "signatures": signatures}, sort_keys=False, allow_unicode=True,
                          width=120)
    return comment + body


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _registrable(host: str) -> str:
    labels = host.split(".")
    return ".".join(labels[-2:])


def normalise_vendor_host(raw: str) -> str:
    """Microsoft tables' spellings → teletap host patterns (``<tenant>`` → ``*``, trailing ``*`` dropped)."""
    h = raw.strip().lower()
    h = re.sub(r"<[^>]+>", "*", h)
    if h.endswith("*") and not h.endswith(".*"):
        h = h.rstrip("*")  # 'host*' means any path on host in Microsoft's tables
    return h.rstrip(".")


def example_for(pattern: HostPattern) -> str:
    """A host that the pattern covers, for the generated signature's examples."""
    if pattern.exact:
        return pattern.text
    return pattern.text.replace("*", "teletap-example")


def _m365_records(data: Any) -> tuple[list[dict[str, Any]], str | None]:
    if isinstance(data, dict) and isinstance(data.get("endpoints"), list):
        source = data.get("source") if isinstance(data.get("source"), dict) else {}
        return data["endpoints"], (str(source.get("endpoints_version")) if source.get("endpoints_version")
                                   else None)
    if isinstance(data, list):
        return data, None
    raise ValueError("expected the endpoints web-service JSON: a list of records, or an object with 'endpoints'")


def import_m365(data: Any, *, version: str | None = None, checked: _dt.date | None = None) -> ImportReport:
    records, file_version = _m365_records(data)
    version = version or file_version or "unknown"
    checked_d = checked or _dt.date.today()
    report = ImportReport()
    seen_hosts: dict[str, int] = {}  # a host listed in several records goes to the first (lowest id)
    for rec in sorted((r for r in records if isinstance(r, dict)), key=lambda r: int(r.get("id", 0))):
        rid = rec.get("id")
        if not isinstance(rid, int):
            report.skipped.append(f"record without an integer id: {rec!r:.80}")
            continue
        urls = rec.get("urls") or []
        if not urls:
            report.skipped.append(f"id {rid}: no urls (IP ranges only: {len(rec.get('ips') or [])} ranges)")
            continue
        notes = (rec.get("notes") or "").strip() or None
        area = rec.get("serviceArea") or "Common"
        category = M365_CATEGORY_BY_ID.get(rid)
        if category is None and notes:
            category = next((c for rx, c in _NOTES_CATEGORY if rx.search(notes)), None)
        category = category or "service"
        groups: dict[tuple[str, str, str], list[HostPattern]] = {}
        also: list[str] = []
        for raw in urls:
            hp = parse_host_pattern(normalise_vendor_host(str(raw)))
            if isinstance(hp, str):
                report.skipped.append(f"id {rid}: {raw!r}: {hp}")
                continue
            if hp.text in seen_hosts:
                also.append(f"{hp.text} (first listed in id {seen_hosts[hp.text]})")
                continue
            seen_hosts[hp.text] = rid
            party = THIRD_PARTY_DOMAINS.get(_registrable(hp.text))
            if party:
                vendor, cat, flow = party
                key = (vendor, cat or (category if category != "service" else "third-party-sharing"), flow)
            else:
                key = ("Microsoft", M365_HOST_CATEGORY.get(hp.text, category), "first-party")
            groups.setdefault(key, []).append(hp)
        if not groups:
            report.skipped.append(f"id {rid}: every host already imported from an earlier record")
            continue
        provenance = {
            "source": "Microsoft 365 endpoints web service", "version": version, "id": rid,
            "service_area": area, "service_area_display_name": rec.get("serviceAreaDisplayName"),
            "network_category": rec.get("category"), "required": rec.get("required"),
            "express_route": rec.get("expressRoute"), "tcp_ports": rec.get("tcpPorts"),
            "udp_ports": rec.get("udpPorts"), "ip_ranges": len(rec.get("ips") or []),
        }
        provenance = {k: v for k, v in provenance.items() if v is not None}
        quote = (f"id {rid} ({area}, {rec.get('category')}, required={str(rec.get('required')).lower()})"
                 + (f": {notes}" if notes else ""))
        primary = ("Microsoft", category, "first-party")
        if primary not in groups:  # the plain id goes to the Microsoft part, else to the first part
            primary = min(groups, key=lambda k: (k[0] != "Microsoft", k))
        for key, hosts in sorted(groups.items(), key=lambda kv: (kv[0] != primary, kv[0])):
            vendor, cat, flow = key
            suffix = _slug(vendor if vendor != "Microsoft" else cat)
            sid = f"m365.{rid}" if key == primary else f"m365.{rid}.{suffix}"
            if any(s["id"] == sid for s in report.signatures):
                sid = f"{sid}.{_slug(cat)}"
            sig: dict[str, Any] = {
                "id": sid,
                "name": f"Microsoft 365 endpoints id {rid}: {notes or rec.get('serviceAreaDisplayName') or area}",
                "vendor": vendor,
                "product": f"Microsoft 365 ({rec.get('serviceAreaDisplayName') or area})",
                "component": notes,
                "category": cat,
                "data_flow": flow,
                "priority": IMPORT_PRIORITY,
                "match": {"hosts": [h.text for h in hosts]},
                "documentation": {"urls": list(M365_DOC_URLS), "quote": quote,
                                  "revision": f"endpoints version {version}", "checked": checked_d},
                "examples": {"match": [example_for(h) for h in hosts[:3]]},
                "imported_from": provenance,
            }
            if also and key == primary:
                sig["notes"] = "Also listed in this record: " + ", ".join(also)
            report.signatures.append(sig)
    return report


_HOSTS_LINE = re.compile(r"^\s*(?:(?:0\.0\.0\.0|127\.0\.0\.1|::1?|::)\s+)?(\S+)\s*$")
_IGNORED = {"localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost", "ip6-loopback",
            "0.0.0.0"}


def parse_hosts(lines: Iterable[str]) -> tuple[list[str], list[str]]:
    """(hosts, problems) from a hosts file, a plain domain list or adblock-style ``||host^`` lines."""
    hosts: list[str] = []
    problems: list[str] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if text.startswith("||") and text.endswith("^"):
            text = text[2:-1]
        m = _HOSTS_LINE.match(text)
        if not m:
            problems.append(f"line {n}: expected 'ADDRESS HOST' or 'HOST', got {line.strip()!r}")
            continue
        host = normalise_vendor_host(m.group(1))
        if host in _IGNORED:
            continue
        hp = parse_host_pattern(host)
        if isinstance(hp, str):
            problems.append(f"line {n}: {hp}")
            continue
        if hp.text not in seen:
            seen.add(hp.text)
            hosts.append(hp.text)
    return hosts, problems


def import_hosts(lines: Iterable[str], *, vendor: str, category: str, name: str, documentation_url: str,
                 data_flow: str = "third-party", checked: _dt.date | None = None,
                 signature_id: str | None = None) -> ImportReport:
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of: {', '.join(CATEGORIES)}")
    if data_flow not in DATA_FLOWS:
        raise ValueError(f"unknown data_flow {data_flow!r}; expected one of: {', '.join(DATA_FLOWS)}")
    hosts, problems = parse_hosts(lines)
    report = ImportReport(skipped=problems)
    if not hosts:
        report.skipped.append("no hosts found")
        return report
    report.signatures.append({
        "id": signature_id or f"hosts.{_slug(vendor)}.{_slug(name)}",
        "name": f"{vendor}: {name}",
        "vendor": vendor,
        "category": category,
        "data_flow": data_flow,
        "priority": IMPORT_PRIORITY,
        "match": {"hosts": hosts},
        "documentation": {"urls": [documentation_url], "quote": f"host list {name} ({len(hosts)} hosts)",
                          "checked": checked or _dt.date.today()},
        "examples": {"match": [example_for(parse_host_pattern(hosts[0]))]},  # type: ignore[arg-type]
        "imported_from": {"source": name, "hosts": len(hosts)},
    })
    return report


def _exportable(sigset: SignatureSet, category: str | None) -> Iterable[tuple[str, str, Any]]:
    for sig in sigset.signatures:
        if category and sig.category != category:
            continue
        for host in sig.match.hosts:
            yield host, sig.id, sig


def export_hosts(sigset: SignatureSet, category: str | None = None) -> str:
    """A hosts file (``0.0.0.0 host``). Wildcards and regexes cannot be expressed and are listed as comments."""
    out = [f"# teletap signatures {sigset.hash[:12]}" + (f", category {category}" if category else "")]
    done: set[str] = set()
    for host, sid, _sig in _exportable(sigset, category):
        if host in done:
            continue
        done.add(host)
        out.append(f"# wildcard, not expressible in a hosts file: {host} ({sid})" if "*" in host
                   else f"0.0.0.0 {host}")
    for sig in sigset.signatures:
        if (not category or sig.category == category) and sig.match.host_regex:
            out.append(f"# host_regex, not expressible in a hosts file: {sig.id}")
    return "\n".join(out) + "\n"


def export_zeek_intel(sigset: SignatureSet, category: str | None = None) -> str:
    """A Zeek Intel framework file: exact hosts as ``Intel::DOMAIN``, IP literals as ``Intel::ADDR``."""
    out = ["#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url"]
    done: set[str] = set()
    for host, sid, sig in _exportable(sigset, category):
        if "*" in host or host in done:
            continue  # Zeek matches domains exactly; a wildcard cannot be written as an indicator
        done.add(host)
        kind = "Intel::ADDR" if (":" in host or host.replace(".", "").isdigit()) else "Intel::DOMAIN"
        desc = f"{sid} {sig.category} {sig.data_flow}".replace("\t", " ")
        out.append("\t".join([host, kind, f"teletap:{sigset.hash[:12]}", desc, sig.documentation_url or "-"]))
    return "\n".join(out) + "\n"
