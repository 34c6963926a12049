"""Builds ``datasette_metadata.json`` from the schema, so table and column descriptions never drift.

    python -m teletap.datasette_meta            # rewrite datasette_metadata.json in the checkout
    python -m teletap.datasette_meta --check    # exit 1 if it is out of date (CI)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .schema import TABLES

DATABASE = "teletap"  # Datasette names a database after its file; `teletap serve` renames this key to match

FACETS: dict[str, list[str]] = {
    "flows": ["category", "vendor", "data_flow", "signature_id", "host", "session_id"],
    "connections": ["kind", "observable", "category", "signature_id", "sni", "session_id"],
    "events": ["format", "name", "documented_level", "category", "session_id"],
    "findings": ["kind", "severity", "data_flow", "host", "session_id"],
    "dns": ["question", "session_id"],
    "signatures": ["category", "vendor", "data_flow"],
    "websocket_messages": ["direction", "session_id"],
}

SORT_DESC: dict[str, str] = {
    "flows": "request_time", "connections": "started", "events": "id", "findings": "id", "dns": "time",
    "sessions": "id", "websocket_messages": "id",
}
SORT: dict[str, str] = {"signatures": "id"}
# Bookkeeping and derived counts, not evidence: kept out of the officers' table list (still queryable).
HIDDEN = ("teletap_schema", "summary_endpoints", "summary_traffic", "summary_events", "summary_findings")

# How teletap's Datasette plugin (addons/datasette_plugins) shows cells: JSON pretty-printed, long text and
# bodies folded away behind a summary line, flows linked to their events and findings.
PLUGIN_CONFIG: dict[str, Any] = {
    "json_columns": {
        "sessions": ["options", "unrecorded_reasons"],
        "flows": ["request_headers", "response_headers", "decode_notes"],
        "dns": ["answers"],
        "events": ["data", "pii"],
        "signatures": ["levels", "controls", "documentation", "expect", "match"],
    },
    "body_columns": {
        "flows": ["request_body", "response_body"],
        "websocket_messages": ["content"],
    },
    "collapse_over": 200,  # characters; longer values are folded
}

# Every canned query takes optional parameters; '' (the default) means "all". Session ids are compared as
# integers because Datasette passes every parameter as text.
_IN_SESSION = "(:session = '' or {t}session_id = cast(:session as integer))"

# The grouped questions read the summary tables ingest keeps (addons/summaries.py): at 1M flows and 5M
# events, grouping the rows themselves took seconds to minutes per page view. Summaries store '' for "none"
# (their upsert key cannot hold NULL); the queries turn it back into NULL so results read as before.
_SEEN = f"""with seen as (
  select session_id, source, nullif(host, '') as host, nullif(signature_id, '') as signature_id,
    nullif(category, '') as category, nullif(vendor, '') as vendor, nullif(data_flow, '') as data_flow,
    nullif(content_type, '') as content_type,
    case source when 'flow' then items else 0 end as flows,
    case source when 'connection' then items else 0 end as connections,
    bytes_sent, first_seen, last_seen
  from summary_endpoints
  where {_IN_SESSION.format(t="")}
)
"""
_CLIENTS = f"""with seen as (
  select nullif(client_address, '') as client_address, nullif(host, '') as host,
    nullif(signature_id, '') as signature_id, items,
    case source when 'flow' then items else 0 end as flows,
    case source when 'connection' then items else 0 end as connections,
    bytes_sent, events, findings, first_seen, last_seen
  from summary_clients
  where {_IN_SESSION.format(t="")}
)
"""
_EVENTS = f"""with named as (
  select nullif(name, '') as name, nullif(format, '') as format, documented_level, direction,
    nullif(host, '') as host, events, flows, first_seen, last_seen
  from summary_events
  where {_IN_SESSION.format(t="")}
)
"""
_UNDOCUMENTED = "coalesce(signature_id, 'undocumented') = 'undocumented'"

# Queries are the questions privacy officers ask, answerable in a click; titles are those questions.
QUERIES: dict[str, dict[str, Any]] = {
    "endpoints_by_category": {
        "title": "Endpoints contacted, by category and vendor",
        "description": "Every destination, grouped by what its signature says it is (category, vendor) and "
                       "linked to the vendor's documentation. 'undocumented' means no signature matched. "
                       "Counts HTTP flows and connections that could not be read. Leave a field empty for all.",
        "sql": _SEEN + """select coalesce(seen.category, 'undocumented') as category, seen.vendor as vendor, seen.host,
  seen.signature_id, s.name as documented_as, s.documentation_url,
  sum(flows) as flows, sum(connections) as connections, sum(bytes_sent) as bytes_sent,
  min(first_seen) as first_seen, max(last_seen) as last_seen
from seen left join signatures s on s.id = seen.signature_id
where (:category = '' or coalesce(seen.category, 'undocumented') = :category)
  and (:vendor = '' or seen.vendor = :vendor)
group by coalesce(seen.category, 'undocumented'), seen.vendor, seen.host, seen.signature_id
order by category, vendor, flows desc, seen.host""",
        "params": ["session", "category", "vendor"],
    },
    "undocumented_endpoints": {
        "title": "Undocumented endpoints",
        "description": "Destinations that match no documented endpoint: traffic the vendors' documentation "
                       "does not explain. Start the review here.",
        "sql": _CLIENTS + f"""select host, sum(flows) as flows, sum(connections) as connections,
  sum(bytes_sent) as bytes_sent, count(distinct client_address) as clients, sum(events) as events,
  sum(findings) as personal_data_findings, min(first_seen) as first_seen, max(last_seen) as last_seen
from seen
where {_UNDOCUMENTED}
group by host
order by flows desc, connections desc, host""",
        "params": ["session"],
    },
    "third_party_destinations": {
        "title": "Third-party destinations and what was sent to each",
        "description": "Destinations that the signatures document as third parties (not the vendor or its "
                       "affiliates): how much was sent, which decoded events and which kinds of personal data.",
        # What was sent to each third-party host: one pass over each summary, joined by host.
        "sql": _SEEN + f""", sent_events as (
  select host, group_concat(distinct nullif(name, '')) as names from summary_events
  where data_flow = 'third-party' and {_IN_SESSION.format(t="")} group by host
), sent_data as (
  select host, group_concat(distinct kind) as kinds, sum(findings) as findings from summary_findings
  where data_flow = 'third-party' and {_IN_SESSION.format(t="")} group by host
)
select seen.host, seen.vendor, seen.signature_id, s.name as documented_as,
  s.documentation_url, sum(flows) as flows, sum(connections) as connections, sum(bytes_sent) as bytes_sent,
  group_concat(distinct seen.content_type) as content_types, sent_events.names as events_sent,
  sent_data.kinds as personal_data_sent, coalesce(sent_data.findings, 0) as findings,
  min(first_seen) as first_seen, max(last_seen) as last_seen
from seen left join signatures s on s.id = seen.signature_id
  left join sent_events on sent_events.host = seen.host
  left join sent_data on sent_data.host = seen.host
where seen.data_flow = 'third-party'
group by seen.host, seen.vendor, seen.signature_id
order by bytes_sent desc, seen.host""",
        "params": ["session"],
    },
    "personal_data": {
        "title": "Personal data found, by kind and destination",
        "description": "What kinds of personal data were found, sent where, worst first. Values are not shown: "
                       "'distinct values' counts different values by their keyed hash. kind: e.g. email.",
        # Grouped by the stored columns, in the summary's key order: SQLite then reads it without a sort.
        "sql": f"""select kind, nullif(sf.host, '') as destination,
  coalesce(nullif(sf.data_flow, ''), 'undocumented') as data_flow, nullif(sf.vendor, '') as vendor,
  nullif(sf.severity, '') as severity, sum(findings) as findings,
  count(distinct nullif(value_hash, '')) as distinct_values, group_concat(distinct nullif(location, '')) as found_in,
  min(first_seen) as first_seen, max(last_seen) as last_seen
from summary_findings sf
where {_IN_SESSION.format(t="")} and (:kind = '' or kind = :kind)
group by sf.kind, sf.host, sf.data_flow, sf.vendor, sf.severity
order by case severity when 'high' then 0 when 'medium' then 1 else 2 end, findings desc, kind, destination""",
        "params": ["session", "kind"],
    },
    "events_by_name": {
        "title": "Events by name, with their documented level",
        "description": "Every decoded event name, how often it was sent (direction 'request') or received "
                       "('response', e.g. configuration) and where, and what Microsoft documents for it "
                       "(office-required, office-essential-service, windows-required or undocumented). "
                       "name: part of an event name, e.g. Office.Outlook.",
        "sql": _EVENTS + """select name, format, documented_level, direction, sum(events) as events,
  sum(flows) as flows, group_concat(distinct host) as sent_to, min(first_seen) as first_seen,
  max(last_seen) as last_seen
from named
where (:name = '' or name like '%' || :name || '%')
group by name, format, documented_level, direction
order by events desc, name""",
        "params": ["session", "name"],
    },
    "events_beyond_level": {
        "title": "Events beyond the configured diagnostic level",
        "description": "Events sent although the diagnostic level configured by policy should not allow them. "
                       "level: 'required' (the default: Office 'Required', Windows 'Required') lists events that "
                       "are undocumented; 'neither' (Office 'Neither', Windows 'Security'/off) also lists "
                       "required diagnostic events, as only essential services may then send. Unknown values "
                       "count as 'neither', so nothing is hidden by a typo. Only named events sent by clients: "
                       "a query string or form without an event name has no documented level to compare.",
        "sql": _EVENTS + """select name, documented_level,
  case when documented_level = 'undocumented' then 'not in Microsoft''s documented lists'
    else 'documented as ' || documented_level || ': above the configured level' end as why,
  format, sum(events) as events, sum(flows) as flows, group_concat(distinct host) as sent_to,
  min(first_seen) as first_seen, max(last_seen) as last_seen
from named
where direction = 'request' and name is not null and documented_level != 'office-essential-service'
  and not (lower(trim(:level)) in ('', 'required', 'basic', 'optional', 'full')
           and documented_level in ('office-required', 'windows-required'))
group by name, documented_level, format
order by documented_level desc, events desc, name""",
        "params": ["level", "session"],
    },
    "traffic_over_time": {
        "title": "Traffic over time, per category",
        "description": "HTTP flows and bytes per hour and category (times in UTC). bucket: hour (default), "
                       "minute or day. The charts page draws this.",
        "sql": f"""select case lower(:bucket) when 'minute' then minute
    when 'day' then substr(minute, 1, 10) else substr(minute, 1, 13) || ':00' end as period,
  coalesce(nullif(category, ''), 'undocumented') as category, sum(flows) as flows,
  sum(bytes_sent) as bytes_sent, sum(bytes_received) as bytes_received
from summary_traffic
where {_IN_SESSION.format(t="")}
group by period, coalesce(nullif(category, ''), 'undocumented')
order by period, category""",
        "params": ["session", "bucket"],
    },
    "not_observable": {
        "title": "Connections whose payload was not observable",
        "description": "TLS the client refused (certificate pinning or untrusted CA), TLS failures toward "
                       "servers and hosts passed through: what teletap could not read. Report these as blind spots.",
        "sql": f"""select sni, kind, reason, signature_id, category, vendor, count(*) as connections,
  min(started) as first_seen, max(started) as last_seen
from connections
where observable = 0 and {_IN_SESSION.format(t="")}
group by sni, kind, reason, signature_id, category, vendor
order by connections desc""",
        "params": ["session"],
    },
    "per_client": {
        "title": "Summary per client",
        "description": "For each audited client address: how many flows and unreadable connections, how many "
                       "destinations, bytes sent, decoded events, personal-data findings and undocumented items.",
        "sql": _CLIENTS + f"""select client_address, sum(flows) as flows, sum(connections) as connections,
  count(distinct host) as destinations, sum(bytes_sent) as bytes_sent, sum(events) as events,
  sum(findings) as personal_data_findings,
  sum(case when {_UNDOCUMENTED} then items else 0 end) as undocumented,
  min(first_seen) as first_seen, max(last_seen) as last_seen
from seen
group by client_address
order by flows desc, client_address""",
        "params": ["session"],
    },
    "session_changes": {
        "title": "What changed between two sessions",
        "description": "Endpoints (hosts) and event names seen in only one of two sessions, e.g. before and "
                       "after a policy change. session_a, session_b: session numbers (see the sessions table).",
        "sql": """with items as (
  select 'endpoint' as what, host as item, signature_id, session_id, items as n from summary_endpoints
  where host != ''
  union all
  select 'event', name, signature_id, session_id, events from summary_events where name != ''
),
counted as (
  select what, item, nullif(max(signature_id), '') as signature_id,
    sum(case when session_id = cast(:session_a as integer) then n else 0 end) as in_a,
    sum(case when session_id = cast(:session_b as integer) then n else 0 end) as in_b
  from items
  group by what, item
)
select case when in_a > 0 then 'only in A' else 'only in B' end as only_in, what, item, signature_id,
  in_a + in_b as times
from counted
where (in_a > 0) != (in_b > 0)
order by only_in, what, item""",
        "params": ["session_a", "session_b"],
    },
    "hosts_by_flows": {
        "title": "Hosts contacted, by number of flows",
        "description": "Every destination host with its flow count, bytes sent and documentation status.",
        "sql": _SEEN + """select host, signature_id, category, vendor, data_flow, sum(flows) as flows,
  sum(bytes_sent) as bytes_sent, min(first_seen) as first_seen, max(last_seen) as last_seen
from seen
where source = 'flow'
group by host, signature_id, category, vendor, data_flow
order by flows desc""",
        "params": ["session"],
    },
}


def build() -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for table in TABLES:
        entry: dict[str, Any] = {
            "description": table.description,
            "columns": {c.name: c.description for c in table.columns},
        }
        if table.label_column:
            entry["label_column"] = table.label_column
        if table.name in FACETS:
            entry["facets"] = FACETS[table.name]
        if table.name in SORT_DESC:
            entry["sort_desc"] = SORT_DESC[table.name]
        if table.name in SORT:
            entry["sort"] = SORT[table.name]
        if table.name in HIDDEN:
            entry["hidden"] = True
        tables[table.name] = entry
    return {
        "title": "teletap evidence",
        "description": "What the audited clients sent, where, and whether it is documented. Every row "
                       "links back to the capture session it belongs to.",
        # The HTML variants add what plain text cannot: where to click first. Datasette shows these.
        "description_html": "What the audited clients sent, where, and whether it is documented. Every row "
                            "links back to the capture session it belongs to. Start with the questions "
                            "(queries) of the database below, or look at the <a href=\"/-/teletap/charts\">"
                            "charts</a>.",
        "databases": {
            DATABASE: {
                "description": "Flows, connections, decoded telemetry events and personal-data findings.",
                "description_html": "Flows, connections, decoded telemetry events and personal-data findings. "
                                    "The queries below answer the usual questions in a click (leave a field "
                                    "empty for all); <a href=\"/-/teletap/charts\">charts</a> show traffic "
                                    "over time and the top destinations.",
                "tables": tables,
                "queries": QUERIES,
            }
        },
        "plugins": {"teletap": PLUGIN_CONFIG},
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    target = Path(__file__).resolve().parent.parent / "datasette_metadata.json"
    text = render()
    if "--check" in argv:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is out of date: run python -m teletap.datasette_meta", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
