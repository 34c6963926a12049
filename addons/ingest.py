"""Ingest: the pipeline's records in, batched writes to the store out, off the proxy's event loop.

``Ingest`` runs ``teletap.pipeline.Pipeline`` on a worker thread behind a bounded queue, so the proxy's event
loop never waits for decoding or disk; ``ProcessIngest`` puts that thread in a process of its own.

Overflow policy: once the queue is a quarter full, flows are stored first and analysed when ingest catches
up; when the queue is full, the item is not queued (traffic is never slowed down), it is counted as
unrecorded with the reason "ingest queue full", logged, stored in the session row and reported at shutdown.
Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bodyring import BodyRing
from .pipeline import Failed, Pipeline, build_pipeline, first_error_line, process_each, stored_bytes
from .pool import make_pool, process_batch
from .records import CaptureFailure, HttpFlowRecord, Record, WebSocketMessageRecord
from .redecode import reanalyse, records_from_rows
from .schema import ANALYSIS_DEFERRED
from .store import FlowRows, Item, Store, explain_write_error

log = logging.getLogger("teletap")


class _Stop:
    """Ends the worker loop; a class rather than object() so it survives the trip to a worker process."""


class _Counter:
    """Same shape as multiprocessing.Value: the proxy thread increments, the worker reads."""

    def __init__(self) -> None:
        self.value = 0


@dataclass
class IngestStats:
    recorded: int = 0
    unrecorded: Counter[str] = field(default_factory=Counter)
    deferred: int = 0  # flows stored before analysis because ingest was behind (Pipeline.defer)
    analysed_later: int = 0  # deferred flows (of sessions analysed alike) analysed since, while ingest was idle
    awaiting_analysis: int = 0  # deferred flows in the whole database still waiting, when ingest stopped

    @property
    def unrecorded_total(self) -> int:
        return sum(self.unrecorded.values())


def record_bytes(record: Record) -> int:
    """Roughly the memory a queued record holds: its bodies (the rest is small)."""
    if isinstance(record, HttpFlowRecord):
        size = len(record.request_body.raw or b"")
        if record.response_body is not None:
            size += len(record.response_body.raw or b"")
        return size + 512
    if isinstance(record, WebSocketMessageRecord):
        return len(record.content) + 256
    return 256


class _QueueFront:
    """What the proxy side of both ingest kinds does: put records in a bounded queue, never block."""

    queue: Any
    _dropped: Any
    _last_drop_log: float = 0.0

    def submit(self, record: Record) -> None:
        """Queue a record; never blocks. A full queue is counted, logged and reported, never silent."""
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._count_drop(1)

    def _count_drop(self, items: int) -> None:
        """Count items the full queue could not take, and say so (at most every 10 s)."""
        self._dropped.value += items
        now = time.monotonic()
        if now - self._last_drop_log > 10:
            self._last_drop_log = now
            log.warning("teletap: ingest queue full: %d item(s) not recorded so far; traffic is unaffected",
                        self._dropped.value)


class Ingest(_QueueFront):
    """A worker thread that owns the store: queue → pipeline → batched transactions.

    Commits at least every ``flush_interval`` seconds and at ``stop()``. Write errors (disk full, DB
    locked or read-only) never reach the proxy: the batch is counted as unrecorded and logged.

    Evidence first: once the queue is ``DEFER_AT`` full, flows are stored as captured and their analysis
    (decoding, detection) deferred, as storing costs a fraction of analysing. When the queue is empty, ingest
    analyses deferred flows, a few per transaction, oldest first: this session's, and those of earlier
    sessions recorded with the same signatures and analysis options, so a database left with some (a kill,
    a stop under load) is completed by the next such run.
    """

    DEFER_AT = 0.25
    # Deferred flows analysed per transaction: 20 (about 50 ms) right after traffic, so new records never
    # wait long behind the catch-up; doubled while ingest stays idle, so a long catch-up commits rarely.
    CATCH_UP_FLOWS = 20
    CATCH_UP_MAX = 320

    def __init__(self, db_path: str | Path, pipeline: Pipeline, *, session_label: str | None,
                 session_kind: str = "live", session_options: dict[str, Any] | None = None,
                 signature_set_hash: str | None = None, signature_rows: Iterable[dict] | None = None,
                 mitmproxy_version: str | None = None, queue_size: int = 10_000,
                 flush_interval: float = 0.5, batch_size: int = 500, batch_bytes: int = 16 * 1024 * 1024,
                 store_factory: Callable[[Path], Store] = Store, queue_obj: Any = None, dropped: Any = None,
                 parent_alive: Callable[[], bool] | None = None,
                 pool: Any = None, pool_workers: int = 1, defer_analysis: bool = True,
                 backlog: Callable[[], float] | None = None, analysis_options: Sequence[str] = ()):
        self.db_path = Path(db_path)
        self.pipeline = pipeline
        self.defer_analysis = defer_analysis
        # The share of the queue in use (0..1); ProcessIngest's receiver knows it for the proxy's queue.
        self._backlog = backlog or self._queue_fill
        self._catch_up_due = True  # the database may hold deferred flows from an earlier run
        # Session options that decide how a flow is analysed: an earlier session's deferred flows are analysed
        # here only if it was recorded with the same values (and signature set), so its session row stays true.
        self._analysis_options = tuple(analysis_options)
        self._catch_up_sessions: tuple[int, ...] = ()
        self._caught_up_to = 0  # rowid: flows that fail analysis are passed over until the next run
        self._catch_up_flows = self.CATCH_UP_FLOWS
        self._last_defer_log = 0.0
        # With a pool (teletap.pool), records are processed there, a few batches at a time, and their rows
        # collected here in the order the batches arrived, so a flow's later version is written last.
        self._pool = pool
        # (records, future, analysed later: a catch-up batch), oldest first
        self._processing: deque[tuple[int, Any, bool]] = deque()
        self._max_processing = 2 * max(1, pool_workers)
        self._pending: list[Item] = []
        self._pending_bytes = 0
        self._last_flush = 0.0
        # In a worker process the queue and the drop counter are shared with the proxy process.
        self.queue: Any = queue_obj if queue_obj is not None else queue.Queue(maxsize=queue_size)
        self._dropped = dropped if dropped is not None else _Counter()
        self._dropped_counted = 0
        self._parent_alive = parent_alive
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self._store_factory = store_factory
        self.stats = IngestStats()
        self.session_id: int | None = None
        self._session_args = dict(label=session_label, kind=session_kind, options=session_options or {},
                                  signature_set_hash=signature_set_hash, mitmproxy_version=mitmproxy_version)
        self._signature_rows = list(signature_rows) if signature_rows is not None else None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._error_log_times: dict[str, float] = {}

    # -- called from the proxy's thread ---------------------------------------------------------------
    def start(self) -> int:
        self._thread = threading.Thread(target=self._run, name="teletap-ingest", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error
        assert self.session_id is not None
        return self.session_id

    def stop(self, timeout: float = 60) -> IngestStats:
        """Drain the queue, flush, close the session. Returns the final counts."""
        if self._thread is None:
            return self.stats
        self.queue.put(_Stop())
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("teletap: ingest did not finish within %ss; %d item(s) still queued",
                      timeout, self.queue.qsize())
        self._thread = None
        return self.stats

    # -- the worker thread --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            store = self._store_factory(self.db_path)
            if self._signature_rows is not None:
                store.replace_signatures(self._signature_rows)
            self.session_id = store.start_session(**self._session_args)
            self._catch_up_sessions = self._same_analysis_sessions(store)
        except BaseException as e:
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(store)
        finally:
            self._count_dropped()
            with contextlib.suppress(Exception):  # a broken database is reported by the session update below
                self.stats.awaiting_analysis = store.conn.execute(
                    "SELECT count(*) FROM flows WHERE analysis = ?", (ANALYSIS_DEFERRED,)).fetchone()[0]
            try:
                store.update_session(self.session_id, recorded=self.stats.recorded,
                                     unrecorded=self.stats.unrecorded_total,
                                     reasons=dict(self.stats.unrecorded), ended=True)
            except Exception as e:
                log.error("teletap: could not close session %s in %s (%s); its final counts are only "
                          "in the shutdown report", self.session_id, self.db_path,
                          explain_write_error(self.db_path, e))
            store.close()

    def _same_analysis_sessions(self, store: Store) -> tuple[int, ...]:
        """This session and earlier ones recorded with the same signature set and analysis options."""
        def analysis(options: Any) -> Any:
            return json.loads(json.dumps({k: options.get(k) for k in self._analysis_options}, default=str))

        mine = analysis(self._session_args["options"])
        same = []
        for session_id, options, signature_set_hash in store.conn.execute(
                "SELECT id, options, signature_set_hash FROM sessions"):
            try:
                theirs = json.loads(options or "{}")
            except ValueError:
                continue
            if (signature_set_hash == self._session_args["signature_set_hash"] and isinstance(theirs, dict)
                    and analysis(theirs) == mine):
                same.append(session_id)
        return tuple(same)

    def _queue_fill(self) -> float:
        maxsize = getattr(self.queue, "maxsize", 0)
        return self.queue.qsize() / maxsize if maxsize > 0 else 0.0

    def _count_dropped(self) -> None:
        total = self._dropped.value  # only the proxy side writes it; the worker counts what is new
        if total > self._dropped_counted:
            self.stats.unrecorded["ingest queue full"] += total - self._dropped_counted
            self._dropped_counted = total

    def _loop(self, store: Store) -> None:
        assert self.session_id is not None
        self._last_flush = time.monotonic()
        stopping = False
        while not stopping:
            catch_up = self._catch_up_due and not self._processing
            timeout = 0.0 if catch_up else max(0.0, self.flush_interval - (time.monotonic() - self._last_flush))
            if self._processing:
                timeout = min(timeout, 0.005)  # rows are on their way back from the pool: look again soon
            try:
                record = self.queue.get(timeout=timeout)
            except queue.Empty:
                record = None
                if self._parent_alive is not None and not self._parent_alive():
                    # The proxy died (kill -9, crash): record what already reached us, then close.
                    log.error("teletap: the proxy process is gone; writing what was queued and stopping")
                    record = _Stop()
            if isinstance(record, _Stop):
                stopping = True
            elif record is not None:
                records = []
                for one in record if isinstance(record, list) else (record,):  # ProcessIngest sends batches
                    if isinstance(one, CaptureFailure):
                        self.stats.unrecorded[f"capture failed in {one.hook}: {one.error}"] += 1
                    else:
                        records.append(one)
                if records:
                    self._process(records)
            self._collect(store, wait_all=stopping)
            # Bounded by count and by stored bytes: 500 flows with 1 MiB bodies would otherwise sit in memory.
            if self._pending and (stopping or len(self._pending) >= self.batch_size
                                  or self._pending_bytes >= self.batch_bytes
                                  or time.monotonic() - self._last_flush >= self.flush_interval):
                self._flush_pending(store)
            elif time.monotonic() - self._last_flush >= self.flush_interval:
                self._last_flush = time.monotonic()
                self._count_dropped()
            if record is None and catch_up and not stopping:
                self._catch_up(store)
            elif record is not None:
                self._catch_up_flows = self.CATCH_UP_FLOWS  # traffic: keep its wait behind a catch-up short

    def _process(self, records: list[Record]) -> None:
        if self.defer_analysis and self._backlog() >= self.DEFER_AT:
            self._store_first(records)
            return
        if self._pool is not None:
            try:
                self._processing.append((len(records), self._pool.submit(process_batch, records, self.session_id),
                                         False))
                return
            except Exception as e:  # the pool is broken (a worker was killed): carry on without it
                self._pool_failed(e)
        self._add(process_each(self.pipeline, records, self.session_id))

    def _store_first(self, records: list[Record]) -> None:
        """Ingest is behind: store what can wait unanalysed, analyse the rest (cheap kinds) here, in order."""
        assert self.session_id is not None
        outcomes: list[Item | Failed] = []
        deferred = 0
        for record in records:
            try:
                item = self.pipeline.defer(record, self.session_id)
            except Exception as e:  # a bug: analyse the record now instead
                log.error("teletap: could not defer the analysis of a flow: %s", first_error_line(e))
                item = None
            if item is None:
                outcomes += process_each(self.pipeline, [record], self.session_id)
            else:
                outcomes.append(item)
                deferred += 1
        if deferred:
            self.stats.deferred += deferred
            self._catch_up_due = True
            now = time.monotonic()
            if now - self._last_defer_log > 10:
                self._last_defer_log = now
                log.warning("teletap: ingest is behind: flows are stored first and analysed when it catches up "
                            "(%d so far)", self.stats.deferred)
        if self._processing:
            # Behind batches still in the pool: written after them, so a flow's later version still wins.
            done: Future[list[Item | Failed]] = Future()
            done.set_result(outcomes)
            self._processing.append((len(records), done, False))
        else:
            self._add(outcomes)

    def _catch_up(self, store: Store) -> None:
        """Analyse a few deferred flows (oldest first, of sessions analysed alike); only when nothing waits.

        With a worker pool they are analysed there, a pool's worth of batches at a time, and written when
        collected, before anything that arrived after them; without, here and now, before what is pending.
        Either way a newer version of a flow is written after, and wins.
        """
        # With a pool: as many batches as the pool takes at once (more would make _collect wait for them).
        limit = self.CATCH_UP_FLOWS * self._max_processing if self._pool is not None else self._catch_up_flows
        if self._pool is not None and self._pending:
            # Their results are written after what is pending now: so that must be in the database (and read
            # below) first, or an older version of a flow could overwrite a newer one.
            self._flush_pending(store)
        try:
            sessions = ",".join(map(str, self._catch_up_sessions)) or "NULL"
            rows = store.conn.execute(
                f"SELECT rowid AS teletap_rowid, * FROM flows WHERE analysis = ? AND session_id IN ({sessions}) "
                "AND rowid > ? ORDER BY rowid LIMIT ?", (ANALYSIS_DEFERRED, self._caught_up_to, limit)).fetchall()
        except Exception as e:
            self._catch_up_failed(e)
            return
        if not rows:
            if any(isinstance(i, FlowRows) and i.flow.get("analysis") for i in self._pending):
                self._flush_pending(store)  # the flows to catch up on are still to be written
            else:
                self._catch_up_due = False
            return
        self._caught_up_to = rows[-1]["teletap_rowid"]
        if self._pool is not None and self._catch_up_in_pool(rows):
            return
        self._write_later(store, reanalyse(self.pipeline, rows))
        self._catch_up_flows = min(2 * self._catch_up_flows, self.CATCH_UP_MAX)

    def _catch_up_in_pool(self, rows: list[Any]) -> bool:
        """Hand deferred rows to the pool, one batch per session and CATCH_UP_FLOWS; False if it is broken."""
        batches: list[tuple[int, list[Record]]] = []
        for session_id, records in records_from_rows(rows):
            for start in range(0, len(records), self.CATCH_UP_FLOWS):
                batches.append((session_id, records[start:start + self.CATCH_UP_FLOWS]))
        try:
            for session_id, records in batches:
                future = self._pool.submit(process_batch, records, session_id)  # type: ignore[union-attr]
                self._processing.append((len(records), future, True))
        except Exception as e:
            self._pool_failed(e)
            return False  # analysed here instead; any batch already out is written twice, alike
        return True

    def _write_later(self, store: Store, outcomes: list[Item | Failed]) -> None:
        """Write deferred flows now analysed, in a transaction of their own: they are not new items."""
        items = [o for o in outcomes if not isinstance(o, Failed)]
        for failed in (o for o in outcomes if isinstance(o, Failed)):
            log.error("teletap: a deferred flow could not be analysed and stays stored as it is: %s: %s",
                      failed.error_type, failed.detail)
        try:
            store.write(items)
            self.stats.analysed_later += len(items)
        except Exception as e:
            self._catch_up_failed(e)

    def _catch_up_failed(self, e: BaseException) -> None:
        # The flows stay stored, marked deferred: the next run or `teletap redecode --deferred` analyses them.
        self._catch_up_due = False
        log.error("teletap: analysing deferred flows in %s failed (%s); they stay stored unanalysed until "
                  "the next run or `teletap redecode --deferred`", self.db_path, explain_write_error(self.db_path, e))

    def _collect(self, store: Store, wait_all: bool) -> None:
        """Take processed batches back in order: finished ones, and the oldest while too many are out."""
        while self._processing:
            count, future, analysed_later = self._processing[0]
            if not (wait_all or future.done() or len(self._processing) > self._max_processing):
                return
            self._processing.popleft()
            try:
                outcomes = future.result()
            except Exception as e:
                if not analysed_later:  # a catch-up batch's flows are still stored, deferred
                    self._count_error(f"ingest error: {type(e).__name__}", first_error_line(e), count)
                self._pool_failed(e)
                continue
            if analysed_later:
                if self._pending:
                    self._flush_pending(store)  # what came before it, first
                self._write_later(store, outcomes)
            else:
                self._add(outcomes)

    def _pool_failed(self, e: BaseException) -> None:
        if self._pool is not None:
            log.error("teletap: the ingest worker pool failed (%s); processing in the ingest process from now on",
                      first_error_line(e))
            self._pool = None

    def _add(self, outcomes: list[Item | Failed]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Failed):
                self._count_error(f"ingest error: {outcome.error_type}", outcome.detail)
            else:
                self._pending.append(outcome)
                self._pending_bytes += stored_bytes(outcome)

    def _flush_pending(self, store: Store) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        self._flush(store, pending)
        self._last_flush = time.monotonic()

    def _flush(self, store: Store, items: list[Item]) -> None:
        assert self.session_id is not None
        self._count_dropped()
        try:
            store.write(items)
            self.stats.recorded += len(items)
        except sqlite3.OperationalError as e:
            # The database cannot take writes now (full, locked, read-only, I/O): every item would fail too.
            reason = explain_write_error(self.db_path, e)
            self._count_error(f"write failed: {reason}", reason, len(items))
        except Exception:
            # A value SQLite refuses: one bad item must not cost its whole batch, so write them one by one.
            for item in items:
                try:
                    store.write([item])
                    self.stats.recorded += 1
                except Exception as e:
                    self._count_error(f"write failed: {type(e).__name__}: {e}", first_error_line(e))
        # If this fails too, the write error above (or the next flush) already reports an unusable database.
        with contextlib.suppress(Exception):
            store.update_session(self.session_id, recorded=self.stats.recorded,
                                 unrecorded=self.stats.unrecorded_total, reasons=dict(self.stats.unrecorded))

    def _count_error(self, reason: str, detail: str, count: int = 1) -> None:
        self.stats.unrecorded[reason] += count
        now = time.monotonic()
        if now - self._error_log_times.get(reason, 0) > 10:  # rate-limited: a full disk fails every flush
            self._error_log_times[reason] = now
            log.error("teletap: %d item(s) not recorded in %s (%s); traffic is unaffected; %d unrecorded so far",
                      count, self.db_path, detail, self.stats.unrecorded_total)


class ProcessIngest(_QueueFront):
    """Ingest in a worker process, so decoding and detection never take the proxy's GIL or core.

    The proxy side only pickles records into a bounded multiprocessing queue (on the queue's feeder
    thread); bodies of 64 KiB or more cross in shared memory instead (``bodyring.BodyRing``). The worker
    process builds the pipeline from ``pipeline_spec`` (the arguments of ``build_pipeline``) and runs the
    same ``Ingest`` loop as the thread version. A full queue is counted in shared memory, so the worker
    stores the count with the session. If the proxy dies, the worker writes what reached it and closes
    the database cleanly.
    """

    # Records cross to the worker in batches: one queue put per record cost the proxy a semaphore call, a
    # feeder-thread wake-up and a GIL hand-off each (a tenth of its throughput on small requests).
    BATCH_RECORDS = 64
    BATCH_SECONDS = 0.02

    def __init__(self, db_path: str | Path, pipeline_spec: dict[str, Any], *, queue_size: int = 10_000,
                 queue_bytes: int = 256 * 1024 * 1024, ring_bytes: int = 4 * 1024 * 1024,
                 start_timeout: float = 120, workers: int = 1, **ingest_kwargs: Any):
        self.db_path = Path(db_path)
        self.pipeline_spec = pipeline_spec
        self.workers = workers  # processes that decode and detect; this worker process alone writes
        self.queue_size = queue_size
        # Bounded in bytes too: 10,000 queued 200 KB bodies would hold 2 GB in the proxy process.
        self.queue_bytes = queue_bytes
        # Shared memory for large bodies (bodyring.py); 0: every body takes the pipe. Small, so the ring stays
        # in the CPU's cache: 4 MiB holds a 20 ms batch of bodies at 200 MB/s; a body that finds it full
        # takes the pipe.
        self.ring_bytes = ring_bytes
        self._ring: BodyRing | None = None
        self._ring_sent = 0  # ring position up to which bodies belong to batches already queued
        self.start_timeout = start_timeout
        self.ingest_kwargs = ingest_kwargs
        self.session_id: int | None = None
        self.stats = IngestStats()
        self._process: Any = None
        self._buffer: list[Record] = []
        self._flush_scheduled = False

    def start(self) -> int:
        import multiprocessing

        # spawn, not fork: the proxy process has an event loop and threads that must not be copied.
        mp = multiprocessing.get_context("spawn")
        batches = max(1, -(-self.queue_size // self.BATCH_RECORDS))
        self.queue = mp.Queue(maxsize=batches)  # in batches
        _widen_pipe(self.queue)
        self._dropped = mp.Value("q", 0, lock=False)
        self._inflight = mp.Value("q", 0)  # bytes queued and not yet taken by the worker; both sides write it
        self._results, child_end = mp.Pipe(duplex=False)
        ring_tail = mp.Value("q", 0)
        self._ring = BodyRing.create(self.ring_bytes, ring_tail)
        ring_spec = (self._ring.path, self._ring.size, ring_tail) if self._ring is not None else None
        try:
            self._process = mp.Process(
                target=_ingest_process_main, name="teletap-ingest", daemon=False,
                args=(self.db_path, self.pipeline_spec, self.ingest_kwargs, self.queue, self._dropped,
                      self._inflight, child_end, self.workers, ring_spec, (batches, self.queue_bytes)),
            )
            self._process.start()
            child_end.close()
            if not self._results.poll(self.start_timeout):
                self._process.kill()
                raise RuntimeError(f"the ingest process did not start within {self.start_timeout}s")
            kind, payload = self._results.recv()
            if kind != "ready":
                self._process.join(10)
                raise RuntimeError(payload)
        finally:
            if self._ring is not None:
                self._ring.unlink()  # mapped on both sides by now (or never will be): the name can go
        self.session_id = payload
        return payload

    def submit(self, record: Record) -> None:
        """Buffer a record; the buffer goes to the worker when full or within BATCH_SECONDS. Never blocks."""
        if self._ring is not None:
            # Now rather than when the batch goes: mitmproxy can free the body with the flow, as without
            # teletap, instead of it waiting in the proxy's memory (measurably slower: see bodyring.py).
            self._ring.put(record)
        self._buffer.append(record)
        if len(self._buffer) >= self.BATCH_RECORDS:
            self._send_buffer()
        elif not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop (tests, tools): no timer to wait for
                self._send_buffer()
                return
            self._flush_scheduled = True
            loop.call_later(self.BATCH_SECONDS, self._send_buffer)

    def _send_buffer(self) -> None:
        self._flush_scheduled = False
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        size = sum(record_bytes(r) for r in batch)
        with self._inflight.get_lock():
            fits = self._inflight.value + size <= self.queue_bytes or self._inflight.value == 0
            if fits:
                self._inflight.value += size
        try:
            if not fits:
                raise queue.Full
            self.queue.put_nowait(batch)
            if self._ring is not None:
                self._ring_sent = self._ring.head
        except queue.Full:
            if self._ring is not None:
                self._ring.head = self._ring_sent  # what this batch put in the ring is free again
            if fits:
                with self._inflight.get_lock():
                    self._inflight.value -= size
            self._count_drop(len(batch))

    def stop(self, timeout: float = 120) -> IngestStats:
        if self._process is None:
            return self.stats
        process, self._process = self._process, None
        self._send_buffer()
        self.queue.put(_Stop())
        try:
            if self._results.poll(timeout):
                kind, payload = self._results.recv()
                if kind == "done":
                    self.stats = payload
            else:
                log.error("teletap: ingest did not finish within %ss", timeout)
        except EOFError:
            log.error("teletap: the ingest process ended without reporting (see its errors above)")
        process.join(10)
        if process.is_alive():
            process.kill()
        self.queue.close()
        self.queue.join_thread()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        return self.stats


def _widen_pipe(work: Any, size: int = 1024 * 1024) -> None:
    """Give the queue's pipe 1 MiB instead of 64 KiB (Linux).

    With 64 KiB a 200 KB body takes several blocking writes, each a wake-up on the proxy's core; profiling
    showed that as the proxy's main extra cost on large bodies. Elsewhere, or if refused, nothing changes.
    """
    try:
        import fcntl

        fcntl.fcntl(work._writer.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, AttributeError, ImportError, ValueError):
        pass


class _Receiver:
    """The worker's end of the proxy's queue: takes batches off the pipe as soon as they arrive.

    A thread of its own copies each batch's large bodies out of the ring at once, so their space is free
    again while ingest is busy: a flush writes up to 16 MiB and holds the ingest loop for longer than a
    4 MiB ring lasts at 100 MB/s; with the loop taking batches itself, a third of 200 KB bodies found the
    ring full and took the pipe, which costs the proxy more. Ingest takes batches from here as it took
    them from the queue. A batch counts as in flight (``teletap_queue_bytes``) until ingest takes it,
    so the proxy's bound on what waits for ingest stays exact; this side holds at most ``AHEAD`` batches.
    """

    AHEAD = 16

    def __init__(self, work: Any, ring: BodyRing | None, inflight: Any, capacity: tuple[int, int] = (1, 1)):
        self._work = work
        self._ring = ring
        self._inflight = inflight
        self._capacity_batches, self._capacity_bytes = (max(1, n) for n in capacity)
        self._ready: queue.Queue[tuple[int, Any]] = queue.Queue(self.AHEAD)
        threading.Thread(target=self._run, name="teletap-receive", daemon=True).start()

    def fill(self) -> float:
        """The share of the proxy's queue in use: batches not yet taken by ingest, or their bytes."""
        try:
            waiting = self._work.qsize()
        except NotImplementedError:  # macOS has no sem_getvalue(); the bytes still tell
            waiting = 0
        waiting += self._ready.qsize()
        # Read without the lock the proxy takes per batch: an estimate needs no consistency.
        return max(waiting / self._capacity_batches, self._inflight.get_obj().value / self._capacity_bytes)

    def get(self, timeout: float | None = None) -> Any:
        size, item = self._ready.get(timeout=timeout)
        if size:
            with self._inflight.get_lock():
                self._inflight.value -= size
        return item

    def _run(self) -> None:
        while True:
            try:
                item = self._work.get()
            except (EOFError, OSError):  # the proxy's end is gone; ingest notices it has no parent and stops
                return
            except Exception as e:  # a batch that cannot be unpickled (a bug of ours): say so, keep going
                # How many items it held is unknown, so they cannot be counted: the log is all that is left.
                log.error("teletap: a batch from the proxy could not be read; its items are lost and NOT "
                          "counted as unrecorded: %s", f"{type(e).__name__}: {e}"[:300])
                continue
            size = 0
            if isinstance(item, list):
                size = sum(record_bytes(r) for r in item)  # as the proxy counted it (a BodyRef has the body's length)
                if self._ring is not None:
                    try:
                        self._ring.take_bodies(item)
                    except Exception as e:  # a bug of ours: these items are counted, never silently lost
                        error = f"{type(e).__name__}: {e}"[:300]
                        log.error("teletap: %d item(s) not recorded: %s", len(item), error)
                        item = [CaptureFailure(hook="body ring", error=error) for _ in item]
            self._ready.put((size, item))
            if isinstance(item, _Stop):
                return


def _ingest_process_main(db_path: Path, pipeline_spec: dict[str, Any], ingest_kwargs: dict[str, Any],
                         work: Any, dropped: Any, inflight: Any, results: Any, workers: int = 1,
                         ring_spec: tuple[str, int, Any] | None = None,
                         capacity: tuple[int, int] = (1, 1)) -> None:
    import multiprocessing
    import signal

    # Ctrl-C reaches the whole process group; the proxy decides when ingest stops, after draining.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parent = multiprocessing.parent_process()
    pool = None
    try:
        pipeline, _ = build_pipeline(**pipeline_spec)
        pool = make_pool(pipeline, workers)  # before the database and the ingest thread (see make_pool)
        ring = BodyRing.attach(*ring_spec) if ring_spec is not None else None
        receiver = _Receiver(work, ring, inflight, capacity)
        ingest = Ingest(db_path, pipeline, queue_obj=receiver, dropped=dropped,
                        parent_alive=parent.is_alive if parent is not None else None, pool=pool,
                        pool_workers=workers, backlog=receiver.fill, **ingest_kwargs)
        session_id = ingest.start()
    except Exception as e:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        results.send(("error", f"{type(e).__name__}: {e}"))
        return
    results.send(("ready", session_id))
    assert ingest._thread is not None
    ingest._thread.join()
    if pool is not None:
        pool.shutdown()
    # The parent may be gone (then nobody reads this); the session row already holds the counts.
    with contextlib.suppress(OSError):
        results.send(("done", ingest.stats))
