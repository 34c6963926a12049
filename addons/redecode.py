"""Re-run the current decoders, signatures and detectors over flows already stored.

Stored bodies have their content-encoding removed, so the records rebuilt here carry no
Content-Encoding header; the evidence hashes (of the bodies as sent) are kept as they were.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from .ingest import Pipeline
from .records import Body, HttpFlowRecord
from .store import Store


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _headers(value: str | None) -> list[tuple[str, str]] | None:
    if value is None:
        return None
    return [(k, v) for k, v in json.loads(value) if k.lower() != "content-encoding"]


def flow_record_from_row(row: dict) -> HttpFlowRecord:
    request_body = Body(raw=row["request_body"], size_wire=row["request_size_wire"] or 0,
                        sha256=row["request_sha256"], truncated=bool(row["request_body_truncated"]))
    response_body = None
    if row["response_headers"] is not None:
        response_body = Body(raw=row["response_body"], size_wire=row["response_size_wire"] or 0,
                             sha256=row["response_sha256"], truncated=bool(row["response_body_truncated"]))
    return HttpFlowRecord(
        id=row["id"], request_time=_ts(row["request_time"]) or 0.0, response_time=_ts(row["response_time"]),
        client_address=row["client_address"], client_port=row["client_port"],
        server_address=row["server_address"], server_port=row["server_port"], scheme=row["scheme"] or "http",
        host=row["host"] or "", port=row["port"] or 0, method=row["method"] or "GET", path=row["path"] or "/",
        query=row["query"] or "", url=row["url"] or "", http_version=row["http_version"] or "",
        status=row["status"], request_headers=_headers(row["request_headers"]) or [],
        response_headers=_headers(row["response_headers"]), request_body=request_body,
        response_body=response_body, error=row["error"], sinkhole_rule=row["sinkhole_rule"],
        tls_version=row["tls_version"], sni=row["sni"], source=row["source"] or "live",
    )


def redecode(db_path: Path, pipeline: Pipeline, *, session: int | None = None, batch: int = 200,
             progress: Callable[[int], None] | None = None) -> int:
    """Rewrite every stored flow (of one session, or all) through ``pipeline``. Returns the flow count."""
    store = Store(db_path)
    try:
        where, params = ("WHERE session_id = ?", (session,)) if session is not None else ("", ())
        ids = [r[0] for r in store.conn.execute(f"SELECT id FROM flows {where} ORDER BY rowid", params)]
        done = 0
        for chunk in _chunks(ids, batch):
            marks = ",".join("?" for _ in chunk)
            rows = [dict(r) for r in store.conn.execute(f"SELECT * FROM flows WHERE id IN ({marks})", chunk)]
            store.write([pipeline.process(flow_record_from_row(row), row["session_id"]) for row in rows])
            done += len(rows)
            if progress:
                progress(len(rows))
        return done
    finally:
        store.close()


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
