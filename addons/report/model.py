"""The report model: sections of tables, each table with the exact SQL that produced it.

Renderers only format this model; they never query the database. That keeps every number in every
format traceable to one statement, and makes the JSON output a faithful copy of what the documents show.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

Cell = str | int | float | None


@dataclass
class Table:
    id: str  # stable anchor, e.g. "flows-by-vendor"
    title: str
    sql: str
    columns: list[str]
    rows: list[tuple[Cell, ...]]
    description: str = ""  # what one row means
    empty: str = "No rows."  # what an empty result means, said plainly

    def column(self, name: str) -> list[Cell]:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]

    def records(self) -> list[dict[str, Cell]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def total(self, name: str) -> int:
        return sum(int(v or 0) for v in self.column(name))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "description": self.description, "sql": self.sql,
                "columns": self.columns, "rows": [list(r) for r in self.rows]}


@dataclass
class Chart:
    id: str
    title: str
    svg: str  # self-contained inline SVG
    source_table: str  # the table whose rows it draws


@dataclass
class Section:
    id: str
    title: str
    gdpr: str  # which part of Art. 35(7) it serves
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # figures the prose quotes (all derived from tables)

    def table(self, table_id: str) -> Table:
        for t in self.tables:
            if t.id == table_id:
                return t
        raise KeyError(table_id)

    def has(self, table_id: str) -> bool:
        return any(t.id == table_id for t in self.tables)


@dataclass
class Report:
    title: str
    generated_at: str
    teletap_version: str
    database: str  # file name only: a path can say more about the auditor's machine than needed
    parameters: dict[str, Any]
    sections: list[Section]

    def section(self, section_id: str) -> Section:
        for s in self.sections:
            if s.id == section_id:
                return s
        raise KeyError(section_id)

    def has_section(self, section_id: str) -> bool:
        return any(s.id == section_id for s in self.sections)

    def table(self, table_id: str) -> Table:
        for s in self.sections:
            for t in s.tables:
                if t.id == table_id:
                    return t
        raise KeyError(table_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": "teletap-report", "format_version": 1, "title": self.title,
            "generated_at": self.generated_at, "teletap_version": self.teletap_version,
            "database": self.database, "parameters": self.parameters,
            "sections": [{"id": s.id, "title": s.title, "gdpr": s.gdpr, "facts": s.facts,
                          "tables": [t.as_dict() for t in s.tables]} for s in self.sections],
        }


def _cell(value: Any) -> Cell:
    if isinstance(value, bytes):  # no report column selects a body; a blob here would be a query bug
        return f"<{len(value)} bytes>"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def run_table(conn: sqlite3.Connection, table_id: str, title: str, sql: str, *, description: str = "",
              empty: str = "No rows.") -> Table:
    cur = conn.execute(sql)
    columns = [d[0] for d in cur.description]
    rows = [tuple(_cell(v) for v in row) for row in cur.fetchall()]
    return Table(table_id, title, sql, columns, rows, description, empty)
