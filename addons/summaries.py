"""Per-session summaries of flows, connections, events and findings, kept in step with the rows they count.

The canned queries ask grouped questions ("which event names, how often, sent where") of tables that reach
millions of rows; grouping them on every page view took seconds to minutes at 1M flows (docs/benchmarks.md).
The summary tables (``schema.SUMMARIES``) answer the same questions from thousands of rows.

One aggregate statement per summary serves three uses, so there is a single definition of what a summary
counts: adding a written batch (``sign`` +1, restricted to the batch's flows and connections), taking away
the earlier version of rows a batch replaces (``sign`` -1, before they are deleted) and rebuilding from
scratch (no restriction). ``Store.write`` calls it inside the batch's transaction, so a summary never
disagrees with a committed row. Times only widen: a replaced flow leaves its first/last seen behind,
which is the same time unless the replacement changed it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .schema import (
    SUMMARIES,
    SUMMARY_CLIENTS,
    SUMMARY_ENDPOINTS,
    SUMMARY_EVENTS,
    SUMMARY_FINDINGS,
    SUMMARY_TRAFFIC,
    Table,
)

BATCH_FLOWS = "temp.teletap_batch_flows"
BATCH_CONNECTIONS = "temp.teletap_batch_connections"

# Filters: which rows an aggregate reads. {flows} applies to flows (f), events (e) and findings (fi) through
# their flow id, {connections} to connections.
IN_BATCH = {"flows": f"IN (SELECT id FROM {BATCH_FLOWS})", "connections": f"IN (SELECT id FROM {BATCH_CONNECTIONS})"}

# The media type alone: parameters such as a multipart boundary differ per request and would make a row each.
_MEDIA_TYPE = ("lower(trim(substr(coalesce(request_content_type, ''), 1, "
               "min(200, instr(coalesce(request_content_type, '') || ';', ';') - 1))))")


_CONNECTION_HOST = "coalesce(c.sni, c.server_address, '')"


def _key(expr: str) -> str:
    return f"coalesce({expr}, '')"


def _signature(alias: str) -> str:
    return ", ".join(_key(f"{alias}.{c}") for c in ("signature_id", "category", "vendor", "data_flow"))


_AGGREGATES: tuple[tuple[Table, str], ...] = (
    (SUMMARY_ENDPOINTS, f"""
SELECT coalesce(f.session_id, 0), 'flow', {_key('f.host')}, {_signature('f')}, {_MEDIA_TYPE},
  :sign * count(*), :sign * sum(coalesce(f.request_size_wire, 0)), :sign * sum(coalesce(f.response_size_wire, 0)),
  :sign * sum(coalesce(f.event_count, 0)), :sign * sum(coalesce(f.finding_count, 0)),
  min(f.request_time), max(f.request_time)
FROM flows f WHERE f.id {{flows}}
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"""),
    (SUMMARY_ENDPOINTS, f"""
SELECT coalesce(c.session_id, 0), 'connection', {_CONNECTION_HOST}, {_signature('c')}, '',
  :sign * count(*), :sign * sum(coalesce(c.bytes_from_client, 0)), :sign * sum(coalesce(c.bytes_from_server, 0)),
  0, 0, min(c.started), max(c.started)
FROM connections c WHERE c.id {{connections}}
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"""),
    (SUMMARY_CLIENTS, f"""
SELECT coalesce(f.session_id, 0), {_key('f.client_address')}, 'flow', {_key('f.host')}, {_key('f.signature_id')},
  :sign * count(*), :sign * sum(coalesce(f.request_size_wire, 0)),
  :sign * sum(coalesce(f.event_count, 0)), :sign * sum(coalesce(f.finding_count, 0)),
  min(f.request_time), max(f.request_time)
FROM flows f WHERE f.id {{flows}}
GROUP BY 1, 2, 3, 4, 5"""),
    (SUMMARY_CLIENTS, f"""
SELECT coalesce(c.session_id, 0), {_key('c.client_address')}, 'connection', {_CONNECTION_HOST},
  {_key('c.signature_id')},
  :sign * count(*), :sign * sum(coalesce(c.bytes_from_client, 0)), 0, 0, min(c.started), max(c.started)
FROM connections c WHERE c.id {{connections}}
GROUP BY 1, 2, 3, 4, 5"""),
    (SUMMARY_TRAFFIC, f"""
SELECT coalesce(f.session_id, 0), substr(f.request_time, 1, 16), {_key('f.category')},
  :sign * count(*), :sign * sum(coalesce(f.request_size_wire, 0)), :sign * sum(coalesce(f.response_size_wire, 0))
FROM flows f WHERE f.request_time IS NOT NULL AND f.id {{flows}}
GROUP BY 1, 2, 3"""),
    (SUMMARY_EVENTS, f"""
SELECT coalesce(e.session_id, 0), {_key('e.name')}, {_key('e.format')}, coalesce(e.documented_level, 'undocumented'),
  coalesce(e.direction, 'request'), {_key('f.host')}, {_signature('e')},
  :sign * count(*), :sign * count(DISTINCT e.flow_id),
  min(coalesce(e.time, f.request_time)), max(coalesce(e.time, f.request_time))
FROM events e LEFT JOIN flows f ON f.id = e.flow_id WHERE e.flow_id {{flows}}
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"""),
    (SUMMARY_FINDINGS, f"""
SELECT coalesce(fi.session_id, 0), {_key('fi.kind')}, coalesce(fi.host, f.host, ''), {_signature('fi')},
  {_key('fi.severity')}, {_key('fi.location')}, {_key('fi.value_hash')},
  :sign * count(*), min(f.request_time), max(f.request_time)
FROM findings fi LEFT JOIN flows f ON f.id = fi.flow_id WHERE fi.flow_id {{flows}}
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"""),
)

_TIMES = {
    "first_seen": "CASE WHEN excluded.first_seen < first_seen OR first_seen IS NULL "
                  "THEN excluded.first_seen ELSE first_seen END",
    "last_seen": "CASE WHEN excluded.last_seen > last_seen OR last_seen IS NULL "
                 "THEN excluded.last_seen ELSE last_seen END",
}


def _upsert(table: Table, select: str) -> str:
    """INSERT … SELECT that adds the selected counts to existing rows with the same key."""
    columns = ", ".join(f"[{c}]" for c in table.column_names)
    updates = ", ".join(f"[{c}] = {_TIMES.get(c, f'[{c}] + excluded.[{c}]')}"
                        for c in table.column_names if c not in table.key)
    key = ", ".join(f"[{c}]" for c in table.key)
    return f"INSERT INTO [{table.name}] ({columns}){select}\nON CONFLICT ({key}) DO UPDATE SET {updates}"


def _statements(flows: str, connections: str) -> list[str]:
    return [_upsert(table, select.format(flows=flows, connections=connections)) for table, select in _AGGREGATES]


_BATCH_STATEMENTS = _statements(IN_BATCH["flows"], IN_BATCH["connections"])
_ALL_STATEMENTS = _statements("IS NOT NULL", "IS NOT NULL")
# Rows whose counts a replacement took to zero (the schema's partial index finds them).
_EMPTIED = [f"DELETE FROM [{t.name}] WHERE [{t.count_column}] <= 0" for t in SUMMARIES]


class Summaries:
    """Keeps the summary tables in step with one connection's batched writes (see ``Store.write``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.execute(f"CREATE TABLE IF NOT EXISTS {BATCH_FLOWS} (id TEXT PRIMARY KEY)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {BATCH_CONNECTIONS} (id TEXT PRIMARY KEY)")

    def begin(self, flow_ids: Sequence[str], connection_ids: Sequence[str]) -> None:
        """Note a batch's flows and connections, and take away what earlier versions of them counted."""
        conn = self.conn
        for table, ids in ((BATCH_FLOWS, flow_ids), (BATCH_CONNECTIONS, connection_ids)):
            conn.execute(f"DELETE FROM {table}")
            conn.executemany(f"INSERT OR IGNORE INTO {table} (id) VALUES (?)", [(i,) for i in ids])
        replaced = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM flows WHERE id {IN_BATCH['flows']}) "
            f"OR EXISTS (SELECT 1 FROM connections WHERE id {IN_BATCH['connections']})").fetchone()[0]
        if replaced:
            self._apply(_BATCH_STATEMENTS, -1)
            for statement in _EMPTIED:
                conn.execute(statement)

    def commit(self) -> None:
        """Add what the batch's rows (now written) count."""
        self._apply(_BATCH_STATEMENTS, 1)

    def _apply(self, statements: list[str], sign: int) -> None:
        for statement in statements:
            self.conn.execute(statement, {"sign": sign})


def rebuild(conn: sqlite3.Connection) -> None:
    """Recount every summary from the rows (an upgrade from schema version 2, or a repair)."""
    for table in SUMMARIES:
        conn.execute(f"DELETE FROM [{table.name}]")
    for statement in _ALL_STATEMENTS:
        conn.execute(statement, {"sign": 1})
