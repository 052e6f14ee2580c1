"""Headquarters' post row under concurrent writers (PostgreSQL, real connections): re-enrolling a
post (as the hq role does on every run) while a batch of that post is being stored must not write
back the position it read before the batch committed."""

from __future__ import annotations

import io
import os
import threading
import time

import psycopg2
import pytest

from appliance import bundle
from sync import hq, post
from tests.sync.conftest import _public, add_reads, hq_reads, post_reads


def _wait(condition, what, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def _probe(target):
    return psycopg2.connect(target)


def _row_locked(conn, post_id) -> bool:
    """Whether another transaction holds the post's row (FOR UPDATE NOWAIT from a third connection)."""

    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM hq_post WHERE id = %s FOR UPDATE NOWAIT", (post_id,))
        return False
    except psycopg2.errors.LockNotAvailable:
        return True
    finally:
        conn.rollback()


def _someone_waits_on_a_lock(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        waiting = cur.fetchone()[0]
    conn.rollback()
    return waiting > 0


def test_enroll_while_a_batch_is_being_stored_keeps_the_batchs_position(settings, db, hq_server, hq_target):
    if "://" not in hq_target:
        pytest.skip("PostgreSQL's: on SQLite both take the database's write lock (BEGIN IMMEDIATE)")
    add_reads(settings, 2, seed=1)
    post.push(settings)
    add_reads(settings, 2, seed=2)
    key = bundle.post_key(settings)
    body = io.BytesIO()
    header = post.build_batch(settings, key, post.fetch_position(settings), body)
    data = body.getvalue()
    assert header["last_seq"] == 4 and len(data) > 4096

    # the batch arrives slowly, through a real pipe: ingest locks the post's row, stores the first
    # reads and waits for the rest of the body
    read_end, write_end = os.pipe()
    outcome, errors = {}, []

    def ingest():
        try:
            with os.fdopen(read_end, "rb", buffering=0) as stream, hq.hq_database.connection_context():
                outcome["o"] = hq.ingest(stream, len(data))
        except Exception as exc:  # reported below
            errors.append(exc)

    def enroll():
        try:
            with hq.hq_database.connection_context():
                hq.enroll(settings.post.id, "Main St (new key)", _public(settings))
        except Exception as exc:
            errors.append(exc)

    probe = _probe(hq_target)
    storing = threading.Thread(target=ingest)
    enrolling = threading.Thread(target=enroll)
    try:
        os.write(write_end, data[: len(data) // 2])
        storing.start()
        _wait(lambda: _row_locked(probe, settings.post.id), "the ingest holds the post's row")
        enrolling.start()
        _wait(lambda: _someone_waits_on_a_lock(probe), "the enrolment waits for the ingest")
        os.write(write_end, data[len(data) // 2 :])
    finally:
        os.close(write_end)
        storing.join(60)
        enrolling.join(60)
        probe.close()
    assert not errors, errors
    assert outcome["o"].status == "stored"

    with hq.hq_database.connection_context():
        row = hq.HQPost.get_by_id(settings.post.id)
    assert row.name == "Main St (new key)"
    assert (row.last_seq, row.chain_seq, row.chain_hash) == (4, header["chain"]["last_seq"], header["next"].chain_hash)
    # and the post goes on: the next push continues from there, not refused 'overlap'
    add_reads(settings, 1, seed=3)
    result = post.push(settings)
    assert result.reads == 1 and result.position.last_seq == 5
    assert hq_reads(settings.post.id) == post_reads()
