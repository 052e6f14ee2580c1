"""Faults with real processes: headquarters killed (SIGKILL) between storing a batch and answering
for it; a batch build interrupted on the post."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from appliance.models import Outbox
from sync import hq, post
from tests.sync.conftest import _public, add_reads, hq_reads, post_reads


def start_hq(settings, hq_path, port, fault=None) -> subprocess.Popen:
    env = dict(os.environ, WAYPOST_STORAGE__DATA_DIR=str(settings.data_dir))
    env.pop("WAYPOST_HQ_FAULT", None)
    if fault:
        env["WAYPOST_HQ_FAULT"] = fault
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "hq", "serve", "--database", str(hq_path),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode())
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
        assert [b.status for b in hq.HQBatch.select().order_by(hq.HQBatch.id)] == ["stored", "duplicate", "stored"]
        assert hq.verify_chain(settings.post.id)[0]


def test_an_interrupted_build_is_discarded_and_made_again(settings, db, hq_server):
    add_reads(settings, 2)
    spool = settings.data_dir / "sync"
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "unacked.batch.part").write_bytes(b"\x1f\x8b half a batch")
    (spool / "unacked.batch").write_bytes(b"not even gzip")     # a torn rename cannot happen, but a bad disk can
    result = post.push(settings)
    assert result.reads == 2 and not (spool / "unacked.batch.part").exists()
    assert hq_reads(settings.post.id) == post_reads()


def test_two_pushes_at_once_are_refused_rather_than_interleaved(settings, db, hq_server):
    import fcntl
    add_reads(settings, 1)
    spool = settings.data_dir / "sync"
    spool.mkdir(parents=True, exist_ok=True)
    with open(spool / "push.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(post.SyncError, match="another push is running"):
            post.push(settings)
    assert post.push(settings).reads == 1
