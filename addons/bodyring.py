"""Large bodies cross from the proxy to the ingest process through shared memory instead of the pipe.

Through the queue's pipe a 200 KB body is copied four times (pickled, into the kernel, out of it,
unpickled), twice of them in the proxy process, and it stays in the proxy's memory until its batch goes.
Here the proxy copies it once, as soon as the flow is recorded, into a small ring that both processes map,
and the record in the pipe carries only a ``BodyRef``; ingest copies it out once. Measured under 200 KB
POSTs with ingest discarding what it received: the proxy's CPU per request rose 2 % over plain mitmdump's,
against 5–12 % through the pipe (docs/benchmarks.md).

A body that does not fit (ingest lags behind) simply takes the pipe as before, so the ring never refuses
anything: the queue's limits (``teletap_queue_size``, ``teletap_queue_bytes``) stay the only place where
items are counted as unrecorded.

One writer (the proxy's event loop) and one reader (the ingest process's receiver thread, which empties
the ring as batches arrive), both in order: the proxy advances ``head``, ingest publishes how far it has
read (``tail``) in a shared counter, and the proxy reuses space only behind it. Positions are byte counts
since the start, so they only grow; a body that would cross the ring's end starts again at its beginning.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from .records import Body, HttpFlowRecord, Record

SHM_DIR = "/dev/shm"  # tmpfs: the ring's pages are memory, never written back to a disk


@dataclass(frozen=True, slots=True)
class BodyRef:
    """Where a body waits in the ring: ``length`` bytes from position ``start``."""

    start: int
    length: int

    def __len__(self) -> int:
        return self.length


class BodyRing:
    """The shared ring; ``create`` it in the proxy before starting ingest, ``attach`` to it in ingest."""

    # Smaller bodies stay in the pickled record: for them the pipe costs less than the ring's bookkeeping.
    MIN_BODY = 64 * 1024

    def __init__(self, path: str, size: int, tail: Any):
        self.path = path
        self.size = size
        self.tail = tail  # multiprocessing.Value("q"): how far ingest has read; ingest writes, the proxy reads
        self.head = 0  # proxy side only: where the next body goes
        self.spilled = 0  # proxy side only: bodies that found the ring full and took the pipe
        with open(path, "r+b") as f:
            self.map = mmap.mmap(f.fileno(), size)

    @classmethod
    def create(cls, size: int, tail: Any) -> BodyRing | None:
        """A new ring in shared memory, or None where there is none (then every body takes the pipe)."""
        if size < cls.MIN_BODY or not os.path.isdir(SHM_DIR):
            return None
        fd, path = tempfile.mkstemp(prefix="teletap-bodies-", dir=SHM_DIR)
        try:
            # Reserved now, not on first write: writing into a mapping that a full tmpfs cannot back is
            # SIGBUS, which would kill the proxy. A /dev/shm without room means no ring, not a crash.
            os.posix_fallocate(fd, 0, size)
            return cls(path, size, tail)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        finally:
            os.close(fd)

    @classmethod
    def attach(cls, path: str, size: int, tail: Any) -> BodyRing:
        ring = cls(path, size, tail)
        ring.unlink()  # both sides have it mapped: the name is no longer needed, and nothing can leak
        return ring

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        self.unlink()
        self.map.close()

    # -- proxy side -----------------------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Move a record's large bodies into the ring, replacing each by its ``BodyRef``.

        Its bodies are fresh objects that capture made for the record, so nothing mitmproxy holds changes.
        """
        if not isinstance(record, HttpFlowRecord):
            return
        for body in (record.request_body, record.response_body):
            if body is not None and isinstance(body.raw, bytes) and self.MIN_BODY <= len(body.raw) <= self.size:
                self._put(body)

    def _put(self, body: Body) -> None:
        data = body.raw
        assert data is not None
        n = len(data)
        start = self.head
        offset = start % self.size
        if offset + n > self.size:  # would cross the end: start again at the beginning
            start += self.size - offset
            offset = 0
        if start + n - self._read_up_to() > self.size:
            self.spilled += 1
            return  # ingest has not read that far yet: this body takes the pipe
        self.map[offset:offset + n] = data
        self.head = start + n
        body.raw = BodyRef(start, n)  # type: ignore[assignment]

    def _read_up_to(self) -> int:
        with self.tail.get_lock():
            return int(self.tail.value)

    # -- ingest side ----------------------------------------------------------------------------------
    def take_bodies(self, batch: list[Record]) -> None:
        """Replace every ``BodyRef`` of a batch by its bytes, then free the space they took.

        Raises ValueError on a reference outside the ring (a bug: the caller counts the batch unrecorded).
        """
        end = None
        for record in batch:
            if isinstance(record, HttpFlowRecord):
                for body in (record.request_body, record.response_body):
                    if body is not None and isinstance(body.raw, BodyRef):
                        ref = body.raw
                        offset = ref.start % self.size
                        if ref.length < 0 or offset + ref.length > self.size:
                            raise ValueError(f"body reference outside the ring: {ref}")
                        body.raw = self.map[offset:offset + ref.length]
                        end = ref.start + ref.length
        if end is not None:
            with self.tail.get_lock():
                self.tail.value = end
