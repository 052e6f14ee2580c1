"""A pull over a slow link does not hold headquarters' database for the transfer: the batch is
received into a temporary file first and ingested from there. The link is a real TCP relay on
127.0.0.1 that hands the post's answer on in small pieces, and can stop half-way until told."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time

import pytest

from appliance.models import Outbox
from sync import hq
from tests.sync.conftest import _public, add_reads, hq_reads, post_reads
from tests.sync.hq.test_pull import serving_post


class SlowLink:
    """Relays TCP connections to `upstream`, the answers `chunk` bytes at a time with `delay_s`
    between pieces. With `pause_after`, the first connection stops after that many bytes of the
    answer (setting `paused`) until `resume` is set."""

    def __init__(self, upstream_port: int, chunk: int = 1024, delay_s: float = 0.005, pause_after: int | None = None):
        self.upstream_port, self.chunk, self.delay_s, self.pause_after = upstream_port, chunk, delay_s, pause_after
        self.paused, self.resume = threading.Event(), threading.Event()
        self.relayed = 0  # answer bytes handed on, all connections
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self.resume.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            first = self.connections == 1
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answer, args=(upstream, client, first), daemon=True).start()

    def _pipe(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(dst)

    def _answer(self, src, dst, first: bool) -> None:
        sent = 0
        try:
            while data := src.recv(self.chunk):
                if first and self.pause_after is not None and sent < self.pause_after <= sent + len(data):
                    self.paused.set()
                    self.resume.wait(30)
                dst.sendall(data)
                sent += len(data)
                self.relayed += len(data)
                time.sleep(self.delay_s)
        except OSError:
            pass
        finally:
            _shut(dst)
            src.close()


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class LockWatch:
    """Asks for headquarters' write lock (BEGIN IMMEDIATE, no waiting) every few milliseconds and
    keeps the longest stretch it was refused: how long someone else held the lock at a time."""

    def __init__(self, path):
        self.path, self.longest_s, self.refused = path, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        con = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        since = None
        while not self._stop.is_set():
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute("ROLLBACK")
                if since is not None:
                    self.longest_s = max(self.longest_s, time.monotonic() - since)
                since = None
            except sqlite3.OperationalError:
                self.refused += 1
                since = since if since is not None else time.monotonic()
            time.sleep(0.005)
        if since is not None:
            self.longest_s = max(self.longest_s, time.monotonic() - since)
        con.close()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(10)
        return self.longest_s


@pytest.fixture
def post_url(settings, db, hq_path):
    """The post's web app with pull on for headquarters' key (headquarters' database open)."""
    with serving_post(settings, hq_path) as (_on, port, key):
        yield port, key


def _enroll_through(settings, link: SlowLink) -> None:
    with hq.hq_database.connection_context():
        hq.enroll(settings.post.id, "Test post", _public(settings), pull_url=link.url)


def _pull_in_thread(post_id: str, key, **kw) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", hq.pull(post_id, key, **kw)), daemon=True)
    thread.start()
    return thread, out


def test_a_slow_pull_leaves_headquarters_writable_while_the_batch_travels(settings, db, post_url, hq_path):
    port, key = post_url
    add_reads(settings, 4)  # two batches of two reads
    link = SlowLink(port, pause_after=4096)
    _enroll_through(settings, link)
    watch = LockWatch(hq_path)
    started = time.monotonic()
    try:
        thread, out = _pull_in_thread(settings.post.id, key)
        assert link.paused.wait(30), "the first batch never got under way"
        # half-way through the first batch's transfer: another writer (a push, a search's access
        # record) gets the write lock at once
        con = sqlite3.connect(hq_path, timeout=1, isolation_level=None)
        try:
            asked = time.monotonic()
            con.execute("BEGIN IMMEDIATE")
            waited = time.monotonic() - asked
            con.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            pytest.fail(f"headquarters' database was write-locked while the batch was still in transit: {exc}")
        finally:
            con.close()
        time.sleep(0.5)  # the link stays stalled a while, as a slow one does
        link.resume.set()
        thread.join(60)
    finally:
        longest = watch.stop()
        link.close()
    took = time.monotonic() - started
    print(
        f"\npull over the slow link: {took:.2f} s for {link.relayed} bytes in {link.connections} connection(s); "
        f"BEGIN IMMEDIATE mid-transfer waited {waited * 1000:.1f} ms; longest write-lock hold seen "
        f"{longest * 1000:.0f} ms ({watch.refused} refused probes)"
    )
    result = out["result"]
    assert (result.batches, result.reads, result.problem) == (3, 4, "")  # then the frames (the second lane)
    assert hq_reads(settings.post.id) == post_reads()
    with hq.hq_database.connection_context():
        assert hq.verify_chain(settings.post.id)[0]
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 0


def _deleted_files_open() -> set[str]:
    """The files this process holds open that are no longer in any directory (an unlinked
    temporary file shows here until it is closed)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)"):
            found.add(target)
    return found


def test_an_oversized_pulled_batch_is_refused_and_leaves_no_temporary_file(settings, db, post_url, hq_path):
    port, key = post_url
    add_reads(settings, 2)
    link = SlowLink(port)
    _enroll_through(settings, link)
    hq_dir = hq_path.parent
    before_files = {p.name for p in hq_dir.iterdir() if not p.name.startswith(hq_path.name)}
    before_open = _deleted_files_open()
    try:
        result = hq.pull(settings.post.id, key, max_bytes=4096)
    finally:
        link.close()
    assert result.problem.startswith("oversized: the batch is more than 4096 bytes"), result.problem
    assert (result.batches, result.reads) == (0, 0)
    with hq.hq_database.connection_context():
        row = hq.HQBatch.select().order_by(hq.HQBatch.id.desc()).first()
        assert (row.status, row.problem, row.post_id) == ("refused", "oversized", "")
        assert row.size > 4096 and link.url in row.remote_addr
        assert hq.HQRead.select().count() == 0
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 2  # nothing marked sent
    assert {p.name for p in hq_dir.iterdir() if not p.name.startswith(hq_path.name)} == before_files
    assert _deleted_files_open() <= before_open
    # within the limit, the same post is pulled in full afterwards
    link = SlowLink(port)
    _enroll_through(settings, link)
    try:
        again = hq.pull(settings.post.id, key)
    finally:
        link.close()
    assert (again.batches, again.reads, again.problem) == (2, 2, "")  # the reads, then their frames
    assert _deleted_files_open() <= before_open
