"""A post whose database was copied back from an older copy (README 'Rolling back', what it warns
against): headquarters holds more of the post than the post has. The post refuses to sync, marks
nothing sent, sends nothing, and says so; headquarters' copy and chain status stay as they were."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from appliance import audit
from appliance.models import Outbox, database
from sync import hq, post
from tests.sync.conftest import add_reads, hq_reads
from tests.sync.hq.test_pull import pull_env  # noqa: F401  (fixture)
from tests.sync.test_cli import run


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
    """after=2: the post's seqs stay below headquarters' position; after=12: they pass it, and the
    access record's hash and the read headquarters holds at its position tell the histories apart."""
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

    # only a restore does this: the post stops, nothing marked, nothing sent, headquarters' copy
    # untouched and not called tampered
    with pytest.raises(post.Diverged) as exc:
        post.push(settings)
    message = str(exc.value)
    assert "restored from an older copy" in message and "Rolling back" in message
    assert "access log up to record 7" in message or "access record 7 at headquarters" in message
    if after == 2:
        # headquarters holds seqs this post never issued
        assert "outbox up to seq 6" in message and "issued seqs only up to 4" in message
        assert "log ends at record 5" in message
    else:
        # the post's numbers have passed headquarters': seq 6 is another read here
        assert "under outbox seq 6" in message and Outbox.get_by_id(6).object_id in message
    assert _hq_state(settings.post.id) == (hq_before, refusals_before)
    expected = "restored from an older copy"
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
    _on, _url, key = pull_env
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


def _restored_without_records(settings, new: int):
    """The gap an access log cannot show: the post is backed up, pushes more, is restored from the
    copy and captures `new` reads (the pipeline writes no access record for a stored read) before
    it pushes again. Its seqs 3..6 now belong to other reads than headquarters' 3..6, and its log
    is the one headquarters holds. Returns (the new reads, the post's marks, headquarters' reads)."""
    add_reads(settings, 2, seed=1, actor=False)
    post.push(settings)
    copy = _copy(settings)
    add_reads(settings, 4, seed=2, actor=False)
    post.push(settings)
    assert _hq_state(settings.post.id)[0][0] == 6
    held = hq_reads(settings.post.id)
    _copy_back(settings, copy)
    reads = add_reads(settings, new, seed=3, actor=False)
    return reads, _marks(), held


def test_a_restored_post_whose_log_shows_nothing_is_told_by_the_read_at_headquarters_position(settings, db, hq_server):
    new, marks, held = _restored_without_records(settings, 6)  # seqs 3..8, past headquarters' 6
    hq_before, refusals_before = _hq_state(settings.post.id)
    assert hq_before[1:3] == audit.head()  # the log tells nothing apart

    # without the read at headquarters' position, seqs 3..6 would be marked sent (and purged in
    # time) while headquarters holds other reads under them
    with pytest.raises(post.Diverged) as exc:
        post.push(settings)
    pos = post.fetch_position(settings)
    ours = Outbox.get_by_id(6).object_id
    assert pos.last_read_seq == 6 and pos.last_read_uuid in held and ours != pos.last_read_uuid
    message = str(exc.value)
    assert "restored from an older copy" in message and "Rolling back" in message
    assert f"read {pos.last_read_uuid} under outbox seq 6" in message and ours in message
    assert _marks() == marks and [s for s, sent in marks.items() if sent] == [1, 2]  # sent before the copy
    assert hq_reads(settings.post.id) == held and not any(r.uuid in held for r in new)
    assert _hq_state(settings.post.id) == (hq_before, refusals_before)

    status = run(settings, "sync", "status")
    assert status.exit_code != 0 and "under outbox seq 6" in status.output, status.output

    # an older headquarters names no read: the post cannot tell, and behaves as before
    older = post.Position.of({"last_seq": pos.last_seq, "chain_seq": pos.chain_seq, "chain_hash": pos.chain_hash})
    assert older.last_read_seq == 0 and post.divergence(older) is None


def test_pull_from_a_restored_post_whose_log_shows_nothing_is_refused(settings, db, pull_env):  # noqa: F811
    _on, _url, key = pull_env
    add_reads(settings, 2, seed=1, actor=False)
    assert hq.pull(settings.post.id, key).problem == ""
    copy = _copy(settings)
    add_reads(settings, 4, seed=2, actor=False)
    assert hq.pull(settings.post.id, key).problem == ""
    held = hq_reads(settings.post.id)
    _copy_back(settings, copy)
    new = add_reads(settings, 6, seed=3, actor=False)
    marks = _marks()
    result = hq.pull(settings.post.id, key)
    assert "409" in result.problem and "under outbox seq 6" in result.problem, result.problem
    assert _marks() == marks
    assert hq_reads(settings.post.id) == held and not any(r.uuid in held for r in new)
