"""Faults while proxying: kill -9 under load, a database that stops accepting writes.

Real processes on loopback, real SQLite files.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from .support import LOOPBACK, Upstream, ingest_process, mounted_tmpfs, rows, running_teletap, wait_gone

pytestmark = pytest.mark.e2e


class Load:
    """Clients posting through the proxy until stopped; remembers when each answer arrived."""

    def __init__(self, proxy: str, upstream_port: int, clients: int = 4):
        self.proxy, self.url = proxy, f"http://{LOOPBACK}:{upstream_port}/load"
        self.answered: list[float] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, n: int) -> None:
        with httpx.Client(proxy=self.proxy, timeout=5) as client:
            i = 0
            while not self.stop.is_set():
                try:
                    r = client.post(self.url, content=f"client {n} request {i}".encode())
                    if r.status_code == 200:
                        self.answered.append(time.time())
                except httpx.HTTPError:
                    pass
                i += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_kill_9_under_load_loses_at_most_the_last_second(tmp_path: Path):
    db = tmp_path / "killed.db"
    with Upstream() as upstream:
        with running_teletap(tmp_path, "--session", "killed", db=db) as tt:
            worker = ingest_process(tt.proc.pid)
            with Load(tt.proxy, upstream.port) as load:
                time.sleep(3)
                killed_at = time.time()
                os.kill(tt.proc.pid, signal.SIGKILL)
                tt.proc.wait(10)
            answered_before = [t for t in load.answered if t <= killed_at]
        # The worker notices the proxy is gone, writes what reached it and exits by itself.
        assert wait_gone([worker], 30), "the ingest worker outlived the proxy"

        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        recorded = conn.execute("SELECT COUNT(*) FROM flows WHERE path = '/load'").fetchone()[0]
        conn.close()
        older_than_a_second = [t for t in answered_before if t <= killed_at - 1.0]
        assert len(answered_before) > 20, "the load did not get going"
        assert recorded >= len(older_than_a_second), (recorded, len(older_than_a_second), len(answered_before))

        # The next start records cleanly into the same file, in a new session.
        with running_teletap(tmp_path, "--session", "after the crash", db=db) as tt, \
                httpx.Client(proxy=tt.proxy, timeout=10) as client:
            assert client.post(f"http://{LOOPBACK}:{upstream.port}/after", content=b"x").status_code == 200
            assert tt.stop() == 0
    sessions = rows(db, "SELECT id, label, ended, items_recorded FROM sessions ORDER BY id")
    assert [s["label"] for s in sessions] == ["killed", "after the crash"]
    assert sessions[0]["ended"] is not None  # the worker closed the killed proxy's session itself
    assert sessions[1]["ended"] is not None and sessions[1]["items_recorded"] >= 1
    assert rows(db, "SELECT session_id FROM flows WHERE path = '/after'") == [{"session_id": 2}]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 16 MiB filesystem (tmpfs) that tests can fill up or make read-only."""
    with mounted_tmpfs(tmp_path / "disk", "16m") as mount:
        yield mount


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush (and fail) on close
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


@pytest.fixture
def ext4_disk(tmp_path: Path):
    """A real 32 MiB ext4 filesystem on a loop device, mounted ``errors=remount-ro``.

    ext4's ``trigger_fs_error`` switch (sysfs) then makes it fail as after a real I/O error: the kernel
    turns the filesystem read-only under the running proxy, with the database open for writing (a plain
    ``mount -o remount,ro`` is refused while a file is open for writing).
    """
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    for command in (["mkfs.ext4", "-q", "-F", str(image)],
                    ["mount", "-o", "loop,errors=remount-ro", str(image), str(mount)]):
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip(f"{command[0]} is not installed")
        if result.returncode != 0:
            pytest.skip(f"cannot make an ext4 loop filesystem here (needs root and loop devices): "
                        f"{result.stderr.strip()}")
    device = Path(subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mount)], capture_output=True,
                                 text=True).stdout.strip())
    try:
        yield mount, Path("/sys/fs/ext4") / device.name / "trigger_fs_error", image
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount_after_check(mount: Path, image: Path) -> None:
    """What an admin does after the error: unmount, fsck, mount again."""
    subprocess.run(["umount", str(mount)], check=True)
    fsck = subprocess.run(["e2fsck", "-f", "-y", str(image)], capture_output=True, text=True)
    assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr  # 1: errors corrected (the triggered one)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)


@pytest.mark.parametrize("fault", ["disk full", "locked", "read-only"])
def test_database_that_stops_accepting_writes_never_stops_traffic(tmp_path: Path, request: pytest.FixtureRequest,
                                                                  fault: str):
    """The DB's disk fills up, its filesystem turns read-only, or another program holds the DB locked beyond
    the busy timeout, while proxying: clients are still served; the loss is counted, logged and reported;
    what was committed stays intact."""
    if fault == "read-only":
        disk, trigger, image = request.getfixturevalue("ext4_disk")
    else:
        disk = request.getfixturevalue("small_disk")
    db = disk / "evidence.db"
    with Upstream() as upstream, running_teletap(tmp_path, "--session", fault, db=db) as tt:
        with httpx.Client(proxy=tt.proxy, timeout=10) as client:
            assert client.post(f"http://{LOOPBACK}:{upstream.port}/before", content=b"x").status_code == 200
            time.sleep(1.5)  # committed
            if fault == "disk full":
                filler = _fill(disk)
            elif fault == "read-only":
                trigger.write_text("teletap reliability test\n")
                with pytest.raises(OSError, match="Read-only file system"):
                    (disk / "probe").write_bytes(b"")
            else:
                blocker = sqlite3.connect(db, isolation_level=None)
                blocker.execute("BEGIN EXCLUSIVE")  # e.g. someone's long write in the sqlite3 shell
            statuses = [client.post(f"http://{LOOPBACK}:{upstream.port}/during", content=b"y" * 50_000).status_code
                        for _ in range(40)]
            # The worker tries (and fails) to write them: at once on a full or read-only disk, after its
            # 10 s busy timeout on a lock.
            time.sleep(12 if fault == "locked" else 1.5)
            # The admin frees the disk / ends the lock; the session row can be closed with the counts.
            # A read-only filesystem stays so until it is checked and mounted again.
            if fault == "disk full":
                filler.unlink()
            elif fault == "locked":
                blocker.execute("ROLLBACK")
                blocker.close()
        assert statuses == [200] * 40  # traffic unaffected
        assert tt.stop() == 0
        output = tt.output()
    assert "NOT recorded" in output and "write failed" in output, output
    if fault == "read-only":
        assert "filesystem holding the database is read-only" in output, output
        # The session row could not be updated; the shutdown report has the counts.
        unrecorded = int(re.search(r"(\d+) item\(s\) NOT recorded", output).group(1))
        assert unrecorded >= 40, output
        _remount_after_check(disk, image)
    else:
        session = rows(db, "SELECT items_unrecorded, unrecorded_reasons FROM sessions")[0]
        assert session["items_unrecorded"] >= 1 and "write failed" in session["unrecorded_reasons"]
    assert rows(db, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]
    assert rows(db, "SELECT COUNT(*) AS n FROM flows WHERE path = '/before'") == [{"n": 1}]
