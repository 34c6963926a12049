"""Re-run the current decoders, signatures and detectors over flows already stored.

Stored bodies have their content-encoding removed, so the records rebuilt here mark them ``decoded``:
the headers stay as they were sent (Content-Encoding included, it is evidence) but are not applied again.
The evidence hashes (of the bodies as sent) are kept as they were.
"""

from __future__ import annotations

import hashlib
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
    return [(k, v) for k, v in json.loads(value)]


def _stored_body(raw: bytes | None, size_wire: int | None, sha256: str | None, truncated: bool) -> Body:
    # A body whose content-encoding could not be removed (a bomb, corrupt gzip) was stored as sent: its hash
    # is the evidence hash, and decoding it again must try the content-encoding again, as the first time.
    as_sent = raw is not None and not truncated and sha256 is not None and hashlib.sha256(raw).hexdigest() == sha256
    return Body(raw=raw, size_wire=size_wire or 0, sha256=sha256, truncated=truncated, decoded=not as_sent)


def flow_record_from_row(row: dict) -> HttpFlowRecord:
    request_body = _stored_body(row["request_body"], row["request_size_wire"], row["request_sha256"],
                                bool(row["request_body_truncated"]))
    response_body = None
    if row["response_headers"] is not None:
        response_body = _stored_body(row["response_body"], row["response_size_wire"], row["response_sha256"],
                                     bool(row["response_body_truncated"]))
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
