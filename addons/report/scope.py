"""What a report covers: sessions, time window, declared diagnostic levels, and the SQL that selects them.

Every value that ends up inside report SQL is validated here (session ids are integers, times are
normalised ISO-8601 strings), so the SQL printed under each table is exactly the SQL that ran and can be
pasted into Datasette or ``sqlite3`` as is.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass


class ReportError(Exception):
    """The report cannot be built as asked; the message says why."""


# Diagnostic levels an operator can declare, per product, from least to most data.
# Office: policy "Configure the level of client software diagnostic data sent by Office to Microsoft".
# Windows: policy "Allow Telemetry" / "Allow diagnostic data" (0 Security … 3 Optional).
LEVELS: dict[str, tuple[str, ...]] = {
    "office": ("neither", "required", "optional"),
    "windows": ("security", "required", "enhanced", "optional"),
}
LEVEL_ALIASES: dict[str, dict[str, str]] = {
    "office": {"none": "neither", "1": "required", "2": "optional", "3": "neither"},
    "windows": {"off": "security", "0": "security", "basic": "required", "1": "required", "2": "enhanced",
                "full": "optional", "3": "optional"},
}
# Event classes (events.documented_level) a product sends at each level, per Microsoft's documentation:
# Office sends essential-service data whatever the level ("Even if you choose Neither, required service
# data will be sent"); required diagnostic data from Required up; anything else only at Optional.
ALLOWED_DOCUMENTED_LEVELS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "office": {"neither": ("office-essential-service",),
               "required": ("office-essential-service", "office-required"),
               "optional": None},  # None: everything is within the level
    "windows": {"security": (),
                "required": ("windows-required",),
                "enhanced": None, "optional": None},
}


def parse_level(text: str) -> tuple[str, str]:
    """``office=neither`` → (``office``, ``neither``), accepting the policies' numeric values and old names."""
    product, sep, value = text.partition("=")
    product, value = product.strip().lower(), value.strip().lower()
    if not sep or product not in LEVELS:
        raise ReportError(f"--level expects office=LEVEL or windows=LEVEL, got {text!r}")
    value = LEVEL_ALIASES[product].get(value, value)
    if value not in LEVELS[product]:
        raise ReportError(f"--level {product}: unknown level {text.partition('=')[2]!r}; "
                          f"one of {', '.join(LEVELS[product])}")
    return product, value


_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S.%f",
                 "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_time(text: str, option: str) -> str:
    """Any ISO-8601 date or date-time (UTC unless an offset is given) → the stored form, e.g.
    ``2026-11-25T12:00:00.000Z``, so text comparison in SQL orders correctly."""
    raw = text.strip()
    value = raw[:-1] if raw.endswith(("Z", "z")) else raw
    parsed: dt.datetime | None = None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        for fmt in _TIME_FORMATS:
            try:
                parsed = dt.datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        raise ReportError(f"{option}: not an ISO-8601 date or time: {text!r} (e.g. 2026-11-25 or 2026-11-25T14:00Z)")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def sql_text(value: str) -> str:
    """A SQL string literal. Only used for values already validated above."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Scope:
    """The evidence a report covers; ``base_session`` is the session before a mitigation (``--compare``)."""

    sessions: tuple[int, ...]
    since: str | None = None
    until: str | None = None
    levels: tuple[tuple[str, str], ...] = ()
    base_session: int | None = None

    @property
    def session_list(self) -> str:
        return ", ".join(str(s) for s in self.sessions)

    def _time(self, column: str) -> str:
        parts = []
        if self.since:
            parts.append(f" AND {column} >= {sql_text(self.since)}")
        if self.until:
            parts.append(f" AND {column} < {sql_text(self.until)}")
        return "".join(parts)

    @property
    def windowed(self) -> bool:
        return bool(self.since or self.until)

    def ctes(self) -> dict[str, str]:
        """Named subqueries every report query builds on: the in-scope rows of each table."""
        sessions = f"session_id IN ({self.session_list})"
        flows = f"SELECT * FROM flows WHERE {sessions}{self._time('request_time')}"
        if self.windowed:
            # Events and findings belong to the window through their flow's request time.
            flow_ids = f"SELECT id FROM flows WHERE {sessions}{self._time('request_time')}"
            events = f"SELECT * FROM events WHERE flow_id IN ({flow_ids})"
            findings = f"SELECT * FROM findings WHERE flow_id IN ({flow_ids})"
        else:
            events = f"SELECT * FROM events WHERE {sessions}"
            findings = f"SELECT * FROM findings WHERE {sessions}"
        ctes = {
            "scope_sessions": f"SELECT * FROM sessions WHERE id IN ({self.session_list})",
            "scope_flows": flows,
            "scope_connections": f"SELECT * FROM connections WHERE {sessions}{self._time('started')}",
            "scope_events": events,
            "scope_findings": findings,
            "scope_websocket": f"SELECT * FROM websocket_messages WHERE {sessions}{self._time('time')}",
            "scope_dns": f"SELECT * FROM dns WHERE {sessions}{self._time('time')}",
        }
        if self.base_session is not None:
            base = f"session_id = {self.base_session}"
            ctes |= {
                "base_flows": f"SELECT * FROM flows WHERE {base}",
                "base_connections": f"SELECT * FROM connections WHERE {base}",
                "base_events": f"SELECT * FROM events WHERE {base}",
                "base_findings": f"SELECT * FROM findings WHERE {base}",
            }
        return ctes

    def sql(self, body: str, extra: tuple[tuple[str, str], ...] = ()) -> str:
        """``body`` prefixed with the scope subqueries it (or ``extra``, further named subqueries) uses, so
        the statement runs on its own."""
        text = body + " " + " ".join(sql for _, sql in extra)
        used = [(name, sql) for name, sql in self.ctes().items() if re.search(rf"\b{name}\b", text)]
        used += list(extra)
        if not used:
            return body.strip()
        return "WITH " + ",\n     ".join(f"{name} AS ({sql})" for name, sql in used) + "\n" + body.strip()


def resolve_sessions(conn: sqlite3.Connection, requested: Iterable[str], base: str | None) -> tuple[
        tuple[int, ...], int | None]:
    """Session ids from ``--session`` values (ids or exact labels, or comma-separated lists) and ``--compare``.

    Without ``--session`` the report covers every session except the comparison base.
    """
    known = {row[0]: row[1] for row in conn.execute("SELECT id, label FROM sessions ORDER BY id")}
    if not known:
        raise ReportError("the database holds no sessions: record with 'teletap run' or 'teletap import' first")

    def lookup(token: str, option: str) -> list[int]:
        token = token.strip()
        if re.fullmatch(r"\d+", token):
            if int(token) not in known:
                raise ReportError(f"{option} {token}: no such session (known: {', '.join(map(str, known))})")
            return [int(token)]
        matches = [sid for sid, label in known.items() if label == token]
        if not matches:
            raise ReportError(f"{option} {token!r}: no session has this id or label")
        return matches

    base_id: int | None = None
    if base is not None:
        ids = lookup(base, "--compare")
        if len(ids) != 1:
            raise ReportError(f"--compare {base!r}: {len(ids)} sessions carry this label; give the session id")
        base_id = ids[0]
    chosen: set[int] = set()
    for value in requested:
        # Labels often contain commas ("baseline, default settings"): a whole-label match wins over a list.
        if value.strip() in known.values():
            chosen.update(lookup(value, "--session"))
            continue
        for token in value.split(","):
            if token.strip():
                chosen.update(lookup(token, "--session"))
    if not chosen:
        chosen = {sid for sid in known if sid != base_id}
    if base_id is not None and base_id in chosen:
        raise ReportError(f"--compare {base}: the base session is also in the report's scope; choose other sessions "
                          "with --session")
    if not chosen:
        raise ReportError("no session left to report on besides the --compare base; give --session")
    return tuple(sorted(chosen)), base_id
