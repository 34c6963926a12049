"""Build the report model from the evidence database, one SQL statement per table.

Sections follow GDPR Art. 35(7): (a) a systematic description of the processing (scope, data flows,
personal data, third parties, undocumented endpoints, blind spots, diagnostic levels), (c) risks and
(d) measures, then the evidence appendix. Every statement orders its rows completely, so two runs on the
same database give the same report.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..schema import ANALYSIS_DEFERRED
from . import charts
from .model import Report, Section, Table, run_table
from .scope import ALLOWED_DOCUMENTED_LEVELS, Scope, sql_text

UNDOCUMENTED = "coalesce({a}signature_id, 'undocumented') = 'undocumented'"
THIRD_PARTY = "({a}data_flow IN ('third-party', 'vendor-affiliate') OR {a}category = 'third-party-sharing')"
NOT_ANALYSED = "flows stored but not yet decoded or scanned for personal data (analysis deferred)"
# "first flow" cells: time and id of the earliest flow of a group, in one sortable, deterministic string.
FIRST_FLOW = "MIN(f.request_time || ' ' || f.id) AS first_flow"
SEVERITY_ORDER = "CASE {c} WHEN 'high' THEN 0 WHEN 'medium' THEN 1 WHEN 'low' THEN 2 ELSE 3 END"


def undocumented(alias: str = "") -> str:
    return UNDOCUMENTED.format(a=f"{alias}." if alias else "")


def third_party(alias: str = "") -> str:
    return THIRD_PARTY.format(a=f"{alias}." if alias else "")


@dataclass
class ReportOptions:
    scope: Scope
    generated_at: str
    title: str = "DPIA evidence report"
    database: str = "teletap.db"
    parameters: dict[str, Any] = field(default_factory=dict)  # extra parameters to print (e.g. the format)


class _Builder:
    def __init__(self, conn: sqlite3.Connection, options: ReportOptions,
                 progress: Callable[[int], None] | None) -> None:
        self.conn = conn
        self.options = options
        self.scope = options.scope
        self.progress = progress or (lambda n: None)

    def table(self, table_id: str, title: str, body: str, *, description: str = "", empty: str = "No rows.",
              ctes: tuple[tuple[str, str], ...] = ()) -> Table:
        sql = self.scope.sql(body, ctes)
        table = run_table(self.conn, table_id, title, sql, description=description, empty=empty)
        self.progress(1)
        return table

    # -- 1. scope and method ---------------------------------------------------------------------------
    def scope_section(self) -> Section:
        s = Section("scope", "Scope and method", "Art. 35(7)(a): context of the processing examined")
        s.tables.append(self.table(
            "sessions", "Capture sessions", """
SELECT id AS session, coalesce(label, '') AS label, kind, started, coalesce(ended, '') AS ended,
       teletap_version, coalesce(mitmproxy_version, '') AS mitmproxy_version, coalesce(hostname, '') AS recorded_on,
       coalesce(signature_set_hash, '') AS signature_set_hash, items_recorded, items_unrecorded
FROM scope_sessions
ORDER BY id""", description="One row per capture or import run in scope, with the scenario label the operator gave."))
        s.tables.append(self.table(
            "key-figures", "Key figures", f"""
SELECT 1 AS n, 'HTTP(S) flows' AS figure, COUNT(*) AS value FROM scope_flows
UNION ALL SELECT 2, 'destination hosts', COUNT(DISTINCT host) FROM scope_flows
UNION ALL SELECT 3, 'request bytes sent (as on the wire)', coalesce(SUM(request_size_wire), 0) FROM scope_flows
UNION ALL SELECT 4, 'decoded events', COUNT(*) FROM scope_events
UNION ALL SELECT 5, 'personal-data findings', COUNT(*) FROM scope_findings
UNION ALL SELECT 6, 'flows to undocumented endpoints', COUNT(*) FROM scope_flows WHERE {undocumented()}
UNION ALL SELECT 7, 'flows to third parties', COUNT(*) FROM scope_flows WHERE {third_party()}
UNION ALL SELECT 8, 'connections whose payload was not observable', COUNT(*) FROM scope_connections
  WHERE observable = 0
UNION ALL SELECT 9, 'items not recorded (whole sessions)', coalesce(SUM(items_unrecorded), 0) FROM scope_sessions
UNION ALL SELECT 10, {sql_text(NOT_ANALYSED)}, COUNT(*) FROM scope_flows WHERE analysis = {sql_text(ANALYSIS_DEFERRED)}
UNION ALL SELECT 11, 'WebSocket messages', COUNT(*) FROM scope_websocket
UNION ALL SELECT 12, 'DNS queries', COUNT(*) FROM scope_dns
UNION ALL SELECT 13, 'first request', coalesce(MIN(request_time), '') FROM scope_flows
UNION ALL SELECT 14, 'last request', coalesce(MAX(request_time), '') FROM scope_flows
ORDER BY n"""))
        s.tables.append(self.table(
            "clients", "Clients observed", """
SELECT coalesce(client_address, '') AS client, SUM(is_flow) AS flows, SUM(1 - is_flow) AS other_connections,
       MIN(t) AS first_seen, MAX(t) AS last_seen
FROM (SELECT client_address, 1 AS is_flow, request_time AS t FROM scope_flows
      UNION ALL SELECT client_address, 0, started FROM scope_connections)
GROUP BY client_address
ORDER BY flows DESC, other_connections DESC, client""",
            description="Addresses of the audited devices as the proxy saw them (flows and non-HTTP connections)."))
        s.tables.append(self.table(
            "software", "Software versions named in decoded telemetry", """
SELECT coalesce(app_id, '') AS app, coalesce(app_version, '') AS app_version, coalesce(os_name, '') AS os,
       coalesce(os_version, '') AS os_version, COUNT(*) AS events
FROM scope_events
WHERE direction = 'request' AND (app_id IS NOT NULL OR app_version IS NOT NULL OR os_name IS NOT NULL
                                 OR os_version IS NOT NULL)
GROUP BY app, app_version, os, os_version
ORDER BY events DESC, app, app_version, os, os_version""",
            empty="No decoded event named its application or operating system."))
        s.tables.append(self.table(
            "options", "Settings recorded with each session", """
SELECT s.id AS session, o.key AS option,
       CASE WHEN o.key LIKE '%auth%' OR o.key LIKE '%password%' OR o.key LIKE '%secret%' OR o.key LIKE '%token%'
            THEN '(withheld)' ELSE CAST(o.value AS TEXT) END AS value
FROM scope_sessions s, json_each(CASE WHEN json_valid(s.options) THEN s.options ELSE '{}' END) o
ORDER BY s.id, o.key""",
            description="Proxy and teletap options in force during each capture, as teletap stored them (values of "
                        "options that look like credentials are withheld).",
            empty="No options were recorded."))
        sessions = s.table("sessions").records()
        figures = {r["figure"]: r["value"] for r in s.table("key-figures").records()}
        s.facts = {
            "sessions": len(sessions),
            "labels": [r["label"] for r in sessions],
            "signature_set_hashes": sorted({r["signature_set_hash"] for r in sessions if r["signature_set_hash"]}),
            "first_request": figures["first request"], "last_request": figures["last request"],
            "clients": len(s.table("clients").rows),
            "unclosed_sessions": sum(1 for r in sessions if not r["ended"]),
        }
        return s

    # -- 2. data flows ---------------------------------------------------------------------------------
    def flows_section(self) -> Section:
        s = Section("flows", "Systematic description of the data flows",
                    "Art. 35(7)(a): systematic description of the processing operations")
        s.tables.append(self.table(
            "flows-by-vendor", "Flows by vendor, product, category and data flow", """
SELECT coalesce(f.vendor, '(undocumented)') AS vendor, coalesce(s.product, '') AS product,
       coalesce(f.category, '') AS category, coalesce(f.data_flow, '') AS data_flow, COUNT(*) AS flows,
       COUNT(DISTINCT f.host) AS hosts, coalesce(SUM(f.request_size_wire), 0) AS request_bytes,
       coalesce(SUM(f.event_count), 0) AS events, coalesce(SUM(f.finding_count), 0) AS findings,
       MIN(f.request_time) AS first_seen, MAX(f.request_time) AS last_seen
FROM scope_flows f LEFT JOIN signatures s ON s.id = f.signature_id
GROUP BY f.vendor, s.product, f.category, f.data_flow
ORDER BY flows DESC, vendor, product, category, data_flow""",
            description="Vendor, product, category and data flow come from the signature a flow matched; "
                        "'(undocumented)' marks flows no signature describes."))
        s.tables.append(self.table(
            "flows-by-category", "Flows by category", """
SELECT coalesce(category, '(undocumented)') AS category, COUNT(*) AS flows,
       coalesce(SUM(request_size_wire), 0) AS request_bytes
FROM scope_flows
GROUP BY category
ORDER BY flows DESC, category"""))
        s.tables.append(self.table(
            "flows-by-data-flow", "Flows by data flow (who receives the data)", """
SELECT coalesce(data_flow, '(undocumented)') AS data_flow, COUNT(*) AS flows,
       coalesce(SUM(request_size_wire), 0) AS request_bytes, coalesce(SUM(finding_count), 0) AS findings
FROM scope_flows
GROUP BY data_flow
ORDER BY flows DESC, data_flow"""))
        s.tables.append(self.table(
            "endpoints", "Endpoints contacted, with their documentation", f"""
SELECT coalesce(f.signature_id, 'undocumented') AS signature_id, coalesce(s.name, '') AS endpoint, f.host,
       COUNT(*) AS flows, coalesce(SUM(f.request_size_wire), 0) AS request_bytes,
       coalesce(SUM(f.event_count), 0) AS events, coalesce(SUM(f.finding_count), 0) AS findings, {FIRST_FLOW},
       coalesce(s.documentation_url, '') AS documentation
FROM scope_flows f LEFT JOIN signatures s ON s.id = f.signature_id
GROUP BY f.signature_id, f.host
ORDER BY flows DESC, f.host, signature_id""",
            description="One row per destination host and matched signature; 'first flow' gives the time and "
                        "flow id of the earliest request, listed in the evidence appendix."))
        s.tables.append(self.table(
            "payload-formats", "Payload formats recognised", """
SELECT coalesce(decode_format, '(none)') AS format, COUNT(*) AS flows, coalesce(SUM(event_count), 0) AS events,
       SUM(CASE WHEN decode_error IS NOT NULL THEN 1 ELSE 0 END) AS flows_with_decode_errors
FROM scope_flows
GROUP BY format
ORDER BY flows DESC, format"""))
        s.tables.append(self.table(
            "event-names", "Decoded event names", """
SELECT e.name AS event, coalesce(e.documented_level, '') AS documented_level, e.format,
       coalesce(e.signature_id, 'undocumented') AS signature_id, COUNT(*) AS events,
       COUNT(DISTINCT e.flow_id) AS flows
FROM scope_events e
WHERE e.direction = 'request' AND e.name IS NOT NULL
GROUP BY e.name, e.documented_level, e.format, e.signature_id
ORDER BY events DESC, event, documented_level, e.format, signature_id""",
            description="Named events the clients sent; 'documented level' says where Microsoft's published "
                        "lists place the name.", empty="No named events were decoded."))
        s.tables.append(self.table(
            "websocket", "WebSocket messages", """
SELECT f.host, w.direction, COUNT(*) AS messages, coalesce(SUM(w.size), 0) AS bytes,
       COUNT(DISTINCT w.flow_id) AS connections, MIN(w.time) AS first_seen
FROM scope_websocket w JOIN flows f ON f.id = w.flow_id
GROUP BY f.host, w.direction
ORDER BY messages DESC, f.host, w.direction""",
            description="Messages exchanged over WebSocket connections the clients opened (their content is in "
                        "the database, not in this report).", empty="No WebSocket messages were recorded."))
        s.tables.append(self.table(
            "dns-names", "Names looked up (DNS)", """
SELECT question AS name, coalesce(signature_id, 'undocumented') AS signature_id, coalesce(vendor, '') AS vendor,
       COUNT(*) AS queries, COUNT(DISTINCT client_address) AS clients, MIN(time) AS first_seen
FROM scope_dns
GROUP BY question, signature_id, vendor
ORDER BY queries DESC, name, signature_id, vendor""",
            description="DNS queries seen by teletap's DNS mode on a gateway: destinations looked up, including "
                        "those later contacted without interceptable HTTP.",
            empty="No DNS queries were recorded (teletap records them in DNS mode on a gateway, --mode dns@53)."))
        s.charts.append(charts.bar_chart("chart-flows-by-category", "Flows by category",
                                         s.table("flows-by-category"), "category", "flows"))
        s.charts.append(charts.bar_chart("chart-bytes-by-data-flow", "Request bytes by data flow",
                                         s.table("flows-by-data-flow"), "data_flow", "request_bytes"))
        vendors = s.table("flows-by-vendor")
        s.facts = {"flows": vendors.total("flows"), "request_bytes": vendors.total("request_bytes"),
                   "vendors": len({v for v in vendors.column("vendor") if v != "(undocumented)"}),
                   "endpoints": len(s.table("endpoints").rows)}
        return s

    # -- 3. personal data ------------------------------------------------------------------------------
    def personal_data_section(self) -> Section:
        s = Section("personal-data", "Personal data observed",
                    "Art. 35(7)(a) and (c): the personal data processed and where it goes")
        s.tables.append(self.table(
            "findings-by-kind", "Personal data by kind and destination", f"""
SELECT fi.severity, fi.kind, coalesce(fi.host, '') AS destination, coalesce(fi.data_flow, 'undocumented') AS data_flow,
       COUNT(*) AS findings, COUNT(DISTINCT fi.value_hash) AS distinct_values, COUNT(DISTINCT fi.flow_id) AS flows,
       MIN(fi.preview) AS example, {FIRST_FLOW}
FROM scope_findings fi JOIN flows f ON f.id = fi.flow_id
GROUP BY fi.severity, fi.kind, fi.host, fi.data_flow
ORDER BY {SEVERITY_ORDER.format(c='fi.severity')}, findings DESC, fi.kind, destination, data_flow""",
            description="Examples are redacted previews; teletap stores a keyed hash of each value, so equal "
                        "values are counted once in 'distinct values' without the value appearing here.",
            empty="No personal data was found in the flows in scope."))
        s.tables.append(self.table(
            "findings-by-location", "Where in the traffic it was found", """
SELECT kind, location, COUNT(*) AS findings, COUNT(DISTINCT flow_id) AS flows
FROM scope_findings
GROUP BY kind, location
ORDER BY findings DESC, kind, location""",
            description="url, query:NAME and header:NAME are parts of the request; body is the request body; "
                        "event:PATH is a field of a decoded telemetry event.",
            empty="No personal data was found in the flows in scope."))
        table = s.table("findings-by-kind")
        s.charts.append(charts.bar_chart("chart-findings-by-kind", "Findings by kind", table, "kind", "findings"))
        severities = table.column("severity")
        s.facts = {"findings": table.total("findings"), "kinds": len(set(table.column("kind"))),
                   "destinations": len(set(table.column("destination"))),
                   "high": sum(int(n or 0) for sev, n in zip(severities, table.column("findings"), strict=True)
                               if sev == "high")}
        return s

    # -- 4. third parties ------------------------------------------------------------------------------
    def third_party_section(self) -> Section:
        s = Section("third-parties", "Third-party sharing",
                    "Art. 35(7)(a): recipients; relevant to (c) and to transfers")
        s.tables.append(self.table(
            "third-party-flows", "Flows to third parties and vendor affiliates", f"""
SELECT coalesce(f.vendor, '') AS vendor, coalesce(s.product, '') AS product, f.host, f.data_flow,
       coalesce(f.category, '') AS category, COUNT(*) AS flows, coalesce(SUM(f.request_size_wire), 0) AS request_bytes,
       coalesce(SUM(f.finding_count), 0) AS findings, {FIRST_FLOW}, coalesce(s.documentation_url, '') AS documentation
FROM scope_flows f LEFT JOIN signatures s ON s.id = f.signature_id
WHERE {third_party('f')}
GROUP BY f.vendor, s.product, f.host, f.data_flow, f.category
ORDER BY flows DESC, vendor, product, f.host, f.data_flow, category""",
            description="Flows whose signature names a third party or an affiliate of the vendor as recipient, "
                        "or whose category is third-party sharing.",
            empty="No flow in scope went to a documented third party."))
        s.tables.append(self.table(
            "third-party-findings", "Personal data sent to third parties", f"""
SELECT fi.kind, coalesce(fi.host, '') AS destination, fi.data_flow, COUNT(*) AS findings,
       COUNT(DISTINCT fi.value_hash) AS distinct_values, MIN(fi.preview) AS example, {FIRST_FLOW}
FROM scope_findings fi JOIN flows f ON f.id = fi.flow_id
WHERE {third_party('fi')}
GROUP BY fi.kind, fi.host, fi.data_flow
ORDER BY findings DESC, fi.kind, destination, fi.data_flow""",
            empty="No personal data was found in flows to third parties."))
        flows = s.table("third-party-flows")
        s.facts = {"flows": flows.total("flows"), "recipients": len(set(flows.column("host"))),
                   "findings": s.table("third-party-findings").total("findings")}
        return s

    # -- 5. undocumented -------------------------------------------------------------------------------
    def undocumented_section(self) -> Section:
        s = Section("undocumented", "Undocumented endpoints and events",
                    "Art. 35(7)(a): processing the vendors' documentation does not describe")
        s.tables.append(self.table(
            "undocumented-hosts", "Flows to endpoints no signature documents", f"""
SELECT f.host, f.port, f.scheme, COUNT(*) AS flows, coalesce(SUM(f.request_size_wire), 0) AS request_bytes,
       coalesce(SUM(f.event_count), 0) AS events, coalesce(SUM(f.finding_count), 0) AS findings,
       COUNT(DISTINCT f.client_address) AS clients, {FIRST_FLOW}
FROM scope_flows f
WHERE {undocumented('f')}
GROUP BY f.host, f.port, f.scheme
ORDER BY flows DESC, f.host, f.port, f.scheme""",
            empty="Every flow in scope matched a documented endpoint."))
        s.tables.append(self.table(
            "undocumented-events", "Event names Microsoft's lists do not document, sent to diagnostic-data endpoints",
            f"""
SELECT e.name AS event, e.format, coalesce(e.signature_id, '') AS signature_id, COUNT(*) AS events,
       COUNT(DISTINCT e.flow_id) AS flows, {FIRST_FLOW}
FROM scope_events e JOIN flows f ON f.id = e.flow_id
WHERE e.direction = 'request' AND e.name IS NOT NULL AND e.documented_level = 'undocumented'
  AND e.category = 'diagnostic-data'
GROUP BY e.name, e.format, e.signature_id
ORDER BY events DESC, event, e.format, signature_id""",
            description="Microsoft publishes lists of required diagnostic events and essential-service events; "
                        "these names are on neither list.",
            empty="Every named event sent to a diagnostic-data endpoint is on one of Microsoft's lists."))
        s.tables.append(self.table(
            "undocumented-connections", "Other connections to undocumented destinations", f"""
SELECT kind, coalesce(sni, server_address, '') AS destination, server_port AS port,
       CASE observable WHEN 1 THEN 'yes' ELSE 'no' END AS observable, COUNT(*) AS connections,
       MIN(started || ' ' || id) AS first_connection
FROM scope_connections
WHERE {undocumented()}
GROUP BY kind, destination, port, observable
ORDER BY connections DESC, destination, kind, port, observable""",
            empty="No non-HTTP connection went to an undocumented destination."))
        hosts = s.table("undocumented-hosts")
        s.facts = {"flows": hosts.total("flows"), "hosts": len(set(hosts.column("host"))),
                   "events": s.table("undocumented-events").total("events")}
        return s

    # -- 6. blind spots --------------------------------------------------------------------------------
    def blind_spots_section(self) -> Section:
        s = Section("blind-spots", "What the evidence could not see",
                    "Limits of the method: connections whose payload was not observable")
        s.tables.append(self.table(
            "not-observable", "Connections whose payload was not observable", """
SELECT kind, coalesce(sni, server_address, '') AS destination, server_port AS port, coalesce(reason, '') AS reason,
       coalesce(signature_id, 'undocumented') AS signature_id, coalesce(vendor, '') AS vendor,
       COUNT(*) AS connections, COUNT(DISTINCT client_address) AS clients,
       coalesce(SUM(bytes_from_client), 0) AS bytes_from_clients, MIN(started || ' ' || id) AS first_connection
FROM scope_connections
WHERE observable = 0
GROUP BY kind, destination, port, reason, signature_id, vendor
ORDER BY connections DESC, destination, kind, port, reason, signature_id, vendor""",
            description="Clients that refused teletap's certificate (certificate pinning or an untrusted CA), "
                        "hosts passed through without interception, and raw TCP/UDP: these destinations were "
                        "contacted, but what was sent to them is not in this report.",
            empty="Every connection in scope was observable."))
        s.tables.append(self.table(
            "partial-evidence", "Flows and sessions observed only in part", f"""
SELECT 1 AS n, 'flows whose request body is stored truncated or was streamed' AS figure, COUNT(*) AS value
  FROM scope_flows WHERE request_body_truncated = 1
UNION ALL SELECT 2, 'flows whose body could not be fully decoded', COUNT(*) FROM scope_flows
  WHERE decode_error IS NOT NULL
UNION ALL SELECT 3, 'flows that failed (no response from the server)', COUNT(*) FROM scope_flows WHERE error IS NOT NULL
UNION ALL SELECT 4, 'flows answered by teletap itself (sinkhole: nothing left)', COUNT(*) FROM scope_flows
  WHERE answered_by_teletap = 1
UNION ALL SELECT 5, 'sessions not closed cleanly', COUNT(*) FROM scope_sessions WHERE coalesce(ended, '') = ''
UNION ALL SELECT 6, 'items not recorded (ingest queue full, write errors)', coalesce(SUM(items_unrecorded), 0)
  FROM scope_sessions
UNION ALL SELECT 7, {sql_text(NOT_ANALYSED)}, COUNT(*) FROM scope_flows WHERE analysis = {sql_text(ANALYSIS_DEFERRED)}
ORDER BY n""",
            description="A truncated body was hashed in full (SHA-256 covers every byte sent) but only its first "
                        "part is stored and searched. Flows not yet analysed were stored while ingest was behind: "
                        "their bodies are kept as sent, but no events or findings of theirs are in this report "
                        "until `teletap redecode --deferred`, or the next `teletap run` on the database with the "
                        "same signatures and options, has analysed them."))
        s.tables.append(self.table(
            "unrecorded", "Sessions with unrecorded items", """
SELECT id AS session, coalesce(label, '') AS label, items_unrecorded, coalesce(unrecorded_reasons, '') AS reasons
FROM scope_sessions
WHERE items_unrecorded > 0
ORDER BY id""",
            empty="Nothing went unrecorded: every item the proxy saw is in the database."))
        table = s.table("not-observable")
        s.facts = {"connections": table.total("connections"),
                   "destinations": len(set(table.column("destination"))),
                   "unrecorded": s.table("unrecorded").total("items_unrecorded"),
                   "not_analysed": next(r["value"] for r in s.table("partial-evidence").records()
                                        if r["figure"] == NOT_ANALYSED)}
        return s

    # -- 7. diagnostic levels --------------------------------------------------------------------------
    def _beyond_level_parts(self) -> list[tuple[str, str, str]]:
        """(product, declared level, WHERE clause over events e / signatures s) for each declared level."""
        parts = []
        for product, level in self.scope.levels:
            allowed = ALLOWED_DOCUMENTED_LEVELS[product][level]
            if allowed is None:
                continue  # the highest level: everything documented may be sent
            allowed_sql = ", ".join(sql_text(a) for a in allowed)
            # An event belongs to the product when Microsoft's list for that product names it, or when it is
            # unlisted and went to an endpoint whose signature documents the product's levels.
            belongs = (f"(e.documented_level LIKE '{product}-%' OR (e.documented_level = 'undocumented' "
                       f"AND e.category = 'diagnostic-data' AND json_type(s.levels, '$.{product}') IS NOT NULL))")
            beyond = f"e.documented_level NOT IN ({allowed_sql})" if allowed else "1"
            parts.append((product, level, f"e.direction = 'request' AND e.name IS NOT NULL AND {belongs} AND {beyond}"))
        return parts

    def levels_section(self) -> Section:
        s = Section("levels", "Diagnostic events against the declared level",
                    "Art. 35(7)(a) and (b): is more sent than the configuration allows?")
        s.tables.append(self.table(
            "events-by-level", "Events by documented level", """
SELECT coalesce(documented_level, 'not classified') AS documented_level, COUNT(*) AS events,
       COUNT(DISTINCT name) AS names, COUNT(DISTINCT flow_id) AS flows
FROM scope_events
WHERE direction = 'request'
GROUP BY documented_level
ORDER BY events DESC, documented_level""",
            description="office-required and windows-required: on Microsoft's lists of required diagnostic "
                        "events; office-essential-service: events of services Microsoft says cannot be "
                        "switched off; undocumented: on no list.", empty="No events were decoded."))
        parts = self._beyond_level_parts()
        s.facts = {"declared": [f"{p}={lv}" for p, lv in self.scope.levels], "beyond_events": 0}
        if not self.scope.levels:
            return s
        if parts:
            selects = [f"""SELECT '{product}' AS product, '{level}' AS declared_level, e.name AS event,
       e.documented_level, coalesce(e.signature_id, 'undocumented') AS signature_id, f.host, COUNT(*) AS events,
       COUNT(DISTINCT e.flow_id) AS flows, {FIRST_FLOW}
FROM scope_events e JOIN flows f ON f.id = e.flow_id LEFT JOIN signatures s ON s.id = e.signature_id
WHERE {where}
GROUP BY e.name, e.documented_level, e.signature_id, f.host""" for product, level, where in parts]
            body = "\nUNION ALL\n".join(selects) + "\nORDER BY product, events DESC, event, host, signature_id"
        else:
            body = ("SELECT NULL AS product, NULL AS declared_level, NULL AS event, NULL AS documented_level, "
                    "NULL AS signature_id, NULL AS host, NULL AS events, NULL AS flows, NULL AS first_flow "
                    "WHERE 0")
        s.tables.append(self.table(
            "beyond-level-events", "Events sent beyond the declared level", body,
            description="Events Microsoft's documentation does not allow at the declared level: required "
                        "diagnostic events when Office is set to Neither (or Windows to Security), and events on "
                        "no list when the level is Required or lower.",
            empty="No event beyond the declared level was observed."))
        level_parts = []
        for product, level in self.scope.levels:
            level_parts.append(f"""SELECT '{product}' AS product, '{level}' AS declared_level, f.signature_id,
       coalesce(s.name, '') AS endpoint, f.host, json_extract(s.levels, '$.{product}') AS documented_levels,
       COUNT(*) AS flows, coalesce(SUM(f.event_count), 0) AS events, {FIRST_FLOW}
FROM scope_flows f JOIN signatures s ON s.id = f.signature_id
WHERE json_type(s.levels, '$.{product}') = 'array'
  AND NOT EXISTS (SELECT 1 FROM json_each(s.levels, '$.{product}') WHERE value = '{level}')
  AND coalesce(s.essential, 0) = 0
GROUP BY f.signature_id, f.host""")
        s.tables.append(self.table(
            "beyond-level-endpoints", "Flows to endpoints documented only for other levels",
            "\nUNION ALL\n".join(level_parts) + "\nORDER BY product, flows DESC, host, signature_id",
            description="Endpoints whose signature lists the diagnostic levels that use them, none of which is "
                        "the declared one, and which the vendor does not call essential.",
            empty="No flow went to an endpoint documented only for other levels."))
        s.facts["beyond_events"] = s.table("beyond-level-events").total("events")
        s.facts["beyond_endpoint_flows"] = s.table("beyond-level-endpoints").total("flows")
        return s

    # -- 8. comparison ---------------------------------------------------------------------------------
    def _compare(self, table_id: str, title: str, keys: list[tuple[str, str]], before: str, after: str,
                 measure: str, where: str = "", description: str = "") -> Table:
        """disappeared / remained / appeared for one dimension. keys: (output name, SQL expression)."""
        names = [name for name, _ in keys]
        select_keys = ", ".join(f"{expr} AS {name}" for name, expr in keys)
        group = ", ".join(names)
        cond = f" WHERE {where}" if where else ""
        join_b = " AND ".join(f"b.{n} IS k.{n}" for n in names)
        join_a = " AND ".join(f"a.{n} IS k.{n}" for n in names)
        ctes = (
            ("before_set", f"SELECT {select_keys}, COUNT(*) AS n FROM {before}{cond} GROUP BY {group}"),
            ("after_set", f"SELECT {select_keys}, COUNT(*) AS n FROM {after}{cond} GROUP BY {group}"),
            ("all_keys", f"SELECT {group} FROM before_set UNION SELECT {group} FROM after_set"),
        )
        change = ("CASE WHEN a.n IS NULL THEN 'disappeared' WHEN b.n IS NULL THEN 'appeared' "
                  "ELSE 'remained' END")
        body = f"""
SELECT {change} AS change, {', '.join(f'k.{n}' for n in names)},
       coalesce(b.n, 0) AS {measure}_before, coalesce(a.n, 0) AS {measure}_after
FROM all_keys k LEFT JOIN before_set b ON {join_b} LEFT JOIN after_set a ON {join_a}
ORDER BY CASE WHEN a.n IS NULL THEN 0 WHEN b.n IS NULL THEN 2 ELSE 1 END, {', '.join(f'k.{n}' for n in names)}"""
        return self.table(table_id, title, body, ctes=ctes, description=description, empty="Nothing to compare.")

    def compare_section(self) -> Section:
        base = self.scope.base_session
        s = Section("compare", f"Before and after: session {base} compared with the sessions in scope",
                    "Art. 35(7)(d): does a measure work?")
        s.tables.append(self._compare(
            "compare-endpoints", "Destinations", [("host", "host"), ("signature_id",
                                                                     "coalesce(signature_id, 'undocumented')")],
            "base_flows", "scope_flows", "flows"))
        s.tables.append(self._compare(
            "compare-events", "Event names", [("event", "name"), ("documented_level",
                                                                  "coalesce(documented_level, '')")],
            "base_events", "scope_events", "events", where="direction = 'request' AND name IS NOT NULL"))
        s.tables.append(self._compare(
            "compare-findings", "Personal data (kind and destination)",
            [("kind", "kind"), ("destination", "coalesce(host, '')")], "base_findings", "scope_findings", "findings"))
        s.tables.append(self._compare(
            "compare-not-observable", "Connections not observable",
            [("kind", "kind"), ("destination", "coalesce(sni, server_address, '')")], "base_connections",
            "scope_connections", "connections", where="observable = 0"))
        summary = []
        for t in s.tables:
            changes = t.column("change")
            summary.append((t.title, changes.count("disappeared"), changes.count("remained"),
                            changes.count("appeared")))
        s.facts = {"base_session": base, "summary": [
            {"dimension": d, "disappeared": x, "remained": r, "appeared": a} for d, x, r, a in summary]}
        s.charts.append(charts.change_chart("chart-compare", "What disappeared, remained and appeared", summary))
        return s

    # -- 9. risks and measures -------------------------------------------------------------------------
    def risks_section(self, beyond_level: bool) -> Section:
        s = Section("risks", "Risks and measures", "Art. 35(7)(c) risks and (d) measures, prefilled from evidence")
        max_severity = ("CASE MAX(CASE severity WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END) "
                        "WHEN 3 THEN 'high' WHEN 2 THEN 'medium' ELSE 'low' END")
        rules = [
            ("Personal data sent to third parties", "'high'", "findings", "scope_findings",
             "data_flow = 'third-party'", "personal-data"),
            ("Planted canary values left the audited devices", "'high'", "findings", "scope_findings",
             "kind = 'canary'", "personal-data"),
            ("Customer content found in telemetry", "'high'", "findings", "scope_findings",
             "kind = 'customer-content'", "personal-data"),
            ("Personal data sent to the vendor or its affiliates", max_severity, "findings", "scope_findings",
             "data_flow IN ('first-party', 'vendor-affiliate')", "personal-data"),
            ("Personal data sent to undocumented endpoints", max_severity, "findings", "scope_findings",
             undocumented(), "undocumented"),
            ("Data shared with third parties or vendor affiliates", "'medium'", "flows", "scope_flows",
             third_party(), "third-parties"),
            ("Data sent to endpoints no documentation describes", "'medium'", "flows", "scope_flows",
             undocumented(), "undocumented"),
            ("Events Microsoft's lists do not document, sent to diagnostic-data endpoints", "'medium'", "events",
             "scope_events", "direction = 'request' AND name IS NOT NULL AND documented_level = 'undocumented' "
             "AND category = 'diagnostic-data'", "undocumented"),
            ("Connections whose content could not be inspected", "'medium'", "connections", "scope_connections",
             "observable = 0", "blind-spots"),
        ]
        selects = []
        for n, (risk, severity, unit, source, where, section) in enumerate(rules, start=1):
            dest = "COUNT(DISTINCT coalesce(sni, server_address))" if source == "scope_connections" else (
                "COUNT(DISTINCT host)" if source != "scope_events" else "COUNT(DISTINCT signature_id)")
            selects.append(f"SELECT {n} AS n, {sql_text(risk)} AS risk, {severity} AS proposed_severity, "
                           f"COUNT(*) AS evidence, '{unit}' AS unit, {dest} AS destinations, "
                           f"'{section}' AS see_section FROM {source} WHERE {where} HAVING COUNT(*) > 0")
        if beyond_level:
            parts = self._beyond_level_parts()
            if parts:
                where = " OR ".join(f"({w})" for _, _, w in parts)
                selects.append(
                    f"SELECT {len(rules) + 1}, 'Diagnostic events sent beyond the declared level', 'high', "
                    "COUNT(*), 'events', COUNT(DISTINCT e.signature_id), 'levels' "
                    f"FROM scope_events e LEFT JOIN signatures s ON s.id = e.signature_id WHERE {where} "
                    "HAVING COUNT(*) > 0")
        s.tables.append(self.table(
            "risk-register", "Risks the evidence supports", "\nUNION ALL ".join(selects) + "\nORDER BY n",
            description="Each row is a risk with evidence behind it; the severity is teletap's proposal (high for "
                        "third parties, canaries, content and data beyond the declared level), for the DPIA's "
                        "authors to confirm or change.",
            empty="The evidence in scope supports none of the risks teletap checks for."))
        s.tables.append(self.table(
            "measures", "Measures documented by the vendors (controls of the endpoints contacted)", """
SELECT json_extract(c.value, '$.type') AS control_type, json_extract(c.value, '$.name') AS control,
       coalesce(json_extract(c.value, '$.path'), json_extract(c.value, '$.key'), '') AS location,
       coalesce(json_extract(c.value, '$.value'), '') AS value_name,
       coalesce(CAST(json_extract(c.value, '$.values') AS TEXT), '') AS settings,
       group_concat(x.signature_id, ', ') AS endpoints, SUM(x.flows) AS flows,
       SUM(x.essential) AS endpoints_vendor_calls_essential
FROM (SELECT f.signature_id, s.controls, coalesce(s.essential, 0) AS essential, COUNT(*) AS flows
      FROM scope_flows f JOIN signatures s ON s.id = f.signature_id
      WHERE json_valid(s.controls) AND json_array_length(s.controls) > 0
      GROUP BY f.signature_id ORDER BY f.signature_id) AS x, json_each(x.controls) c
GROUP BY control_type, control, location, value_name, settings
ORDER BY flows DESC, control_type, control, location, value_name, settings""",
            description="Policies, registry values and settings the signatures' sources name as switching the "
                        "endpoints off or limiting them. Where the vendor calls an endpoint essential, the "
                        "control limits what is sent but does not stop the connection.",
            empty="No endpoint contacted has a documented control."))
        s.tables.append(self.table(
            "no-control", "Documented endpoints contacted that no documented control switches off", """
SELECT f.signature_id, coalesce(s.name, '') AS endpoint, coalesce(f.category, '') AS category,
       coalesce(f.data_flow, '') AS data_flow, CASE coalesce(s.essential, 0) WHEN 1 THEN 'yes' ELSE 'no' END
       AS vendor_calls_essential, COUNT(*) AS flows
FROM scope_flows f JOIN signatures s ON s.id = f.signature_id
WHERE NOT (json_valid(s.controls) AND json_array_length(s.controls) > 0)
GROUP BY f.signature_id
ORDER BY flows DESC, f.signature_id""",
            description="Candidates for blocking at the network edge (or teletap's --sinkhole in a lab) if the "
                        "DPIA finds them unnecessary.",
            empty="Every documented endpoint contacted has a documented control."))
        s.facts = {"risks": len(s.table("risk-register").rows), "measures": len(s.table("measures").rows)}
        return s

    # -- 10. appendix ----------------------------------------------------------------------------------
    def appendix_section(self) -> Section:
        s = Section("appendix", "Evidence appendix",
                    "Every figure above traces to these rows: flow ids, times and body SHA-256")
        s.tables.append(self.table(
            "evidence-flows", "A.1 Flows", """
SELECT f.id AS flow_id, f.session_id AS session, f.request_time, coalesce(f.client_address, '') AS client, f.method,
       f.host, CASE WHEN EXISTS (SELECT 1 FROM findings x WHERE x.flow_id = f.id
                                 AND (x.location = 'url' OR x.location LIKE 'query:%'))
                    THEN '(withheld: personal data in the URL)' ELSE f.path END AS path,
       f.status, f.request_size_wire AS request_bytes, coalesce(f.request_sha256, '') AS request_sha256,
       coalesce(f.signature_id, 'undocumented') AS signature_id, f.event_count AS events, f.finding_count AS findings
FROM scope_flows f
ORDER BY f.request_time, f.id""",
            description="Query strings are never printed, and paths that carried personal data are withheld; "
                        "request_sha256 is the hash of the body exactly as the client sent it.",
            empty="No flows in scope."))
        s.tables.append(self.table(
            "evidence-findings", "A.2 Personal-data findings", """
SELECT fi.id AS finding, fi.flow_id, f.request_time, fi.kind, fi.severity, fi.location, fi.preview,
       coalesce(fi.host, '') AS destination, coalesce(f.request_sha256, '') AS request_sha256
FROM scope_findings fi JOIN flows f ON f.id = fi.flow_id
ORDER BY f.request_time, fi.flow_id, fi.id""", empty="No findings in scope."))
        parts = self._beyond_level_parts()
        if parts:
            where = " OR ".join(f"({w})" for _, _, w in parts)
            s.tables.append(self.table(
                "evidence-beyond-level", "A.3 Events beyond the declared level", f"""
SELECT e.id AS event_id, e.flow_id, f.request_time, e.name AS event, e.documented_level,
       coalesce(f.request_sha256, '') AS request_sha256
FROM scope_events e JOIN flows f ON f.id = e.flow_id LEFT JOIN signatures s ON s.id = e.signature_id
WHERE {where}
ORDER BY f.request_time, e.flow_id, e.id""", empty="No event beyond the declared level."))
        s.tables.append(self.table(
            "evidence-not-observable", "A.4 Connections not observable", """
SELECT id AS connection_id, session_id AS session, started, coalesce(client_address, '') AS client, kind,
       coalesce(sni, server_address, '') AS destination, server_port AS port, coalesce(reason, '') AS reason
FROM scope_connections
WHERE observable = 0
ORDER BY started, id""", empty="No connection in scope was unobservable."))
        s.facts = {"flows": len(s.table("evidence-flows").rows)}
        return s


def table_count(scope: Scope) -> int:
    """How many tables a report on this scope has (for the progress bar)."""
    count = 5 + 8 + 2 + 2 + 3 + 3 + 1 + 3 + 3  # scope … appendix, without optional tables
    if scope.levels:
        count += 2
    if scope.base_session is not None:
        count += 4
    if any(ALLOWED_DOCUMENTED_LEVELS[p][lv] is not None for p, lv in scope.levels):
        count += 1  # appendix A.3
    return count


def build_report(conn: sqlite3.Connection, options: ReportOptions,
                 progress: Callable[[int], None] | None = None) -> Report:
    """All queries run in one read transaction: a proxy still writing cannot make sections disagree."""
    builder = _Builder(conn, options, progress)
    conn.execute("BEGIN")
    try:
        sections = [builder.scope_section(), builder.flows_section(), builder.personal_data_section(),
                    builder.third_party_section(), builder.undocumented_section(), builder.blind_spots_section(),
                    builder.levels_section()]
        if options.scope.base_session is not None:
            sections.append(builder.compare_section())
        sections.append(builder.risks_section(beyond_level=bool(options.scope.levels)))
        sections.append(builder.appendix_section())
    finally:
        conn.execute("ROLLBACK")
    scope = options.scope
    parameters = {"sessions": list(scope.sessions), "since": scope.since, "until": scope.until,
                  "levels": [f"{p}={lv}" for p, lv in scope.levels], "compare": scope.base_session,
                  **options.parameters}
    return Report(title=options.title, generated_at=options.generated_at, teletap_version=__version__,
                  database=options.database, parameters=parameters, sections=sections)
