"""Re-run the current decoders, signatures and detectors over flows already stored.

Stored bodies have their content-encoding removed, so the records rebuilt here mark them ``decoded``:
the headers stay as they were sent (Content-Encoding included, it is evidence) but are not applied again.
The evidence hashes (of the bodies as sent) are kept as they were. A flow whose analysis was deferred
(``flows.analysis``) holds its bodies as sent, so it is analysed exactly as live capture would have.
Ingest uses :func:`reanalyse` to catch up on deferred flows when it is idle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import Body, HttpFlowRecord
from .schema import ANALYSIS_DEFERRED
from .store import FlowRows, Item, Store

if TYPE_CHECKING:
    from .pipeline import Pipeline

log = logging.getLogger("teletap")


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _headers(value: str | None) -> list[tuple[str, str]] | None:
    if value is None:
        return None
    return [(k, v) for k, v in json.loads(value)]


def _stored_body(raw: bytes | None, size_wire: int | None, sha256: str | None, truncated: bool,
                 deferred: bool) -> Body:
    # A deferred flow's bodies are stored as sent. So is a body whose content-encoding could not be removed
    # (a bomb, corrupt gzip): its hash is the evidence hash. Decoding either must apply the content-encoding,
    # as live analysis does.
    as_sent = deferred or (raw is not None and not truncated and sha256 is not None
                           and hashlib.sha256(raw).hexdigest() == sha256)
    return Body(raw=raw, size_wire=size_wire or 0, sha256=sha256, truncated=truncated, decoded=not as_sent)


def flow_record_from_row(row: Mapping[str, Any]) -> HttpFlowRecord:
    deferred = row["analysis"] == ANALYSIS_DEFERRED
    request_body = _stored_body(row["request_body"], row["request_size_wire"], row["request_sha256"],
                                bool(row["request_body_truncated"]), deferred)
    response_body = None
    if row["response_headers"] is not None:
        response_body = _stored_body(row["response_body"], row["response_size_wire"], row["response_sha256"],
                                     bool(row["response_body_truncated"]), deferred)
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
        duration_ms=row["duration_ms"],
    )


def reanalyse(pipeline: Pipeline, rows: Iterable[Mapping[str, Any]]) -> list[Item]:
    """Stored flow rows through ``pipeline`` again. A row that fails is logged and left as it is stored."""
    items: list[Item] = []
    for row in rows:
        try:
            items.append(pipeline.process(flow_record_from_row(row), row["session_id"]))
        except Exception as e:  # the pipeline guards its stages; this is a bug, and must not stop the rest
            _left_as_stored(row, e)
    return items


def records_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[tuple[int, list[HttpFlowRecord]]]:
    """Stored flow rows as records, grouped by session in their order (for a worker pool to analyse)."""
    groups: list[tuple[int, list[HttpFlowRecord]]] = []
    for row in rows:
        try:
            record = flow_record_from_row(row)
        except Exception as e:  # a row this teletap cannot read back: it stays as it is
            _left_as_stored(row, e)
            continue
        if not groups or groups[-1][0] != row["session_id"]:
            groups.append((row["session_id"], []))
        groups[-1][1].append(record)
    return groups


def _left_as_stored(row: Mapping[str, Any], e: Exception) -> None:
    log.error("teletap: flow %s could not be analysed again and is left as stored: %s: %s",
              row["id"], type(e).__name__, str(e)[:300])


def redecode(db_path: Path, pipeline: Pipeline, *, session: int | None = None, deferred_only: bool = False,
             batch: int = 200, progress: Callable[[int], None] | None = None) -> int:
    """Rewrite every stored flow (of one session, or all; or only those whose analysis was deferred) through
    ``pipeline``. Returns the number of flows rewritten."""
    store = Store(db_path)
    try:
        where, params = flows_where(session, deferred_only)
        ids = [r[0] for r in store.conn.execute(f"SELECT id FROM flows {where} ORDER BY rowid", params)]
        done = 0
        for chunk in _chunks(ids, batch):
            marks = ",".join("?" for _ in chunk)
            items = reanalyse(pipeline, store.conn.execute(f"SELECT * FROM flows WHERE id IN ({marks})", chunk))
            store.write(items)
            done += sum(isinstance(item, FlowRows) for item in items)
            if progress:
                progress(len(chunk))
        return done
    finally:
        store.close()


def flows_where(session: int | None, deferred_only: bool) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause (and its parameters) of the flows ``redecode`` rewrites."""
    clauses, params = [], []
    if session is not None:
        clauses.append("session_id = ?")
        params.append(session)
    if deferred_only:
        clauses.append("analysis = ?")
        params.append(ANALYSIS_DEFERRED)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
