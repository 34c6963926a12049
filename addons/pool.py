"""The pipeline on several cores: a process pool for ``Pipeline.process``, which is pure and CPU-bound.

Used by ``teletap import --jobs`` and by the live ingest process (``--ingest-workers``). One process still
writes the database (SQLite takes one writer at a time); the pool only decodes, matches and detects.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from .pipeline import process_each

if TYPE_CHECKING:
    from .pipeline import Failed, Pipeline
    from .records import Record
    from .store import Item

MAX_INGEST_WORKERS = 64  # --ingest-workers / teletap_ingest_workers

_worker_pipeline: Pipeline | None = None


def _init_worker(pipeline: Pipeline) -> None:
    global _worker_pipeline
    _worker_pipeline = pipeline
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:  # Linux: die with the parent, so a killed ingest process leaves no workers behind
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def process_chunk(chunk: list[list[Record]], session_id: int) -> list[list[Item]]:
    """Import: the rows of each entry (a flow and its WebSocket messages); an error fails the chunk."""
    assert _worker_pipeline is not None
    return [[_worker_pipeline.process(r, session_id) for r in recs] for recs in chunk]


def process_batch(records: list[Record], session_id: int) -> list[Item | Failed]:
    """Live ingest: ``pipeline.process_each`` in a pool worker."""
    assert _worker_pipeline is not None
    return process_each(_worker_pipeline, records, session_id)


def make_pool(pipeline: Pipeline, jobs: int) -> Any:
    """``jobs`` worker processes for ``Pipeline.process``, or None for one job (then it runs in-process).

    Forked, so each worker inherits the loaded pipeline (signatures, detectors) without rebuilding it.
    None where fork is unavailable too. Call it before opening the database and before starting threads:
    a fork copies only the calling thread, and locks other threads hold would stay locked in the child."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork"),
                               initializer=_init_worker, initargs=(pipeline,))
    # With fork, the first submit starts every worker at once, from this thread: do it now, before the
    # database is opened and before the pool's own manager thread exists (forking is then safe).
    pool.submit(int).result()
    return pool
