"""Two runs on the same evidence give byte-identical reports, whatever order SQLite stores the rows in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from teletap.schema import TABLES

from . import test_report_capture as cap

pytestmark = pytest.mark.e2e

FORMATS = ("html", "md", "json", "cnil-pia", "pdf")


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> cap.Capture:
    return cap.capture(tmp_path_factory)


def pdf_available() -> bool:
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def reports(db: Path, out: Path) -> dict[str, bytes]:
    result = {}
    for fmt in FORMATS:
        if fmt == "pdf" and not pdf_available():
            continue
        target = out / f"r.{fmt}"
        cap.teletap_report("--db", str(db), "--compare", "1", "--session", "2", "--level", "office=neither",
                           "--level", "windows=required", "--format", fmt, "--out", str(target),
                           "--generated-at", "2026-11-25T13:00:00+00:00")
        result[fmt] = target.read_bytes()
    return result


def reversed_copy(source: Path, target: Path) -> None:
    """The same rows (same ids) written in reverse order: rowids, pages and index scans all differ."""
    target.parent.mkdir(parents=True)
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        for (sql,) in src.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                                  "ORDER BY type = 'index'"):
            dst.execute(sql)
        for table in TABLES:
            columns = ", ".join(f"[{c}]" for c in table.column_names)
            # summaries are WITHOUT ROWID tables, stored in key order whatever the insertion order
            order = ", ".join(f"[{c}] DESC" for c in table.key) or "rowid DESC"
            data = src.execute(f"SELECT {columns} FROM [{table.name}] ORDER BY {order}").fetchall()
            dst.executemany(f"INSERT INTO [{table.name}] ({columns}) VALUES ({', '.join('?' * len(table.columns))})",
                            data)
        dst.commit()
    finally:
        src.close()
        dst.close()


def flow_ids_in_storage_order(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM flows ORDER BY rowid")]
    finally:
        conn.close()


def test_reruns_are_byte_identical(evidence: cap.Capture, tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = reports(evidence.db, tmp_path / "a"), reports(evidence.db, tmp_path / "b")
    assert set(first) >= {"html", "md", "json", "cnil-pia"}
    for fmt, data in first.items():
        assert data == second[fmt], fmt
    assert b"2026-11-25T13:00:00Z" in first["html"]


def test_row_storage_order_does_not_change_the_report(evidence: cap.Capture, tmp_path: Path):
    copy = tmp_path / "copy" / evidence.db.name  # same file name: the report names the database file
    reversed_copy(evidence.db, copy)
    assert flow_ids_in_storage_order(copy) == flow_ids_in_storage_order(evidence.db)[::-1]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    original, shuffled = reports(evidence.db, tmp_path / "a"), reports(copy, tmp_path / "b")
    for fmt, data in original.items():
        assert data == shuffled[fmt], fmt


def test_generation_time_is_the_only_difference(evidence: cap.Capture, tmp_path: Path):
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    for out, stamp in ((a, "2026-11-25T13:00:00Z"), (b, "2027-01-01T00:00:00Z")):
        cap.teletap_report("--db", str(evidence.db), "--session", "1", "--format", "md", "--out", str(out),
                           "--generated-at", stamp)
    assert a.read_text().replace("2026-11-25T13:00:00Z", "2027-01-01T00:00:00Z") == b.read_text()
