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
    "flows": ["category", "vendor", "data_flow", "host", "session_id"],
    "connections": ["kind", "observable", "category", "sni", "session_id"],
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

# Canned queries: the questions privacy officers ask, answerable in a click. Parameters are optional
# where it makes sense ('' means all).
QUERIES: dict[str, dict[str, Any]] = {
    "hosts_by_flows": {
        "title": "Hosts contacted, by number of flows",
        "description": "Every destination host with its flow count, bytes sent and documentation status.",
        "sql": """select host, signature_id, category, vendor, data_flow, count(*) as flows,
  sum(coalesce(request_size_wire, 0)) as bytes_sent, min(request_time) as first_seen, max(request_time) as last_seen
from flows
where (:session = '' or session_id = :session)
group by host, signature_id, category, vendor, data_flow
order by flows desc""",
        "params": ["session"],
    },
    "not_observable": {
        "title": "Connections whose payload was not observable",
        "description": "TLS the client refused (certificate pinning or untrusted CA), TLS failures toward "
                       "servers and hosts passed through: what teletap could not read. Report these as blind spots.",
        "sql": """select sni, kind, reason, signature_id, category, vendor, count(*) as connections,
  min(started) as first_seen, max(started) as last_seen
from connections
where observable = 0 and (:session = '' or session_id = :session)
group by sni, kind, reason, signature_id, category, vendor
order by connections desc""",
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
        tables[table.name] = entry
    return {
        "title": "teletap evidence",
        "description": "What the audited clients sent, where, and whether it is documented. Every row "
                       "links back to the capture session it belongs to.",
        "databases": {
            DATABASE: {
                "description": "Flows, connections, decoded telemetry events and personal-data findings.",
                "tables": tables,
                "queries": QUERIES,
            }
        },
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
