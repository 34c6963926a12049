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
HIDDEN = ("teletap_schema",)  # bookkeeping, not evidence: kept out of the officers' table list

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

# Everything a client contacted: HTTP flows and the connections teletap could not (or did not) read. Event and
# finding counts come from the flow rows (ingest writes them with the flow), so summaries need no join.
_SEEN = """with seen as (
  select host, signature_id, category, vendor, data_flow, session_id, client_address, 1 as is_flow,
    coalesce(request_size_wire, 0) as bytes_sent, request_time as time, coalesce(event_count, 0) as events,
    coalesce(finding_count, 0) as findings
  from flows
  union all
  select coalesce(sni, server_address), signature_id, category, vendor, data_flow, session_id, client_address, 0,
    coalesce(bytes_from_client, 0), started, 0, 0
  from connections
)
"""

# "events e not indexed": grouping every event reads the whole table anyway; walking it through the name index
# instead (SQLite's choice) costs random reads, 3× slower on 400k events.
# Queries are the questions privacy officers ask, answerable in a click; titles are those questions.
QUERIES: dict[str, dict[str, Any]] = {
    "endpoints_by_category": {
        "title": "Endpoints contacted, by category and vendor",
        "description": "Every destination, grouped by what its signature says it is (category, vendor) and "
                       "linked to the vendor's documentation. 'undocumented' means no signature matched. "
                       "Counts HTTP flows and connections that could not be read. Leave a field empty for all.",
        "sql": _SEEN + f"""select coalesce(seen.category, 'undocumented') as category, seen.vendor, seen.host,
  seen.signature_id, s.name as documented_as, s.documentation_url,
  sum(is_flow) as flows, sum(1 - is_flow) as connections, sum(bytes_sent) as bytes_sent,
  min(time) as first_seen, max(time) as last_seen
from seen left join signatures s on s.id = seen.signature_id
where {_IN_SESSION.format(t="seen.")}
  and (:category = '' or coalesce(seen.category, 'undocumented') = :category)
  and (:vendor = '' or seen.vendor = :vendor)
group by coalesce(seen.category, 'undocumented'), seen.vendor, seen.host, seen.signature_id
order by category, seen.vendor, flows desc, seen.host""",
        "params": ["session", "category", "vendor"],
    },
    "undocumented_endpoints": {
        "title": "Undocumented endpoints",
        "description": "Destinations that match no documented endpoint: traffic the vendors' documentation "
                       "does not explain. Start the review here.",
        "sql": _SEEN + f"""select host, sum(is_flow) as flows, sum(1 - is_flow) as connections,
  sum(bytes_sent) as bytes_sent, count(distinct client_address) as clients, sum(events) as events,
  sum(findings) as personal_data_findings,
  min(time) as first_seen, max(time) as last_seen
from seen
where coalesce(signature_id, 'undocumented') = 'undocumented' and {_IN_SESSION.format(t="")}
group by host
order by flows desc, connections desc, host""",
        "params": ["session"],
    },
    "third_party_destinations": {
        "title": "Third-party destinations and what was sent to each",
        "description": "Destinations that the signatures document as third parties (not the vendor or its "
                       "affiliates): how much was sent, which decoded events and which kinds of personal data.",
        "sql": _SEEN + f"""select seen.host, seen.vendor, seen.signature_id, s.name as documented_as,
  s.documentation_url, sum(is_flow) as flows, sum(1 - is_flow) as connections, sum(bytes_sent) as bytes_sent,
  (select group_concat(distinct f.request_content_type) from flows f
   where f.host = seen.host and f.data_flow = 'third-party' and {_IN_SESSION.format(t="f.")}) as content_types,
  (select group_concat(distinct e.name) from events e join flows f on f.id = e.flow_id
   where f.host = seen.host and f.data_flow = 'third-party' and {_IN_SESSION.format(t="f.")}) as events_sent,
  (select group_concat(distinct fi.kind) from findings fi join flows f on f.id = fi.flow_id
   where f.host = seen.host and f.data_flow = 'third-party' and {_IN_SESSION.format(t="f.")}) as personal_data_sent,
  (select count(*) from findings fi join flows f on f.id = fi.flow_id
   where f.host = seen.host and f.data_flow = 'third-party' and {_IN_SESSION.format(t="f.")}) as findings,
  min(time) as first_seen, max(time) as last_seen
from seen left join signatures s on s.id = seen.signature_id
where seen.data_flow = 'third-party' and {_IN_SESSION.format(t="seen.")}
group by seen.host, seen.vendor, seen.signature_id
order by bytes_sent desc, seen.host""",
        "params": ["session"],
    },
    "personal_data": {
        "title": "Personal data found, by kind and destination",
        "description": "What kinds of personal data were found, sent where, worst first. Values are not shown: "
                       "'distinct values' counts different values by their keyed hash. kind: e.g. email.",
        "sql": f"""select fi.kind, coalesce(fi.host, f.host) as destination,
  coalesce(fi.data_flow, 'undocumented') as data_flow, fi.vendor, fi.severity, count(*) as findings,
  count(distinct fi.value_hash) as distinct_values, group_concat(distinct fi.location) as found_in,
  min(f.request_time) as first_seen, max(f.request_time) as last_seen
from findings fi left join flows f on f.id = fi.flow_id
where {_IN_SESSION.format(t="fi.")} and (:kind = '' or fi.kind = :kind)
group by fi.kind, destination, fi.data_flow, fi.vendor, fi.severity
order by case fi.severity when 'high' then 0 when 'medium' then 1 else 2 end, findings desc, fi.kind, destination""",
        "params": ["session", "kind"],
    },
    "events_by_name": {
        "title": "Events by name, with their documented level",
        "description": "Every decoded event name, how often it was sent and where, and what Microsoft documents "
                       "for it (office-required, office-essential-service, windows-required or undocumented). "
                       "name: part of an event name, e.g. Office.Outlook.",
        "sql": f"""select e.name, e.format, coalesce(e.documented_level, 'undocumented') as documented_level,
  count(*) as events, count(distinct e.flow_id) as flows, group_concat(distinct f.host) as sent_to,
  min(coalesce(e.time, f.request_time)) as first_seen, max(coalesce(e.time, f.request_time)) as last_seen
from events e not indexed left join flows f on f.id = e.flow_id
where {_IN_SESSION.format(t="e.")} and (:name = '' or e.name like '%' || :name || '%')
group by e.name, e.format, e.documented_level
order by events desc, e.name""",
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
        "sql": f"""select e.name, coalesce(e.documented_level, 'undocumented') as documented_level,
  case when coalesce(e.documented_level, 'undocumented') = 'undocumented'
    then 'not in Microsoft''s documented lists'
    else 'documented as ' || e.documented_level || ': above the configured level' end as why,
  e.format, count(*) as events, count(distinct e.flow_id) as flows, group_concat(distinct f.host) as sent_to,
  min(coalesce(e.time, f.request_time)) as first_seen, max(coalesce(e.time, f.request_time)) as last_seen
from events e not indexed left join flows f on f.id = e.flow_id
where coalesce(e.direction, 'request') = 'request' and coalesce(e.name, '') != '' and {_IN_SESSION.format(t="e.")}
  and coalesce(e.documented_level, 'undocumented') != 'office-essential-service'
  and not (lower(trim(:level)) in ('', 'required', 'basic', 'optional', 'full')
           and e.documented_level in ('office-required', 'windows-required'))
group by e.name, e.documented_level, e.format
order by documented_level desc, events desc, e.name""",
        "params": ["level", "session"],
    },
    "traffic_over_time": {
        "title": "Traffic over time, per category",
        "description": "HTTP flows and bytes per hour and category (times in UTC). bucket: hour (default), "
                       "minute or day. The charts page draws this.",
        "sql": f"""select case lower(:bucket) when 'minute' then substr(request_time, 1, 16)
    when 'day' then substr(request_time, 1, 10) else substr(request_time, 1, 13) || ':00' end as period,
  coalesce(category, 'undocumented') as category, count(*) as flows,
  sum(coalesce(request_size_wire, 0)) as bytes_sent, sum(coalesce(response_size_wire, 0)) as bytes_received
from flows
where request_time is not null and {_IN_SESSION.format(t="")}
group by period, coalesce(category, 'undocumented')
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
        "sql": _SEEN + f"""select client_address, sum(is_flow) as flows, sum(1 - is_flow) as connections,
  count(distinct host) as destinations, sum(bytes_sent) as bytes_sent, sum(events) as events,
  sum(findings) as personal_data_findings,
  sum(coalesce(signature_id, 'undocumented') = 'undocumented') as undocumented,
  min(time) as first_seen, max(time) as last_seen
from seen
where {_IN_SESSION.format(t="")}
group by client_address
order by flows desc, client_address""",
        "params": ["session"],
    },
    "session_changes": {
        "title": "What changed between two sessions",
        "description": "Endpoints (hosts) and event names seen in only one of two sessions, e.g. before and "
                       "after a policy change. session_a, session_b: session numbers (see the sessions table).",
        "sql": """with items as (
  select 'endpoint' as what, host as item, signature_id, session_id from flows where host is not null
  union all
  select 'endpoint', coalesce(sni, server_address), signature_id, session_id from connections
  union all
  select 'event', name, signature_id, session_id from events where coalesce(name, '') != ''
),
counted as (
  select what, item, max(signature_id) as signature_id,
    sum(session_id = cast(:session_a as integer)) as in_a, sum(session_id = cast(:session_b as integer)) as in_b
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
        "sql": f"""select host, signature_id, category, vendor, data_flow, count(*) as flows,
  sum(coalesce(request_size_wire, 0)) as bytes_sent, min(request_time) as first_seen, max(request_time) as last_seen
from flows
where {_IN_SESSION.format(t="")}
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
