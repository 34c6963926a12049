"""SQLite storage: opening the evidence database safely, the schema version, and batched writes.

A ``Store`` belongs to one thread (SQLite connections are not shared). Writes come in batches, each in
one transaction, because a commit per flow costs ~10× more (see docs/architecture.md).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .schema import HOSTS_COVERING_INDEX, SCHEMA_VERSION, SUMMARIES, TABLES, TABLES_BY_NAME, Table
from .summaries import Summaries, rebuild


class StoreError(Exception):
    """The database cannot be used; the message says why and what to do."""


def iso(ts: float | None) -> str | None:
    """UNIX seconds → ISO-8601 UTC with milliseconds (sortable text, readable in Datasette)."""
    if ts is None:
        return None
    # Whole milliseconds first: 14.830 is 14.8299999… as a float, and truncating would say .829.
    ms = round(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def explain_write_error(path: Path, error: Exception) -> str:
    """A failed write in words an admin can act on.

    SQLite reports a filesystem that turned read-only under it (ext4 after an I/O error, an NFS export
    changed) only as "disk I/O error". Creating a nameless file beside the database tells. (Opening the
    database file itself would not do: closing any descriptor of it drops SQLite's locks.)
    """
    text = f"{type(error).__name__}: {error}"
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        if e.errno == errno.EROFS:
            return f"{text} (the filesystem holding the database is read-only)"
    return text


def _create_private_file(path: Path) -> None:
    """Create the DB file with mode 0600 before SQLite touches it: it holds what users sent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    # The covering index; the flows' other indexes existed in v1 (and v4's needs a column v1 lacks).
    conn.execute(TABLES_BY_NAME["flows"].index_sql(HOSTS_COVERING_INDEX))


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    # Summary tables, counted once from the rows already recorded (≈ 1 min per million flows).
    for table in SUMMARIES:
        for statement in table.create_sql():
            conn.execute(statement)
    rebuild(conn)


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    # Flows recorded so far were all analysed: NULL says so, and adding a NULL column rewrites no row.
    conn.execute("ALTER TABLE flows ADD COLUMN analysis TEXT")
    for statement in TABLES_BY_NAME["flows"].create_sql():
        conn.execute(statement)


# Migrations from version N to N+1, applied in order inside one transaction. Version 1 is the first.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


PAGE_SIZE = 16384


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) a teletap database with the schema at the current version."""
    path = Path(path)
    if readonly:
        if not path.exists():
            raise StoreError(f"{path}: no such database")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    else:
        if path.exists() and not os.access(path, os.W_OK):
            raise StoreError(f"{path}: the database is not writable by this user")
        try:
            _create_private_file(path)
        except OSError as e:
            raise StoreError(f"{path}: cannot create the database: {e.strerror or e}") from e
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            # Only takes effect while the file is still empty (a new database): bodies of 200 KB cost ingest
            # 35 % less CPU to store in 16 KiB pages than in SQLite's default 4 KiB (a quarter of the page
            # writes, reads and overflow-chain steps). Existing databases keep their page size.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: every commit (one per batch, a few per second at most) is synced, so a power cut or a
            # filesystem that fails loses no committed flow; with NORMAL the reliability test lost one.
            conn.execute("PRAGMA synchronous = FULL")
        _ensure_schema(conn, path, readonly=readonly)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreError(f"{path}: not a usable SQLite database ({e})") from e
    except StoreError:
        conn.close()
        raise
    return conn


def _current_version(conn: sqlite3.Connection) -> int | None:
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'teletap_schema'"
    ).fetchone()
    if not has_table:
        return None
    row = conn.execute("SELECT MAX(version) FROM teletap_schema").fetchone()
    return row[0] if row and row[0] is not None else None


def _ensure_schema(conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
    version = _current_version(conn)
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: written by a newer teletap (schema version {version}; this teletap knows up to "
            f"{SCHEMA_VERSION}). Upgrade teletap, or record into another --db."
        )
    if version == SCHEMA_VERSION:
        return
    if readonly:
        raise StoreError(f"{path}: schema version {version} is older than {SCHEMA_VERSION}; open it once "
                         "with a writable teletap command (e.g. teletap run or teletap redecode) to upgrade it")
    if version is None:
        others = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchone()[0]
        if others:
            raise StoreError(f"{path}: this SQLite file is not a teletap database; choose another --db")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version is None:
            for table in TABLES:
                for statement in table.create_sql():
                    conn.execute(statement)
        else:
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](conn)
        conn.execute(
            "INSERT INTO teletap_schema (version, upgraded, teletap_version) VALUES (?, ?, ?)",
            (SCHEMA_VERSION, iso(time.time()), __version__),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _storable(value: Any) -> Any:
    """Text SQLite can store: a lone surrogate (a JSON "\\ud83d" cut in half, or a non-UTF-8 byte that
    mitmproxy decoded with surrogateescape) becomes its backslash escape.

    Inside JSON text that escape is the very same value, and one hostile string must not cost a row.
    """
    if type(value) is not str or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


@dataclass
class FlowRows:
    """A flow and what ingest derived from it, written together (replacing an earlier version)."""

    flow: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    # findings carry "event_position" (or None) so they can be linked to the event rows' new ids
    findings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Row:
    table: str
    values: dict[str, Any]


Item = FlowRows | Row


def _insert_sql(table: Table, verb: str = "INSERT") -> str:
    cols = table.column_names
    return (f"{verb} INTO [{table.name}] ({', '.join(f'[{c}]' for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})")


class Store:
    """Writes teletap rows; one instance per thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = connect(self.path)
        self._sql = {t.name: _insert_sql(t, "INSERT OR REPLACE" if "TEXT PRIMARY KEY" in t.columns[0].type
                                         else "INSERT") for t in TABLES}
        self._columns = {t.name: tuple(t.column_names) for t in TABLES}
        self.conn.execute("PRAGMA temp_store = MEMORY")  # the summaries' per-batch id lists
        self.summaries = Summaries(self.conn)

    def close(self) -> None:
        self.conn.close()

    def _values(self, table: str, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(map(row.get, self._columns[table]))

    def start_session(self, *, label: str | None, kind: str, options: dict[str, Any],
                      signature_set_hash: str | None, mitmproxy_version: str | None) -> int:
        cur = self.conn.execute(
            "INSERT INTO sessions (label, kind, started, teletap_version, mitmproxy_version, options, "
            "signature_set_hash, hostname, items_recorded, items_unrecorded) VALUES (?,?,?,?,?,?,?,?,0,0)",
            (label, kind, iso(time.time()), __version__, mitmproxy_version,
             json.dumps(options, sort_keys=True, default=str), signature_set_hash, socket.gethostname()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_session(self, session_id: int, *, recorded: int, unrecorded: int,
                       reasons: dict[str, int], ended: bool = False) -> None:
        self.conn.execute(
            "UPDATE sessions SET items_recorded = ?, items_unrecorded = ?, unrecorded_reasons = ?"
            + (", ended = ?" if ended else "") + " WHERE id = ?",
            (recorded, unrecorded, json.dumps(reasons, sort_keys=True) if reasons else None,
             *((iso(time.time()),) if ended else ()), session_id),
        )

    def replace_signatures(self, rows: Iterable[dict[str, Any]]) -> None:
        """Keep the signatures table equal to the loaded set (flows keep their signature ids)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("DELETE FROM signatures")
            # plain INSERT: two signatures with one id are an error, not a silent replacement
            self._insert("signatures", [self._values("signatures", r) for r in rows],
                         _insert_sql(TABLES_BY_NAME["signatures"]))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def write(self, items: Sequence[Item]) -> None:
        """Write a batch in one transaction; on error nothing of the batch is written and it raises.

        A flow written again (an error after its response, a re-import, a redecode; even twice in one
        batch) replaces its earlier version together with its events and findings, never duplicates them.
        Rows go in with one executemany per table: a statement per row cost about twice as much.
        """
        flows: dict[str, FlowRows] = {}
        rows: dict[str, list[tuple[Any, ...]]] = {}
        connection_ids = []
        for item in items:
            if isinstance(item, FlowRows):
                flows.pop(item.flow["id"], None)  # the last version wins, in the order written
                flows[item.flow["id"]] = item
            else:
                rows.setdefault(item.table, []).append(self._values(item.table, item.values))
                if item.table == "connections":
                    connection_ids.append(item.values["id"])
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.summaries.begin(list(flows), connection_ids)
            for table, values in (*self._flow_rows(flows), *rows.items()):
                self._insert(table, values)
            self.summaries.commit()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _flow_rows(self, flows: dict[str, FlowRows]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Delete what the batch's flows replace; return the rows to insert for them, per table."""
        if not flows:
            return []
        conn = self.conn
        ids = [(flow_id,) for flow_id in flows]
        conn.executemany("DELETE FROM findings WHERE flow_id = ?", ids)
        conn.executemany("DELETE FROM events WHERE flow_id = ?", ids)
        # Event ids are given here, not by SQLite, so findings can point at them without a round trip per row.
        # Nothing else writes during the transaction (BEGIN IMMEDIATE holds the write lock).
        next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM events").fetchone()[0]
        event_columns, finding_columns = self._columns["events"][1:], self._columns["findings"]
        event_id_at = finding_columns.index("event_id")
        flow_rows = [self._values("flows", item.flow) for item in flows.values()]
        event_rows, finding_rows = [], []
        for item in flows.values():
            event_ids: dict[tuple[str, int], int] = {}
            for event in item.events:
                event_ids[(event.get("direction") or "request", event["position"])] = next_id
                event_rows.append((next_id, *map(event.get, event_columns)))
                next_id += 1
            for finding in item.findings:
                values = tuple(map(finding.get, finding_columns))
                position = finding.get("event_position")
                if position is not None:
                    values = (*values[:event_id_at], event_ids.get(("request", position)), *values[event_id_at + 1:])
                finding_rows.append(values)
        return [("flows", flow_rows), ("events", event_rows), ("findings", finding_rows)]

    def _insert(self, table: str, values: list[tuple[Any, ...]], sql: str | None = None) -> None:
        if not values:
            return
        conn, sql = self.conn, sql or self._sql[table]
        conn.execute("SAVEPOINT teletap_rows")
        try:
            conn.executemany(sql, values)
        except UnicodeEncodeError:
            # A lone surrogate somewhere: undo this table's rows and write them again with it escaped.
            conn.execute("ROLLBACK TO teletap_rows")
            conn.executemany(sql, [tuple(map(_storable, row)) for row in values])
        conn.execute("RELEASE teletap_rows")
