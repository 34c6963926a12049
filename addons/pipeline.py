"""The pipeline: records in, rows out (decode → match → detect), pure and shared.

Live capture (``teletap.ingest``), ``teletap import`` and ``teletap redecode`` all build the same records
and turn them into rows here, so evidence does not depend on how it was gathered. Every stage is guarded: a
failing decoder, matcher or detector is noted on the flow, and the flow is still stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import ConnectionRecord, DnsRecord, Headers, HttpFlowRecord, Record, WebSocketMessageRecord
from .schema import ANALYSIS_DEFERRED
from .store import FlowRows, Item, Row, iso

if TYPE_CHECKING:
    from .catalogue import EventCatalogue
    from .decoders import DecodeResult, Limits
    from .findings import FindingsEngine
    from .signatures import Matcher, Signature

log = logging.getLogger("teletap")

UNDOCUMENTED = "undocumented"
DEFERRED_NOTE = ("analysis deferred: stored while ingest was behind, bodies as sent; decoding and detection "
                 "follow when ingest catches up")


def header(headers: Headers | None, name: str) -> str | None:
    if not headers:
        return None
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, default=str)


def first_error_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


@dataclass
class PipelineConfig:
    max_request_body: int = 1024 * 1024
    max_response_body: int = 256 * 1024
    max_websocket_content: int = 64 * 1024
    blank_findings_in_bodies: bool = False


@dataclass
class Pipeline:
    """Turns records into rows. Every stage is guarded: a failing stage is noted, the record still stored."""

    matcher: Matcher | None = None
    catalogue: EventCatalogue | None = None
    findings: FindingsEngine | None = None
    limits: Limits | None = None
    config: PipelineConfig = field(default_factory=PipelineConfig)

    # -- signatures ---------------------------------------------------------------------------------
    def _signature_columns(self, host: str | None, path: str | None = None, method: str | None = None,
                           port: int | None = None, content_type: str | None = None) -> dict[str, Any]:
        sig: Signature | None = None
        if self.matcher is not None and host:
            try:
                sig = self.matcher.match(host, path, method, port, content_type)
            except Exception as e:  # a matcher bug must not cost the flow
                log.error("teletap: signature matching failed for %s: %s", host, first_error_line(e))
        if sig is None:
            return {"signature_id": UNDOCUMENTED, "category": None, "vendor": None, "data_flow": None}
        return {"signature_id": sig.id, "category": sig.category, "vendor": sig.vendor,
                "data_flow": sig.data_flow}

    # -- decoding -----------------------------------------------------------------------------------
    def _decode(self, direction: str, record: HttpFlowRecord, body: bytes) -> DecodeResult | None:
        from .decoders import decode_request, decode_response

        try:
            if direction == "request":
                return decode_request(record.method, record.url, record.request_headers, body, self.limits,
                                      content_decoded=record.request_body.decoded)
            return decode_response(record.method, record.url, record.status, record.response_headers or [],
                                   body, self.limits,
                                   content_decoded=bool(record.response_body and record.response_body.decoded))
        except Exception as e:  # the decoders promise not to raise; if one does, record it and move on
            log.error("teletap: decoder failed on %s: %s", record.url, first_error_line(e))
            return None

    def _event_rows(self, result: DecodeResult | None, direction: str, base: dict[str, Any]) -> list[dict]:
        if result is None:
            return []
        rows = []
        for ev in result.events:
            documented = None
            if self.catalogue is not None and ev.name:
                try:
                    documented = self.catalogue.classify(ev.name)
                except Exception as e:
                    log.error("teletap: event catalogue failed on %r: %s", ev.name, first_error_line(e))
            rows.append({
                **base, "direction": direction, "position": ev.position, "format": ev.format, "name": ev.name,
                "time": ev.time, "ikey": ev.ikey, "tenant_id": ev.tenant_id, "sdk_version": ev.sdk_version,
                "app_id": ev.app_id, "app_version": ev.app_version, "os_name": ev.os_name,
                "os_version": ev.os_version, "device_id": ev.device_id, "user_id": ev.user_id,
                "documented_level": documented, "data": _json(ev.data), "pii": _json(ev.pii or None),
            })
        return rows

    # -- records ------------------------------------------------------------------------------------
    def process(self, record: Record, session_id: int) -> Item:
        if isinstance(record, HttpFlowRecord):
            return self._flow(record, session_id)
        if isinstance(record, ConnectionRecord):
            return self._connection(record, session_id)
        if isinstance(record, WebSocketMessageRecord):
            return self._websocket(record, session_id)
        if isinstance(record, DnsRecord):
            return self._dns(record, session_id)
        raise TypeError(f"unknown record type {type(record).__name__}")

    def _flow(self, r: HttpFlowRecord, session_id: int) -> FlowRows:
        req_ctype = header(r.request_headers, "content-type")
        sig = self._signature_columns(r.host, r.path, r.method, r.port, req_ctype)
        notes: list[str] = []

        req_raw = r.request_body.raw or b""
        req_result = None
        if r.request_body.streamed:
            notes.append(f"request body of {r.request_body.size_wire} bytes was streamed: hashed, not decoded")
        elif req_raw or r.query:
            req_result = self._decode("request", r, req_raw)
        req_body = req_result.body if req_result is not None and req_result.body is not None else req_raw

        resp_raw = (r.response_body.raw if r.response_body else None) or b""
        resp_result = None
        if r.response_body is not None and not r.response_body.streamed and resp_raw:
            resp_result = self._decode("response", r, resp_raw)
        resp_body = resp_result.body if resp_result is not None and resp_result.body is not None else resp_raw

        base = {"flow_id": r.id, "session_id": session_id, **sig}
        events = self._event_rows(req_result, "request", base) + self._event_rows(resp_result, "response", base)

        finding_rows: list[dict[str, Any]] = []
        findings: Sequence[Any] = ()
        if self.findings is not None:
            try:
                findings = self.findings.scan(
                    url=r.url, request_headers=r.request_headers, body=req_body or None,
                    content_type=req_ctype, events=req_result.events if req_result else [],
                    data_flow=sig["data_flow"])
            except Exception as e:
                log.error("teletap: personal-data detection failed on %s: %s", r.url, first_error_line(e))
                notes.append(f"detection failed: {first_error_line(e)}")
            shared = {"flow_id": r.id, "session_id": session_id, "host": r.host, **sig}
            finding_rows = [{**shared, "location": f.location, "kind": f.kind, "detector": f.detector,
                             "confidence": f.confidence, "severity": f.severity, "preview": f.preview,
                             "value_hash": f.value_hash, "value": f.value, "event_position": f.event_position}
                            for f in findings]
        if findings and self.config.blank_findings_in_bodies and req_body:
            from .findings import blank_body

            req_body = blank_body(req_body, findings)

        decode_format = req_result.format if req_result else None
        if decode_format is None and resp_result is not None:
            decode_format = resp_result.format
        errors = [f"{d}: {res.error}" for d, res in (("request", req_result), ("response", resp_result))
                  if res is not None and res.error]
        for res in (req_result, resp_result):
            if res is not None:
                notes.extend(res.notes)
        if req_result is None and req_raw and not r.request_body.streamed:
            errors.append("request: decoder unavailable")

        max_req, max_resp = self.config.max_request_body, self.config.max_response_body
        flow = self._flow_columns(r, session_id, sig, req_ctype)
        flow.update({
            "request_size": None if r.request_body.streamed else len(req_body),
            "request_body": req_body[:max_req] if req_body else None,
            "request_body_truncated": int(r.request_body.streamed or r.request_body.truncated
                                          or len(req_body) > max_req),
            "response_size": (len(resp_body) if r.response_body and not r.response_body.streamed else None),
            "response_body": resp_body[:max_resp] if resp_body else None,
            "response_body_truncated": int(bool(r.response_body and (r.response_body.streamed
                                                                    or r.response_body.truncated
                                                                    or len(resp_body) > max_resp))),
            "decode_format": decode_format, "decode_error": "; ".join(errors) or None,
            "decode_error_offset": req_result.error_offset if req_result and req_result.error else None,
            "decode_notes": _json(notes or None), "event_count": len(events), "finding_count": len(finding_rows),
            "analysis": None,
        })
        return FlowRows(flow=flow, events=events, findings=finding_rows)

    @staticmethod
    def _flow_columns(r: HttpFlowRecord, session_id: int, sig: dict[str, Any], req_ctype: str | None
                      ) -> dict[str, Any]:
        """What a flow row holds whether or not it has been analysed yet: the request and response as seen."""
        return {
            "id": r.id, "session_id": session_id, "request_time": iso(r.request_time),
            "response_time": iso(r.response_time),
            "duration_ms": r.duration_ms if r.duration_ms is not None else (
                round((r.response_time - r.request_time) * 1000, 3) if r.response_time else None),
            "client_address": r.client_address, "client_port": r.client_port,
            "server_address": r.server_address, "server_port": r.server_port, "scheme": r.scheme,
            "host": r.host, "port": r.port, "method": r.method, "path": r.path, "query": r.query, "url": r.url,
            "http_version": r.http_version, "status": r.status,
            "request_headers": _json(r.request_headers), "response_headers": _json(r.response_headers),
            "request_content_type": req_ctype,
            "response_content_type": header(r.response_headers, "content-type"),
            "request_content_encoding": header(r.request_headers, "content-encoding"),
            "request_size_wire": r.request_body.size_wire, "request_sha256": _sha256(r.request_body),
            "response_size_wire": r.response_body.size_wire if r.response_body else None,
            "response_sha256": _sha256(r.response_body) if r.response_body else None,
            "error": r.error, "answered_by_teletap": int(r.sinkhole_rule is not None),
            "sinkhole_rule": r.sinkhole_rule, "tls_version": r.tls_version, "sni": r.sni, **sig,
            "source": r.source,
        }

    def defer(self, record: Record, session_id: int) -> FlowRows | None:
        """The flow stored as captured, bodies as sent; decoding and detection wait (ingest is behind).

        ``teletap.redecode`` completes it later through :meth:`process`, with the same result as now. None
        when a record cannot wait: not an HTTP flow, nothing to analyse, a body the store would cut short
        (analysis later must see what it would see now), or bodies to be redacted before they are stored.
        """
        if not isinstance(record, HttpFlowRecord) or self.config.blank_findings_in_bodies:
            return None
        req, resp = record.request_body, record.response_body
        if req.streamed or req.truncated or req.decoded or len(req.raw or b"") > self.config.max_request_body:
            return None
        resp_raw = resp.raw if resp is not None else None
        if resp is not None and (resp.streamed or resp.truncated
                                 or len(resp_raw or b"") > self.config.max_response_body):
            return None
        if not req.raw and not record.query and not resp_raw:
            return None  # analysing it now costs less than deferring it
        req_ctype = header(record.request_headers, "content-type")
        sig = self._signature_columns(record.host, record.path, record.method, record.port, req_ctype)
        flow = self._flow_columns(record, session_id, sig, req_ctype)
        flow.update({
            "request_body": req.raw or None, "request_body_truncated": 0,
            "response_body": resp_raw or None, "response_body_truncated": 0,
            "decode_notes": _json([DEFERRED_NOTE]), "analysis": ANALYSIS_DEFERRED,
        })
        return FlowRows(flow=flow)

    def _connection(self, r: ConnectionRecord, session_id: int) -> Row:
        sig = self._signature_columns(r.sni or r.server_address, port=r.server_port)
        return Row("connections", {
            "id": r.id, "session_id": session_id, "kind": r.kind, "started": iso(r.started),
            "ended": iso(r.ended),
            "duration_ms": round((r.ended - r.started) * 1000, 3) if r.ended else None,
            "client_address": r.client_address, "client_port": r.client_port,
            "server_address": r.server_address, "server_port": r.server_port, "sni": r.sni,
            "alpn": ",".join(r.alpn) or None, "tls_version": r.tls_version, "observable": int(r.observable),
            "reason": r.reason, "bytes_from_client": r.bytes_from_client,
            "bytes_from_server": r.bytes_from_server, **sig,
        })

    def _websocket(self, r: WebSocketMessageRecord, session_id: int) -> Row:
        limit = self.config.max_websocket_content
        return Row("websocket_messages", {
            "flow_id": r.flow_id, "session_id": session_id, "time": iso(r.time),
            "direction": "client-to-server" if r.from_client else "server-to-client", "is_text": int(r.is_text),
            "size": r.size, "content": r.content[:limit], "truncated": int(len(r.content) > limit),
        })

    def _dns(self, r: DnsRecord, session_id: int) -> Row:
        return Row("dns", {
            "id": r.id, "session_id": session_id, "time": iso(r.time), "client_address": r.client_address,
            "question": r.question, "question_type": r.question_type, "answers": _json(r.answers),
            "response_code": r.response_code, "error": r.error,
            **self._signature_columns(r.question, port=53),
        })


def stored_bytes(item: Item) -> int:
    """Roughly what an item holds in memory until it is written: its bodies and decoded events."""
    if isinstance(item, FlowRows):
        flow = item.flow
        size = len(flow.get("request_body") or b"") + len(flow.get("response_body") or b"")
        return size + sum(len(e.get("data") or "") for e in item.events)
    content = item.values.get("content")
    return len(content) if isinstance(content, bytes | str) else 0


def _sha256(body: Any) -> str | None:
    if body is None:
        return None
    if body.sha256:
        return body.sha256
    if body.raw is None or body.size_wire == 0:
        return None
    return hashlib.sha256(body.raw).hexdigest()


@dataclass(frozen=True)
class Failed:
    """A record ``Pipeline.process`` raised on, in a form that crosses back from a pool worker."""

    error_type: str
    detail: str  # first_error_line of the exception


def process_each(pipeline: Pipeline, records: list[Record], session_id: int) -> list[Item | Failed]:
    """Each record's rows, or why it could not be processed: one bad record never costs the others."""
    out: list[Item | Failed] = []
    for record in records:
        try:
            out.append(pipeline.process(record, session_id))
        except Exception as e:
            out.append(Failed(type(e).__name__, first_error_line(e)))
    return out


def build_pipeline(*, findings_key: bytes, signature_paths: Sequence[str] = (), identifiers: str | None = None,
                   store_clear: bool = False,
                   config: PipelineConfig | None = None,
                   progress: Callable[[str], None] | None = None) -> tuple[Pipeline, Any]:
    """Load signatures, the event catalogue and detectors as configured. Raises ValueError on bad input.

    Returns the pipeline and the loaded signature set (for its hash and the signatures table).
    """
    from .catalogue import EventCatalogue
    from .decoders import Limits
    from .findings import FindingsEngine, load_identifiers
    from .signatures import Matcher, SignatureSet

    if len(findings_key) < 16:
        # An empty or short key would let anyone holding the DB confirm guessed values from their hashes.
        raise ValueError("the findings key must be at least 16 bytes (see teletap.recorder.findings_key)")
    sigset = SignatureSet.load([Path(p) for p in signature_paths] or None)
    # Organisation host and domain names come from the identifiers file (kinds hostname, domain).
    engine = FindingsEngine(
        identifiers=load_identifiers(Path(identifiers)) if identifiers else (),
        key=findings_key, store_clear=store_clear,
    )
    pipeline = Pipeline(matcher=Matcher(sigset), catalogue=EventCatalogue.load(), findings=engine,
                        limits=Limits(), config=config or PipelineConfig())
    return pipeline, sigset
