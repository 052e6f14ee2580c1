"""A re-imaged post rejoins under its old id (issue 18, finding 5): a fresh data directory and a
new key made every push refused ("restored from an older copy", or a signature that does not
verify) while headquarters still showed the post verified. `waypost hq rebase` closes the post's
chain copy as a segment and opens a new one for the new key; both verify, nothing is lost or held
twice. A real post pushes real signed batches to headquarters (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from appliance import bundle
from appliance import db as dbmod
from appliance.bootstrap import bootstrap
from appliance.models import AccessRecord
from sync import hq, post
from sync.hq import posts as hq_posts
from sync.hq import search as hq_search
from tests.conftest import OPERATOR_PASSWORD, make_settings
from tests.sync.conftest import _public, add_reads
from tests.sync.hq.test_rename import hq_cli, push  # noqa: F401 (hq_cli: the fixture)
from tests.web.conftest import sign_in
from web.hq import create_hq_app


def reimaged(settings):
    """The same post (post.id, headquarters) on a fresh data directory: a new database and key."""
    fresh = make_settings(
        settings.data_dir.parent / "reimaged",
        post__id=settings.post.id,
        sync__hq_url=settings.sync.hq_url,
        sync__batch_max_reads=2,
    )
    bootstrap(fresh, create_admin=False)
    bundle.post_key(fresh)
    return fresh


def held(post_id: str) -> dict:
    with hq.hq_database.connection_context():
        return {
            "reads": sorted((r.segment, r.seq, r.uuid) for r in hq.HQRead.select().where(hq.HQRead.post_id == post_id)),
            "records": sorted(
                (r.segment, r.seq) for r in hq.HQAccessRecord.select().where(hq.HQAccessRecord.post_id == post_id)
            ),
        }


def test_a_reimaged_post_is_rebased_and_both_segments_verify(settings, db, hq_server, hq_cli, hq_target):  # noqa: F811
    post_id = settings.post.id
    old_reads = add_reads(settings, 4)
    assert push(settings).reads == 4
    before = held(post_id)
    assert {seg for seg, *_ in before["reads"]} == {1} and len(before["records"]) >= 4

    fresh = reimaged(settings)
    dbmod.open_database(fresh)
    with dbmod.connection():
        new_reads = add_reads(fresh, 3, seed=5)
    # before the re-base: refused, and told what to do
    with pytest.raises(post.Refused) as refused:
        push(fresh)
    assert "waypost hq rebase" in refused.value.message, refused.value
    assert held(post_id) == before

    key = fresh.data_dir.parent / "reimaged.pub"
    key.write_bytes(_public(fresh))
    out = hq_cli("rebase", post_id, "--public-key", str(key), "--reason", "SD card replaced (work order 207)")
    assert "closed segment 1" in out and "segment 2 opened" in out and "verified" in out

    assert push(fresh).reads == 3
    after = held(post_id)
    assert after["reads"][:4] == before["reads"] and after["records"][: len(before["records"])] == before["records"]
    new = [r for r in after["reads"] if r[0] == 2]
    assert [seq for _, seq, _ in new] == [1, 2, 3]  # the new segment's seqs start again
    assert {u for *_, u in after["reads"]} == {r.uuid for r in old_reads + new_reads}
    assert len(after["reads"]) == 7
    new_records = [seq for seg, seq in after["records"] if seg == 2]
    assert new_records[0] == 1 and new_records == list(range(1, len(new_records) + 1))
    assert push(fresh).reads == 0  # nothing twice

    with hq.hq_database.connection_context():
        ok, bad, message = hq.verify_chain(post_id)
        assert ok and bad is None and "segment 1:" in message and "segment 2:" in message, message
        p = hq.HQPost.get_by_id(post_id)
        assert p.segment == 2 and p.chain_status == "verified" and p.last_seq == 3
        hq_search.catch_up(full=True)
        plates = {h.read.plate for h in hq_search.search(hq_search.Query("7ABC*", mode="wildcard"), limit=50).hits}
    assert plates == {r.plate for r in old_reads + new_reads}  # the closed segment stays searchable

    status = hq_cli("status")
    assert "segment 1 (closed" in status and "SD card replaced" in status and "segment 2 (current)" in status
    assert "BROKEN" not in status

    dbmod.open_database(hq_cli.settings)
    with dbmod.connection():
        (record,) = AccessRecord.select().where(AccessRecord.action == "posts.rebase")
    details = json.loads(record.details)
    assert record.username == "capt.ruiz" and details["closed_segment"] == 1 and details["segment"] == 2
    assert details["chain_status"] == "verified" and details["last_seq"] == 4
    assert details["reason"] == "SD card replaced (work order 207)"

    # the Posts page shows the closed segment beside the current one
    client = create_hq_app(hq_target, settings=hq_cli.settings).test_client()
    sign_in(client, "capt.ruiz", password=OPERATOR_PASSWORD)
    page = client.get("/hq").get_data(as_text=True)
    assert "segment 1 (key" in page and "SD card replaced (work order 207)" in page, page[-2000:]


def test_a_rebase_refuses_a_key_another_post_or_the_post_already_holds(settings, db, hq_server, hq_cli):  # noqa: F811
    own = settings.data_dir / "own.pub"
    own.write_bytes(_public(settings))
    out = hq_cli("rebase", settings.post.id, "--public-key", str(own), "--reason", "re-imaged", code=1)
    assert "already had" in out
    other = make_settings(settings.data_dir.parent / "other", post__id="post-g")
    key = settings.data_dir / "other.pub"
    key.write_bytes(_public(other))
    with hq.hq_database.connection_context():
        hq.enroll("post-g", "Post G", key.read_bytes())
    out = hq_cli("rebase", settings.post.id, "--public-key", str(key), "--reason", "re-imaged", code=1)
    assert "already enrolled for post post-g" in out
    with hq.hq_database.connection_context():
        assert hq.HQPost.get_by_id(settings.post.id).segment == 1


def test_frames_the_wiped_post_never_sent_are_not_awaited_after_a_rebase(settings, db, hq_server, hq_cli):  # noqa: F811
    """The old data directory is gone with its frames: the frames its reads named and had not sent
    (the second lane waits for the reads) can never come. The re-base says how many, and
    headquarters stops counting them (they were counted as "to come" for ever)."""
    post_id = settings.post.id
    add_reads(settings, 4)
    dbmod.open_database(settings)
    with dbmod.connection():
        sent = post.push(settings, max_batches=2)  # the reads, two a batch; their frames not yet
    assert sent.reads == 4
    with hq.hq_database.connection_context():
        assert hq_posts.frames_to_come(post_id) == 4

    fresh = reimaged(settings)
    key = fresh.data_dir.parent / "reimaged.pub"
    key.write_bytes(_public(fresh))
    out = hq_cli("rebase", post_id, "--public-key", str(key), "--reason", "SD card replaced (work order 208)")
    assert "4 frame(s) the old post never sent will not come" in out, out
    with hq.hq_database.connection_context():
        assert hq_posts.frames_to_come(post_id) == 0
    dbmod.open_database(hq_cli.settings)
    with dbmod.connection():
        (record,) = AccessRecord.select().where(AccessRecord.action == "posts.rebase")
    assert json.loads(record.details)["frames_never_sent"] == 4

    dbmod.open_database(fresh)
    with dbmod.connection():
        add_reads(fresh, 2, seed=7)
    assert push(fresh).reads == 2  # and the new segment's frames are awaited, then come
    with hq.hq_database.connection_context():
        assert hq_posts.frames_to_come(post_id) == 0
