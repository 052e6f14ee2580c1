"""A post whose database was copied back from an older copy (README 'Rolling back', what it warns
against): headquarters holds more of the post than the post has. The post refuses to sync, marks
nothing sent, sends nothing, and says so; headquarters' copy and chain status stay as they were."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from appliance.models import Outbox, database
from sync import hq, post
from tests.sync.conftest import add_reads, hq_reads
from tests.sync.test_cli import run
from tests.sync.test_pull import pull_env  # noqa: F401  (fixture)


def _copy(settings) -> Path:
    """The operator's copy of the post's database (the service stopped), as it is now."""
    copy = Path(str(settings.db_path) + ".older")
    src = sqlite3.connect(str(settings.db_path))
    with sqlite3.connect(str(copy)) as dst:
        src.backup(dst)
    src.close()
    return copy


def _copy_back(settings, copy: Path) -> None:
    database.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(settings.db_path) + suffix).unlink(missing_ok=True)
    shutil.copy(copy, settings.db_path)
    database.connect()


def _marks() -> dict[int, bool]:
    return {o.seq: o.sent_at is not None for o in Outbox.select().order_by(Outbox.seq)}


def _hq_state(post_id):
    with hq.hq_database.connection_context():
        p = hq.HQPost.get_by_id(post_id)
        refusals = hq.HQBatch.select().where((hq.HQBatch.post_id == post_id) & (hq.HQBatch.status == "refused")).count()
        return (p.last_seq, p.chain_seq, p.chain_hash, p.chain_status), refusals


@pytest.mark.parametrize("after", [2, 12])
def test_a_post_restored_from_an_older_copy_refuses_to_sync_and_marks_nothing(settings, db, hq_server, after):
    """after=2: the post's seqs stay below headquarters' position; after=12: they pass it, and only
    the access record's hash at headquarters' position tells the histories apart."""
    add_reads(settings, 2, seed=1)
    post.push(settings)
    copy = _copy(settings)
    add_reads(settings, 4, seed=2)
    post.push(settings)
    held_before = hq_reads(settings.post.id)
    hq_before, refusals_before = _hq_state(settings.post.id)
    assert hq_before[:2] == (6, 7)

    _copy_back(settings, copy)
    new = add_reads(settings, after, seed=3)
    marks = _marks()
    assert not any(marks[s] for s in marks if s > 2)

    if after == 2:
        # headquarters holds seqs this post never issued: only a restore does that. The post
        # stops: nothing marked, nothing sent, headquarters' copy untouched and not called tampered
        with pytest.raises(post.Diverged) as exc:
            post.push(settings)
        message = str(exc.value)
        assert "restored from an older copy" in message and "Rolling back" in message
        assert "outbox up to seq 6" in message and "issued seqs only up to 4" in message
        assert "access log up to record 7" in message and "log ends at record 5" in message
        assert _hq_state(settings.post.id) == (hq_before, refusals_before)
        expected = "restored from an older copy"
    else:
        # the post's numbers have passed headquarters': only the record at headquarters' position
        # differs, as it would if the log had been rewritten. Headquarters cannot tell which, so
        # it is told (the batch is refused as a broken chain and kept on record); the post marks
        # nothing sent
        with pytest.raises(post.Refused) as exc:
            post.push(settings)
        assert exc.value.problem == "broken_chain"
        assert _hq_state(settings.post.id)[0][:3] == hq_before[:3]
        expected = "is not the one headquarters holds"
    assert _marks() == marks
    assert not any(r.uuid in hq_reads(settings.post.id) for r in new)
    assert hq_reads(settings.post.id) == held_before
    # the unsent reads are still unsent however often it is tried
    with pytest.raises(post.SyncError):
        post.push(settings)
    assert _marks() == marks

    # `waypost sync status` says it
    status = run(settings, "sync", "status")
    assert status.exit_code != 0, status.output
    assert expected in status.output and "headquarters holds outbox seq up to 6" in status.output
    assert "access log head" in status.output


def test_pull_from_a_restored_post_is_refused_by_the_post(settings, db, pull_env):  # noqa: F811
    on, url, key = pull_env
    add_reads(settings, 2, seed=1)
    assert hq.pull(settings.post.id, key).problem == ""
    copy = _copy(settings)
    add_reads(settings, 4, seed=2)
    assert hq.pull(settings.post.id, key).problem == ""
    _copy_back(settings, copy)
    add_reads(settings, 2, seed=3)
    marks = _marks()
    result = hq.pull(settings.post.id, key)
    assert "409" in result.problem and "restored from an older copy" in result.problem, result.problem
    assert _marks() == marks
    with hq.hq_database.connection_context():
        assert hq.HQPost.get_by_id(settings.post.id).chain_status == "verified"
