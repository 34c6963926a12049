"""Offline import: HAR files and mitmproxy flow files through the live pipeline (decode → match → detect).

How a file is imported (per file, independently of the others given on the same command line):

1. **Check pass.** The whole file is read once, streaming (ijson for HAR, mitmproxy's tnetstring reader
   for flow files): every entry is parsed and turned into a record, and the file's SHA-256 is computed.
   Nothing is written. A malformed or truncated file stops here with its position (entry index, byte
   offset): the database is untouched.
2. **Import pass.** The file is read again; records go through ``Pipeline.process`` and are written in
   batches (one transaction each). Flow ids are derived from the file's SHA-256 and the entry index
   (HAR) or mitmproxy's flow id, so importing the same file again replaces its rows instead of adding
   them. If this pass is interrupted (Ctrl-C, disk full, the file changed), the flows written so far are
   complete (each flow is written with its events and findings in one transaction), the session records
   the reason, and running the same import again completes it: the import is resumable, not one
   transaction, so a multi-gigabyte file never holds the database's write lock for long (a proxy recording
   into the same database keeps writing between batches).

Memory is bounded by one entry (``max_entry_bytes``, default 256 MiB), not by the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .har import HarEntryError, entry_record, websocket_records
from .ingest import record_bytes
from .pipeline import Pipeline, stored_bytes
from .pool import make_pool, process_chunk
from .records import ConnectionRecord, Record, WebSocketMessageRecord
from .store import FlowRows, Item, Row, Store

log = logging.getLogger("teletap")

READ_CHUNK = 64 * 1024
DEFAULT_MAX_ENTRY_BYTES = 256 * 1024 * 1024
BATCH = 500
# Bodies held at once, whatever the entry count: a batch of 500 flows with 1 MiB bodies would be 500 MiB.
BATCH_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024
_HEAD_EVENTS = 200_000  # JSON events read to find log.creator / log.entries before streaming entries


class CaptureFileError(Exception):
    """A capture file cannot be imported; the message names the file and the position."""


class EntryTooLarge(Exception):
    pass


class InputStream:
    """A capture file read once, front to back: transparent gzip/zlib (``.har.gz``, mitmproxy's ``.zhar``),
    the SHA-256 of the bytes as stored, the offset of the bytes handed to the parser, and a cap on how many
    bytes one entry may span (so a hostile file cannot make the importer buffer gigabytes)."""

    def __init__(self, path: Path, max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES):
        self.path = path
        self._f: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.sha = hashlib.sha256()
        self.stored_offset = 0  # bytes read from the file
        self.offset = 0  # bytes handed out (after decompression)
        self.mark = 0  # where the current entry started
        self.max_entry_bytes = max_entry_bytes
        self._pending = b""
        self._eof = False
        self.tail = b""  # the last bytes handed out, to locate JSON syntax errors exactly
        self.tail_start = 0
        head = self._f.read(2)
        self._f.seek(0)
        self.compression = "gzip" if head == b"\x1f\x8b" else "zlib" if _is_zlib(head) else None
        self._inflate = zlib.decompressobj(wbits=47) if self.compression else None  # 47: gzip or zlib

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> InputStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _raw(self) -> bytes:
        data = self._f.read(READ_CHUNK)
        self.sha.update(data)
        self.stored_offset += len(data)
        return data

    def _fill(self, want: int) -> None:
        while len(self._pending) < want and not self._eof:
            if self._inflate is None:
                data = self._raw()
                if not data:
                    self._eof = True
                self._pending += data
                continue
            raw = self._inflate.unconsumed_tail or self._raw()
            if not raw:
                if not self._inflate.eof:
                    raise CaptureFileError(f"{self.path}: the {self.compression} stream ends early at byte "
                                           f"{self.stored_offset} of the file (truncated?)")
                self._eof = True
                break
            try:
                self._pending += self._inflate.decompress(raw, READ_CHUNK)
            except zlib.error as e:
                raise CaptureFileError(f"{self.path}: corrupt {self.compression} data near byte "
                                       f"{self.stored_offset} of the file ({e})") from e
            if self._inflate.eof and self._inflate.unused_data:  # concatenated gzip members
                rest = self._inflate.unused_data
                self._inflate = zlib.decompressobj(wbits=47)
                self._pending += self._inflate.decompress(rest, READ_CHUNK)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.max_entry_bytes + 1  # nothing here reads "all"; a cap keeps a bug from buffering gigabytes
        if self.offset + size - self.mark > self.max_entry_bytes:
            size = max(0, self.max_entry_bytes + 1 - (self.offset - self.mark))
            if size == 0:
                raise EntryTooLarge()
        self._fill(size)
        data, self._pending = self._pending[:size], self._pending[size:]
        self.offset += len(data)
        if len(data) > 1:  # keep ~2 chunks to find where a syntax error is
            keep = self.tail[-READ_CHUNK:] + data
            self.tail_start = self.offset - len(keep)
            self.tail = keep
        return data

    def at_eof(self) -> bool:
        self._fill(1)
        return self._eof and not self._pending

    def drain_hash(self) -> str:
        """Hash the rest of the file as stored (for files whose parser stops early) and return the SHA-256."""
        while self._raw():
            pass
        return self.sha.hexdigest()


def _is_zlib(head: bytes) -> bool:
    return len(head) == 2 and head[0] == 0x78 and ((head[0] << 8) | head[1]) % 31 == 0


def detect_format(path: Path) -> str:
    """'har' or 'mitmproxy' from the first bytes (after decompression), whatever the file is called."""
    with InputStream(path) as stream:
        head = stream.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        return "har"
    if re.match(rb"\d{1,12}:", head):
        return "mitmproxy"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CaptureFileError(f"{path}: UTF-16 text; save the HAR as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    if not head:
        raise CaptureFileError(f"{path}: the file is empty")
    raise CaptureFileError(f"{path}: neither a HAR (JSON) file nor a mitmproxy flow file (it starts with "
                           f"{head[:16]!r})")


# -- HAR -------------------------------------------------------------------------------------------------

class _BomSkipper:
    """ijson's reader over an InputStream without a leading UTF-8 byte-order mark (Fiddler writes one)."""

    def __init__(self, stream: InputStream):
        self.stream = stream
        self.first = True

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        if self.first and data:  # ijson may probe with read(0) first
            self.first = False
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
        return data


def _json_error(path: Path, stream: InputStream, e: Exception, where: str) -> CaptureFileError:
    text = e.args[0] if e.args else str(e)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = str(text).splitlines()
    reason = lines[0].strip() if lines else "invalid JSON"
    if "premature EOF" in reason:
        return CaptureFileError(f"{path}: the JSON ends early at byte {stream.offset} ({where}): the file is "
                                "truncated or was still being written")
    position = f"near byte {stream.offset}"
    if len(lines) >= 3 and "^" in lines[2]:
        context, caret = lines[1], lines[2].index("^")
        snippet = context.lstrip()
        pad = len(context) - len(snippet)
        haystack = stream.tail.replace(b"\n", b" ").replace(b"\t", b" ").replace(b"\r", b" ")
        needle = snippet.encode("utf-8", "surrogateescape")
        found = haystack.find(needle)
        if needle and found >= 0 and haystack.find(needle, found + 1) < 0:
            # yajl points just past the token it rejected: report that token's last byte
            position = f"at byte {stream.tail_start + found + caret - pad - 1}"
    return CaptureFileError(f"{path}: invalid JSON {position} ({where}): {reason}")


def _har_head(path: Path, max_entry_bytes: int) -> tuple[dict | None, bool | None]:
    """Read the start of a HAR up to ``log.entries``: (log.creator, whether log.entries was found).

    The second value is None when the head was too long to tell (entries after a huge ``pages``)."""
    import ijson

    creator: dict | None = None
    with InputStream(path, max_entry_bytes) as stream:
        try:
            events = ijson.parse(_BomSkipper(stream), use_float=True)
            first = next(events, None)
            if first is None or first[1] != "start_map":
                raise CaptureFileError(f"{path}: not a HAR file: the JSON document is not an object")
            builder: Any = None
            for count, (prefix, event, value) in enumerate(events):
                if prefix == "log.entries" and event == "start_array":
                    return creator, True
                if prefix == "log.creator" and event == "start_map":
                    builder = ijson.ObjectBuilder()
                if builder is not None:
                    builder.event(event, value)
                    if prefix == "log.creator" and event == "end_map":
                        creator = builder.value if isinstance(builder.value, dict) else None
                        builder = None
                if count > _HEAD_EVENTS:
                    return creator, None
        except ijson.JSONError as e:
            raise _json_error(path, stream, e, "before the first entry") from e
        except EntryTooLarge as e:
            raise CaptureFileError(f"{path}: more than {max_entry_bytes} bytes before the first entry") from e
    return creator, False


@dataclass
class FileInfo:
    path: Path
    format: str
    size: int = 0
    sha256: str = ""
    entries: int = 0
    creator: dict | None = None
    compression: str | None = None
    position: int = 0  # bytes of the file read so far (for progress)


def _har_records(path: Path, info: FileInfo, max_entry_bytes: int, flow_id: Callable[[int], str],
                 ) -> Iterator[tuple[int, list[Record]]]:
    import ijson

    creator = info.creator or {}
    from_mitmproxy = str(creator.get("name", "")).lower() == "mitmproxy"
    index = -1
    with InputStream(path, max_entry_bytes) as stream:
        info.compression = stream.compression
        try:
            for index, entry in enumerate(ijson.items(_BomSkipper(stream), "log.entries.item", use_float=True)):
                try:
                    record = entry_record(entry, flow_id=flow_id(index), source=f"{path.name}#{index}",
                                          mitmproxy_creator=from_mitmproxy)
                    messages = websocket_records(entry, record.id)
                    for r in (record, *messages):
                        validate(r)
                except (HarEntryError, ValueError) as e:
                    raise CaptureFileError(f"{path}: entry {index} (ending at byte {stream.offset}): {e}") from e
                stream.mark = stream.offset
                info.position = stream.stored_offset
                yield index, [record, *messages]
        except ijson.JSONError as e:
            raise _json_error(path, stream, e, f"after entry {index}" if index >= 0 else "before any entry") from e
        except EntryTooLarge as e:
            raise CaptureFileError(f"{path}: entry {index + 1} (from byte {stream.mark}) is larger than "
                                   f"{max_entry_bytes} bytes; raise --max-entry-size to import it") from e
        except RecursionError as e:
            raise CaptureFileError(f"{path}: entry {index + 1} is nested too deeply") from e
        info.sha256 = stream.drain_hash()
        info.size = stream.stored_offset


# -- mitmproxy flow files --------------------------------------------------------------------------------

def _flow_records(path: Path, info: FileInfo, max_entry_bytes: int, flow_id: Callable[[str], str],
                  ) -> Iterator[tuple[int, list[Record]]]:
    from mitmproxy import dns, flow, http, tcp, udp
    from mitmproxy.io import compat, tnetstring

    from .capture import Capture

    with InputStream(path, max_entry_bytes) as stream:
        info.compression = stream.compression
        index = 0
        while True:
            stream.mark = start = stream.offset
            if stream.at_eof():
                break
            try:
                state = tnetstring.load(stream)  # type: ignore[arg-type]
            except EntryTooLarge as e:
                raise CaptureFileError(f"{path}: flow {index} (from byte {start}) is larger than {max_entry_bytes} "
                                       "bytes; raise --max-entry-size to import it") from e
            except (ValueError, TypeError, IndexError) as e:
                if stream.at_eof():
                    raise CaptureFileError(f"{path}: flow {index} starting at byte {start} is incomplete: the file "
                                           f"ends at byte {stream.offset} (truncated?)") from e
                raise CaptureFileError(f"{path}: flow {index} at byte {start} is not a mitmproxy flow ({e})") from e
            except RecursionError as e:
                raise CaptureFileError(f"{path}: flow {index} at byte {start} is nested too deeply") from e
            try:
                f = flow.Flow.from_state(compat.migrate_flow(state))  # type: ignore[arg-type]
                records = _records_of(f, flow_id(f.id), f"{path.name}#{index}", Capture, http, tcp, udp, dns)
                for r in records:
                    validate(r)
            except Exception as e:  # from_state on hostile input raises anything (KeyError, TypeError, …)
                raise CaptureFileError(f"{path}: flow {index} at byte {start} cannot be read: "
                                       f"{type(e).__name__}: {str(e)[:200]}") from e
            info.position = stream.stored_offset
            yield index, records
            index += 1
        info.sha256 = stream.drain_hash()
        info.size = stream.stored_offset


def _records_of(f: Any, new_id: str, source: str, capture: Any, http: Any, tcp: Any, udp: Any, dns: Any,
                ) -> list[Record]:
    """Records for one flow from a file, built by the same code as live capture."""
    if isinstance(f, http.HTTPFlow):
        record = capture.http_record(f)
        record.id, record.source = new_id, source
        out: list[Record] = [record]
        if f.websocket is not None:
            out += [WebSocketMessageRecord(flow_id=new_id, time=m.timestamp, from_client=m.from_client,
                                           is_text=m.is_text, size=len(m.content), content=m.content)
                    for m in f.websocket.messages]
        return out
    if isinstance(f, (tcp.TCPFlow, udp.UDPFlow)):
        transport = "tcp" if isinstance(f, tcp.TCPFlow) else "udp"
        first = next((m.content[:16384] for m in f.messages if m.from_client), b"")
        f.metadata.update(teletap_first_bytes=first,
                          teletap_bytes_client=sum(len(m.content) for m in f.messages if m.from_client),
                          teletap_bytes_server=sum(len(m.content) for m in f.messages if not m.from_client))
        conn: ConnectionRecord = capture._stream_record(f, transport)
        conn.id = new_id
        conn.ended = f.messages[-1].timestamp if f.messages else (f.client_conn.timestamp_end or conn.started)
        return [conn]
    if isinstance(f, dns.DNSFlow):
        record = capture._dns_record(f)
        record.id = new_id
        return [record]
    return []


# -- records that the store can hold ------------------------------------------------------------------------

_MAX_TS = 253402300799.0  # 9999-12-31: what store.iso() (time.gmtime) can render
_MAX_INT = 2**62  # SQLite INTEGER is 64-bit signed


def validate(record: Record) -> None:
    """Reject values that would fail only when written (an infinite time, a 100-digit size), so that the
    check pass catches them and the import pass cannot stop half-way on them. Raises ValueError."""
    for name in ("request_time", "response_time", "started", "ended", "time"):
        value = getattr(record, name, None)
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)
                                  or not -_MAX_TS < value < _MAX_TS):
            raise ValueError(f"{name} {value!r} is not a usable time")
    for name in ("client_port", "server_port", "port", "status", "size", "bytes_from_client", "bytes_from_server"):
        value = getattr(record, name, None)
        if value is not None and (not isinstance(value, int) or not -_MAX_INT < value < _MAX_INT):
            raise ValueError(f"{name} {value!r} is out of range")
    for body_name in ("request_body", "response_body"):
        body = getattr(record, body_name, None)
        if body is not None and not 0 <= body.size_wire < _MAX_INT:
            raise ValueError(f"{body_name} size {body.size_wire!r} is out of range")


# -- the import ------------------------------------------------------------------------------------------

def stable_id(file_sha256: str, key: str) -> str:
    """Flow id of an imported entry: the same file imported again gives the same ids (no duplicates)."""
    return "import-" + hashlib.sha256(f"{file_sha256}\0{key}".encode()).hexdigest()[:32]


def records(info: FileInfo, max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES) -> Iterator[tuple[int, list[Record]]]:
    """The records of a file. ``info.sha256`` must be known (from ``check``) for the ids to be stable."""
    sha = info.sha256  # the file's identity from the check pass (info.sha256 is recomputed while reading)
    if info.format == "har":
        return _har_records(info.path, info, max_entry_bytes, lambda i: stable_id(sha, str(i)))
    return _flow_records(info.path, info, max_entry_bytes, lambda fid: stable_id(sha, fid))


def check(path: Path, fmt: str | None = None, *, max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
          progress: Callable[[int], None] | None = None) -> FileInfo:
    """Pass 1: read and convert every entry without writing; the file's hash, size and entry count."""
    try:
        fmt = fmt or detect_format(path)
        info = FileInfo(path=path, format=fmt)
        found: bool | None = None
        if fmt == "har":
            info.creator, found = _har_head(path, max_entry_bytes)
        scratch = FileInfo(path=path, format=fmt, creator=info.creator)
        done = reported = 0
        for _ in records(scratch, max_entry_bytes):
            done += 1
            if progress and scratch.position - reported >= 1 << 20:
                progress(scratch.position - reported)
                reported = scratch.position
        if progress:
            progress(scratch.size - reported)
        if fmt == "har" and done == 0 and found is False:
            raise CaptureFileError(f"{path}: not a HAR file: there is no log.entries array")
    except OSError as e:
        raise CaptureFileError(f"{path}: {e.strerror or e}") from e
    except MemoryError as e:
        raise CaptureFileError(f"{path}: an entry does not fit in memory; lower --max-entry-size") from e
    info.entries, info.sha256, info.size, info.compression = done, scratch.sha256, scratch.size, scratch.compression
    return info


@dataclass
class FileResult:
    info: FileInfo
    flows: int = 0
    other: int = 0  # connections, DNS, WebSocket messages
    events: int = 0
    findings: int = 0
    error: str | None = None


@dataclass
class ImportResult:
    session_id: int | None = None
    files: list[FileResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.error]


def _find_session(store: Store, label: str, shas: list[str]) -> int | None:
    """An earlier import of the same files under the same label: re-importing reuses its session."""
    for row in store.conn.execute("SELECT id, options FROM sessions WHERE kind = 'import' AND label IS ? "
                                  "ORDER BY id DESC", (label,)):
        try:
            if sorted(json.loads(row["options"] or "{}").get("file_sha256", [])) == sorted(shas):
                return int(row["id"])
        except (ValueError, AttributeError):
            continue
    return None


def _write(store: Store, pending: dict[str, list[Item]]) -> None:
    """One batch, one transaction. WebSocket message rows have no stable id: replace a flow's earlier ones."""
    ws_flows = [fid for fid, items in pending.items()
                if any(isinstance(i, Row) and i.table == "websocket_messages" for i in items)]
    if ws_flows:
        # Own statement before the batch: if the batch then fails, re-running the import restores them.
        marks = ",".join("?" for _ in ws_flows)
        store.conn.execute(f"DELETE FROM websocket_messages WHERE flow_id IN ({marks})", ws_flows)
    store.write([item for items in pending.values() for item in items])


def import_files(db_path: Path, paths: Sequence[Path], pipeline: Pipeline, *, label: str | None = None,
                 signature_set: Any = None, fmt: str | None = None,
                 max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES, session_options: dict[str, Any] | None = None,
                 on_checking: Callable[[FileInfo | Path, int], Callable[[int], None] | None] | None = None,
                 on_importing: Callable[[FileInfo], Callable[[int], None] | None] | None = None,
                 batch: int = BATCH, jobs: int = 1) -> ImportResult:
    """Check every file, then import the good ones into one session. Bad files are reported in the result
    (and in the session's unrecorded reasons), never half-written."""
    from mitmproxy import version as mitmproxy_version

    result = ImportResult()
    infos: list[FileInfo] = []
    for path in paths:
        try:
            size = path.stat().st_size
            infos.append(check(path, fmt, max_entry_bytes=max_entry_bytes,
                               progress=on_checking(path, size) if on_checking else None))
        except OSError as e:
            result.files.append(FileResult(FileInfo(path, fmt or "?"), error=f"{path}: {e.strerror or e}"))
        except CaptureFileError as e:
            result.files.append(FileResult(FileInfo(path, fmt or "?"), error=str(e)))
    if not infos:
        return result  # nothing passed the check: no session, nothing written
    pool = make_pool(pipeline, jobs)
    try:
        store = Store(db_path)
    except BaseException:
        if pool is not None:
            pool.shutdown()
        raise
    try:
        if signature_set is not None:
            from .signatures import signature_rows

            store.replace_signatures(signature_rows(signature_set))
        label = label or "import: " + ", ".join(p.name for p in paths)[:200]
        shas = [i.sha256 for i in infos]
        options = {**(session_options or {}), "file_sha256": shas,
                   "files": [{"path": str(i.path.resolve()), "format": i.format, "size": i.size, "sha256": i.sha256,
                              "entries": i.entries, "compression": i.compression, "creator": i.creator}
                             for i in infos]}
        session_id = _find_session(store, label, shas)
        if session_id is None:
            session_id = store.start_session(label=label, kind="import", options=options,
                                             signature_set_hash=getattr(signature_set, "hash", None),
                                             mitmproxy_version=mitmproxy_version.VERSION)
        result.session_id = session_id
        recorded, reasons = 0, {f"{f.info.path.name}: not imported: {f.error}"[:500]: 1 for f in result.files}
        for info in infos:
            file_result = FileResult(info)
            result.files.append(file_result)
            progress = on_importing(info) if on_importing else None
            try:
                recorded += _import_one(store, info, pipeline, session_id, max_entry_bytes, file_result, progress,
                                        batch, pool, jobs)
            except Exception as e:  # reported in the result and the session, never a traceback
                file_result.error = (str(e) if isinstance(e, CaptureFileError)
                                     else f"{info.path}: import interrupted: {type(e).__name__}: {e}")
                reasons[f"{info.path.name}: import incomplete, run it again: {file_result.error}"[:500]] = max(
                    1, info.entries - file_result.flows - file_result.other)
            except KeyboardInterrupt:
                reasons[f"{info.path.name}: import interrupted, run it again"] = max(
                    1, info.entries - file_result.flows - file_result.other)
                store.update_session(session_id, recorded=recorded, unrecorded=sum(reasons.values()),
                                     reasons=reasons, ended=True)
                raise
        store.update_session(session_id, recorded=recorded, unrecorded=sum(reasons.values()), reasons=reasons,
                             ended=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        store.close()
    return result


# -- the pipeline on several cores (teletap.pool) ------------------------------------------------------


def _key(recs: list[Record]) -> str:
    first = recs[0]
    return first.flow_id if isinstance(first, WebSocketMessageRecord) else first.id  # type: ignore[union-attr]


def _processed(source: Iterator[tuple[int, list[Record]]], pipeline: Pipeline, session_id: int, pool: Any,
               jobs: int, chunk_size: int = 32) -> Iterator[tuple[str, list[Item]]]:
    """(flow key, rows) per entry, in file order. With a pool, a bounded number of chunks is in flight, so
    memory stays bounded by entries, not by the file."""
    if pool is None:
        for _, recs in source:
            yield _key(recs), [pipeline.process(r, session_id) for r in recs]
        return
    inflight: deque[tuple[list[str], Any]] = deque()
    chunk: list[list[Record]] = []

    def submit() -> None:
        inflight.append(([_key(r) for r in chunk], pool.submit(process_chunk, list(chunk), session_id)))
        chunk.clear()

    chunk_bytes = 0
    for _, recs in source:
        chunk.append(recs)
        chunk_bytes += sum(record_bytes(r) for r in recs)
        if len(chunk) >= chunk_size or chunk_bytes >= CHUNK_BYTES:
            submit()
            chunk_bytes = 0
            while len(inflight) > 2 * jobs:
                keys, future = inflight.popleft()
                yield from zip(keys, future.result(), strict=True)
    if chunk:
        submit()
    while inflight:
        keys, future = inflight.popleft()
        yield from zip(keys, future.result(), strict=True)


def _import_one(store: Store, info: FileInfo, pipeline: Pipeline, session_id: int, max_entry_bytes: int,
                out: FileResult, progress: Callable[[int], None] | None, batch: int, pool: Any = None,
                jobs: int = 1) -> int:
    expected = info.sha256
    pending: dict[str, list[Item]] = {}
    size = held = 0
    written = 0

    def flush() -> None:
        nonlocal pending, size, written, held
        if pending:
            _write(store, pending)
            for items in pending.values():
                for item in items:
                    if isinstance(item, FlowRows):
                        out.flows += 1
                        out.events += len(item.events)
                        out.findings += len(item.findings)
                    else:
                        out.other += 1
            written += size
            if progress:
                progress(len(pending))
        pending, size, held = {}, 0, 0

    started = time.monotonic()
    for key, items in _processed(records(info, max_entry_bytes), pipeline, session_id, pool, jobs):
        pending.pop(key, None)  # a flow file may hold the same flow twice (response, then error): keep the last
        pending[key] = items
        size += len(items)
        held += sum(stored_bytes(i) for i in items)
        if size >= batch or held >= BATCH_BYTES:
            flush()
    flush()
    if info.sha256 != expected:
        raise CaptureFileError(f"{info.path}: the file changed while it was being imported (SHA-256 was "
                               f"{expected}, is now {info.sha256}); import it again once it is complete")
    log.debug("teletap: imported %s in %.1fs", info.path, time.monotonic() - started)
    return written
