"""Faults with real processes: headquarters killed (SIGKILL) between storing a batch and answering
for it; a batch build interrupted on the post."""

from __future__ import annotations

import fcntl
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from appliance import audit, bundle
from appliance.bench import data as bench_data
from appliance.models import Outbox
from sync import hq, post
from tests.sync.conftest import _public, add_reads, hq_reads, post_reads


def start_hq(settings, hq_path, port, fault=None) -> subprocess.Popen:
    """`waypost hq serve`, or with fault="kill-after-store" the test-only server that dies between
    storing a batch and answering for it (tests/sync/fault_hq.py)."""
    # Headquarters' own data directory (its accounts database and access log), not the post's.
    env = dict(os.environ, WAYPOST_STORAGE__DATA_DIR=str(settings.data_dir.parent / "hq-data"))
    if fault == "kill-after-store":
        command = [sys.executable, "-m", "tests.sync.fault_hq", str(hq_path), str(port)]
    else:
        assert fault is None, fault
        command = [sys.executable, "-m", "appliance", "hq", "serve", "--database", str(hq_path), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None  # stdout=PIPE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode()) from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("headquarters did not start")


def test_headquarters_killed_between_storing_and_answering(settings, db, hq_target, hq_port):
    hq_path = hq_target
    hq.open_hq(hq_path)
    with hq.hq_database.connection_context():
        hq.enroll(settings.post.id, "Test post", _public(settings))
    hq.hq_database.close()
    add_reads(settings, 3)
    proc = start_hq(settings, hq_path, hq_port, fault="kill-after-store")
    try:
        with pytest.raises(post.SyncError):
            post.push(settings)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
    # stored but never acknowledged: the post still holds the built batch and marked nothing
    assert (settings.data_dir / "sync" / "unacked.batch").exists()
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 3
    assert len(hq_reads(settings.post.id)) == 2
    proc = start_hq(settings, hq_path, hq_port)
    try:
        result = post.push(settings)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert result.duplicates == 1 and result.reads == 1
    assert hq_reads(settings.post.id) == post_reads()
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 0
    with hq.hq_database.connection_context():
        # ..., then the frames of the second lane
        statuses = [b.status for b in hq.HQBatch.select().order_by(hq.HQBatch.id)]
        assert statuses == ["stored", "duplicate", "stored", "stored"]
        assert hq.verify_chain(settings.post.id)[0]


def test_an_interrupted_build_is_discarded_and_made_again(settings, db, hq_server):
    add_reads(settings, 2)
    spool = settings.data_dir / "sync"
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "unacked.batch.part").write_bytes(b"\x1f\x8b half a batch")
    (spool / "unacked.batch").write_bytes(b"not even gzip")  # a torn rename cannot happen, but a bad disk can
    result = post.push(settings)
    assert result.reads == 2 and not (spool / "unacked.batch.part").exists()
    assert hq_reads(settings.post.id) == post_reads()


def test_two_pushes_at_once_are_refused_rather_than_interleaved(settings, db, hq_server):

    add_reads(settings, 1)
    spool = settings.data_dir / "sync"
    spool.mkdir(parents=True, exist_ok=True)
    with open(spool / "push.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(post.SyncError, match="another push is running"):
            post.push(settings)
    assert post.push(settings).reads == 1


class CuttingProxy:
    """Forwards one connection to headquarters and cuts it after `limit` bytes of the request."""

    def __init__(self, target_port, limit):

        self.limit = limit
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.target_port = target_port
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        client, _ = self.sock.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        sent = 0
        while sent < self.limit:
            data = client.recv(min(65536, self.limit - sent))
            if not data:
                break
            upstream.sendall(data)
            sent += len(data)
        upstream.close()  # cut in the middle of the upload, both ways
        client.close()
        self.sock.close()


def test_a_connection_cut_in_the_middle_of_an_upload(settings, db, hq_server):
    add_reads(settings, 2)
    proxy = CuttingProxy(hq_server.port, limit=6000)
    cut = settings.model_copy(
        update={"sync": settings.sync.model_copy(update={"hq_url": f"http://127.0.0.1:{proxy.port}"})}
    )
    # the position request goes through the real address; the batch through the cutting proxy
    path = settings.data_dir / "sync-test.batch"
    with open(path, "wb") as f:
        post.build_batch(settings, bundle.post_key(settings), post.fetch_position(settings), f)
    assert path.stat().st_size > 6000
    with pytest.raises(post.SyncError):
        post._send(cut, path)
    assert hq_reads(settings.post.id) == {}
    with hq.hq_database.connection_context():
        assert hq.HQPost.get_by_id(settings.post.id).last_seq == 0
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 2
    assert post.push(settings).reads == 2
    assert hq_reads(settings.post.id) == post_reads()


def test_batches_out_of_order_and_twice(settings, db, hq_server):
    add_reads(settings, 4)  # batch_max_reads 2: two batches
    key = bundle.post_key(settings)
    first_buf, second_buf = io.BytesIO(), io.BytesIO()
    h1 = post.build_batch(settings, key, post.Position(0, 0, audit.GENESIS), first_buf)
    # the second batch as the post would build it once the first is held
    records = list(audit.export_rows())
    post.build_batch(settings, key, post.Position(h1["last_seq"], len(records), records[-1]["hash"]), second_buf)

    def send(body):
        return post._request(settings, "POST", "/hq/v1/batches", body=body, length=len(body))

    status, answer = send(second_buf.getvalue())
    assert (status, answer["problem"]) == (409, "gap")
    assert send(first_buf.getvalue())[1]["status"] == "stored"
    assert send(first_buf.getvalue())[1]["status"] == "duplicate"
    assert send(second_buf.getvalue())[1]["status"] == "stored"
    assert send(second_buf.getvalue())[1]["status"] == "duplicate"
    status, answer = send(first_buf.getvalue())
    assert (status, answer["problem"]) == (409, "replay")
    assert hq_reads(settings.post.id) == post_reads()
    with hq.hq_database.connection_context():
        assert hq.verify_chain(settings.post.id)[0]


def test_the_post_killed_while_building_a_batch(settings, db, hq_server):
    """`waypost sync push` SIGKILLed while it writes its batch file: nothing is marked, the next
    push makes the batch again, headquarters ends up with exactly the post's reads."""

    bench_data.fill(settings, 3000)
    spool = settings.data_dir / "sync"
    env = dict(
        os.environ,
        WAYPOST_STORAGE__DATA_DIR=str(settings.data_dir),
        WAYPOST_STORAGE__MIN_FREE_MB="0",
        WAYPOST_SYNC__HQ_URL=settings.sync.hq_url,
        WAYPOST_SYNC__BATCH_MAX_READS="3000",
        WAYPOST_CONFIG="",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "sync", "push"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (spool / "unacked.batch.part").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 3000
    if (spool / "unacked.batch.part").exists():  # caught while building (on a loaded machine it may
        assert not (spool / "unacked.batch").exists()  # have got as far as sending: also recoverable)
        assert hq_reads(settings.post.id) == {}
    big = settings.model_copy(update={"sync": settings.sync.model_copy(update={"batch_max_reads": 3000})})
    result = post.push(big)
    assert result.reads == 3000 and not (spool / "unacked.batch.part").exists()
    assert hq_reads(settings.post.id) == post_reads()
