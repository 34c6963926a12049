"""The shared-memory ring that carries large bodies from the proxy to the ingest process."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teletap.bodyring import SHM_DIR, BodyRef, BodyRing
from teletap.records import Body

from .support import mounted_tmpfs, rows
from .test_ingest import flow

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="no /dev/shm")

KIB = 1024


def ring_pair(size: int) -> tuple[BodyRing, BodyRing]:
    """Both ends in one process, each with its own mapping, as in the proxy and in ingest."""
    tail = multiprocessing.get_context("spawn").Value("q", 0)
    writer = BodyRing.create(size, tail)
    assert writer is not None
    return writer, BodyRing.attach(writer.path, size, tail)


def test_bodies_cross_through_the_ring_and_small_ones_stay_in_the_record():
    writer, reader = ring_pair(1024 * KIB)
    assert not os.path.exists(writer.path)  # unlinked once both sides had it mapped: nothing can leak
    big, small = os.urandom(200 * KIB), b"x" * 100
    batch = [flow(big, fid="a"), flow(small, fid="b")]
    for record in batch:
        writer.put(record)
    assert batch[0].request_body.raw == BodyRef(0, len(big)) and batch[1].request_body.raw == small
    reader.take_bodies(batch)
    assert batch[0].request_body.raw == big and batch[1].request_body.raw == small
    assert reader.tail.value == len(big)  # the space is free again
    writer.close()
    reader.close()


def test_a_shared_memory_without_room_means_no_ring_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Writing into a mapping a full tmpfs cannot back is SIGBUS: the ring reserves its memory up front."""
    import teletap.bodyring

    with mounted_tmpfs(tmp_path / "shm", "1m") as shm:
        monkeypatch.setattr(teletap.bodyring, "SHM_DIR", str(shm))
        tail = multiprocessing.get_context("spawn").Value("q", 0)
        assert BodyRing.create(4 * 1024 * KIB, tail) is None  # 4 MiB do not fit in 1 MiB
        assert os.listdir(shm) == []
        ring = BodyRing.create(512 * KIB, tail)  # what fits works
        assert ring is not None
        ring.close()


def test_a_reference_outside_the_ring_is_refused():
    _, reader = ring_pair(256 * KIB)
    record = flow(fid="bad")
    record.request_body = Body(BodyRef(100 * KIB, 200 * KIB), 200 * KIB)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside the ring"):
        reader.take_bodies([record])


# A batch: body sizes in KiB (0 = no body); some below MIN_BODY, some larger than the whole ring.
batches = st.lists(st.integers(0, 300), min_size=1, max_size=4)
steps = st.lists(st.tuples(st.sampled_from(["send", "send", "drop", "take"]), batches), max_size=40)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_no_body_is_overwritten_before_ingest_has_read_it(ops: list[tuple[str, list[int]]]):
    """Random sends, refused sends (rolled back, as when the queue is full) and reads, in order."""
    writer, reader = ring_pair(256 * KIB)
    sent: deque[tuple[list, list[bytes]]] = deque()
    n = 0
    for op, sizes in ops:
        if op == "take":
            if sent:
                batch, originals = sent.popleft()
                reader.take_bodies(batch)
                assert [r.request_body.raw for r in batch] == originals
            continue
        originals = []
        for size in sizes:
            n += 1
            originals.append(n.to_bytes(4, "big") * (size * KIB // 4))  # every body different
        batch = [flow(body, fid=str(i)) for i, body in enumerate(originals)]
        head = writer.head
        for record in batch:
            writer.put(record)
        for record, original in zip(batch, originals, strict=True):
            raw = record.request_body.raw
            assert raw == original or (isinstance(raw, BodyRef) and raw.length == len(original)
                                       and len(original) >= BodyRing.MIN_BODY)
        if op == "drop":
            writer.head = head
        else:
            sent.append((batch, originals))
    while sent:
        batch, originals = sent.popleft()
        reader.take_bodies(batch)
        assert [r.request_body.raw for r in batch] == originals
    writer.close()
    reader.close()


def test_a_refused_batch_gives_its_ring_space_back(tmp_path: Path):
    """The queue refuses a batch (full): the ring forgets that batch's bodies, and only those."""
    from teletap.ingest import ProcessIngest

    mp = multiprocessing.get_context("spawn")
    front = ProcessIngest(tmp_path / "unused.db", {})
    front.queue, front._dropped, front._inflight = mp.Queue(maxsize=1), mp.Value("q", 0, lock=False), mp.Value("q", 0)
    front._ring = BodyRing.create(1024 * KIB, mp.Value("q", 0))
    assert front._ring is not None
    front.submit(flow(b"a" * 100 * KIB, fid="queued"))  # off an event loop, every record goes at once
    assert front._ring.head == 100 * KIB and front._dropped.value == 0
    front.submit(flow(b"b" * 100 * KIB, fid="refused"))
    assert front._dropped.value == 1 and front._ring.head == 100 * KIB  # given back, not leaked
    (queued,) = front.queue.get(timeout=5)
    assert queued.request_body.raw == BodyRef(0, 100 * KIB)
    front._ring.close()
    front.queue.close()
    front.queue.join_thread()


def test_process_ingest_stores_large_bodies_intact_through_a_small_ring(tmp_path: Path):
    """A real ingest process: more body bytes than the ring holds, so it wraps and some bodies take the pipe."""
    from teletap.ingest import ProcessIngest

    db = tmp_path / "ring.db"
    ingest = ProcessIngest(db, dict(findings_key=b"k" * 32), ring_bytes=512 * KIB, session_label="ring")
    ingest.start()
    assert ingest._ring is not None
    ring_path = ingest._ring.path
    assert not os.path.exists(ring_path)  # unlinked once the worker had it mapped
    bodies = {f"r{i}": os.urandom(150 * KIB) for i in range(40)}
    for fid, body in bodies.items():
        ingest.submit(flow(body, headers=[("content-type", "application/octet-stream")], fid=fid))
    stats = ingest.stop()
    assert stats.recorded == 40 and stats.unrecorded_total == 0
    stored = {r["id"]: r for r in rows(db, "select id, request_body, request_sha256 from flows")}
    assert set(stored) == set(bodies)
    for fid, body in bodies.items():
        assert stored[fid]["request_body"] == body
        assert stored[fid]["request_sha256"] == hashlib.sha256(body).hexdigest()
    assert ingest._ring is None and not os.path.exists(ring_path)


def test_a_bad_reference_is_counted_not_lost_and_ingest_goes_on(tmp_path: Path):
    """Should a reference ever be wrong (a bug), its batch is counted as unrecorded and nothing else suffers."""
    from teletap.ingest import ProcessIngest

    db = tmp_path / "bad.db"
    ingest = ProcessIngest(db, dict(findings_key=b"k" * 32), ring_bytes=512 * KIB, session_label="bad ref")
    ingest.start()
    bad = flow(fid="bad")
    bad.request_body = Body(BodyRef(400 * KIB, 200 * KIB), 200 * KIB)  # type: ignore[arg-type]
    ingest.submit(bad)  # off an event loop: a batch of its own
    ingest.submit(flow(os.urandom(100 * KIB), fid="good"))
    stats = ingest.stop()
    assert stats.recorded == 1 and dict(stats.unrecorded) == {
        "capture failed in body ring: ValueError: body reference outside the ring: "
        "BodyRef(start=409600, length=204800)": 1}
    assert [r["id"] for r in rows(db, "select id from flows")] == ["good"]
    assert ingest._inflight.value == 0  # the worker gave back every byte it took


class SlowStore:
    """A real store whose every write first waits, like a flush of many megabytes on a busy disk."""

    def __init__(self, path: Path):
        from teletap.store import Store

        self._store = Store(path)

    def write(self, items: list) -> None:
        import time

        time.sleep(0.8)
        self._store.write(items)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def test_the_ring_is_freed_while_ingest_is_busy_writing(tmp_path: Path):
    """Bodies arriving during a long write are taken out of the ring at once, so later ones still fit in it.

    Ingest's loop used to take batches only between writes: here the fifth body would have found the 1 MiB
    ring full (four of 300 KiB waiting behind the write) and taken the pipe.
    """
    import time

    from teletap.ingest import ProcessIngest

    db = tmp_path / "busy.db"
    ingest = ProcessIngest(db, dict(findings_key=b"k" * 32), ring_bytes=1024 * KIB, session_label="busy",
                           store_factory=SlowStore, batch_bytes=1)  # every batch is written at once
    ingest.start()
    assert ingest._ring is not None
    bodies = {f"b{i}": os.urandom(300 * KIB) for i in range(6)}
    for fid, body in bodies.items():
        ingest.submit(flow(body, headers=[("content-type", "application/octet-stream")], fid=fid))
        time.sleep(0.05)  # the first write (0.8 s) is still going on when the last body arrives
    assert ingest._ring.spilled == 0
    stats = ingest.stop()
    assert stats.recorded == 6 and stats.unrecorded_total == 0
    stored = {r["id"]: r["request_body"] for r in rows(db, "select id, request_body from flows")}
    assert stored == bodies
    assert ingest._inflight.value == 0
