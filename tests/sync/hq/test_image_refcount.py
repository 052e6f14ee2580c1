"""Headquarters' retention counts every reference to an image (issue 18, finding 2): it kept an
image only if a read captured within 60 s used it, so a frozen camera or a looping video source
(byte-identical crops and frames minutes apart) lost the images of the reads it kept. A real post
pushes real batches to headquarters (SQLite and PostgreSQL); `waypost hq retention` runs through
click as headquarters' administrator."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg2
import pytest

from appliance import config, store
from appliance import db as dbmod
from appliance.bootstrap import bootstrap
from appliance.models import utcnow
from sync import hq
from sync.hq import search as hq_search
from tests.conftest import operator_env
from tests.sync.hq import test_retention as rt


@pytest.fixture
def hq_env(tmp_path, settings, db):
    env = rt._hq_env(tmp_path / "hq-data")
    hq_settings = config.load(None, environ=env)
    bootstrap(hq_settings, create_admin=False)
    env = {**env, **operator_env(hq_settings, "hq.admin", "admin")}
    dbmod.open_database(settings)
    return env


def _pass(settings, at: dt.datetime, pictures, plate: str) -> None:
    """One pass of the looping source: a read per (crop, frame), captured a second apart from `at`."""
    evidence = store.EvidenceStore(settings)
    rt.on_post(settings)
    with dbmod.connection():
        for i, (crop, frame) in enumerate(pictures):
            new = store.NewRead(
                plate_raw=f"{plate}{i}",
                plate=f"{plate}{i}",
                confidence=0.9,
                captured_at=at + dt.timedelta(seconds=i),
                alternatives=[],
            )
            store.save_read(settings, evidence, new, crop, frame)


def _image_refs() -> set[tuple[int, str]]:
    with hq.hq_database.connection_context():
        return set(hq.hq_database.execute_sql("SELECT read_id, sha256 FROM hq_read_image"))


def test_identical_images_95_s_apart_stay_with_the_reads_kept(settings, db, hq_server, hq_target, hq_env):
    """Exactly the reported case: two passes 95 s apart, 8 reads each, the same crop and frame
    bytes per pair; the retention cutoff (30 days) falls between them. Purging the older 8 used to
    delete all 16 images of the 8 kept reads."""
    rng = np.random.default_rng(18)
    pictures = [
        (rng.integers(0, 256, (30, 80, 3), dtype=np.uint8), rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
        for _ in range(8)
    ]
    old_at = utcnow() - dt.timedelta(days=30, seconds=60)  # 60 s past the cutoff; the second pass 35 s before it
    _pass(settings, old_at, pictures, "7OLD")
    _pass(settings, old_at + dt.timedelta(seconds=95), pictures, "7NEW")
    # and a read whose images nothing else uses, a year old
    only = [(rng.integers(0, 256, (30, 80, 3), dtype=np.uint8), rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))]
    _pass(settings, utcnow() - dt.timedelta(days=400), only, "7ONLY")
    pushed = 0
    while sent := rt.push(settings).reads:
        pushed += sent
    assert pushed == 17
    with hq.hq_database.connection_context():
        reads = {r.plate: r for r in hq.HQRead.select()}
        shas = {plate: {im["sha256"] for im in r.data["images"]} for plate, r in reads.items()}
    assert len(reads) == 17
    for i in range(8):
        assert shas[f"7OLD{i}"] == shas[f"7NEW{i}"] and len(shas[f"7NEW{i}"]) == 2
    kept_shas = set().union(*(shas[f"7NEW{i}"] for i in range(8)))
    assert len(kept_shas) == 16 and rt.counts()["hq_image"] == 18
    # ingest recorded every image of every read it stored
    assert _image_refs() == {(r.id, sha) for plate, r in reads.items() for sha in shas[plate]}

    out = rt.hq_cli(hq_env, hq_target, "retention")
    assert out.exit_code == 0, out.output
    assert "purged 9 read(s)" in out.output and "2 image(s)" in out.output, out.output
    with hq.hq_database.connection_context():
        left = {r.sha256 for r in hq.HQImage.select(hq.HQImage.sha256)}
        kept = list(hq.HQRead.select())
        assert {r.plate for r in kept} == {f"7NEW{i}" for i in range(8)}
        for read in kept:
            for kind in ("crop", "frame"):
                meta, data = hq_search.image(read, kind)
                assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert left == kept_shas
    assert not (shas["7ONLY0"] & left)
    # the purged reads' references went with them
    assert {read_id for read_id, _ in _image_refs()} == {r.id for r in kept}


def _waiting_on_locks(target: str) -> int:
    with psycopg2.connect(target) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cur.fetchone()[0]


def _until(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_purge_racing_a_batch_that_uses_its_images_again_keeps_them(settings, db, hq_server, hq_target, hq_env):
    """PostgreSQL runs a purge and a batch at once (SQLite has one writer). A batch whose reads
    use the same bytes as reads being purged inserted its images with ON CONFLICT DO NOTHING, which
    locks nothing: a purge that looked for references before the batch committed deleted the images
    the batch's reads were about to name. Here the batch is held just before it commits (a lock on
    hq_post, which it updates last), the purge runs in its own process meanwhile, and every image
    of the reads kept must be there once both are done."""
    if not hq_target.startswith("postgresql"):
        pytest.skip("SQLite takes one writer at a time (BEGIN IMMEDIATE): the two cannot interleave")
    rng = np.random.default_rng(19)
    pictures = [
        (rng.integers(0, 256, (30, 80, 3), dtype=np.uint8), rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
        for _ in range(4)
    ]
    _pass(settings, utcnow() - dt.timedelta(days=31), pictures, "7OLD")
    while rt.push(settings).reads:
        pass
    _pass(settings, utcnow() - dt.timedelta(days=1), pictures, "7NEW")  # the same bytes, not sent yet

    blocker = psycopg2.connect(hq_target)
    pushed: list = []
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE hq_post IN SHARE MODE")  # lets the batch in, holds its last UPDATE
        sender = threading.Thread(target=lambda: pushed.append(rt.push(settings)))
        sender.start()
        assert _until(lambda: _waiting_on_locks(hq_target) >= 1), "the batch never reached its last update"
        purge = subprocess.Popen(
            [sys.executable, "-m", "appliance", "hq", "retention", "--database", hq_target],
            env={**os.environ, **hq_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # the purge either finishes (deleting the images: the bug) or waits for the batch's images
        _until(lambda: purge.poll() is not None or _waiting_on_locks(hq_target) >= 2)
    finally:
        blocker.rollback()
        blocker.close()
    sender.join(60)
    out, _ = purge.communicate(timeout=60)
    assert purge.returncode == 0, out
    assert pushed and pushed[0].reads == 4
    with hq.hq_database.connection_context():
        kept = list(hq.HQRead.select())
        assert {r.plate for r in kept} == {f"7NEW{i}" for i in range(4)}, out
        for read in kept:
            for kind in ("crop", "frame"):
                found = hq_search.image(read, kind)
                assert found is not None, f"the {kind} of {read.plate} was deleted by the purge"
                assert hashlib.sha256(found[1]).hexdigest() == found[0]["sha256"]
