"""Push over real HTTP to a real headquarters: exactly once, duplicates acknowledged, bad batches
refused with the problem named and nothing stored, a rewritten access log reported, a restored
headquarters caught up."""

from __future__ import annotations

import gzip
import io

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import alerts, audit, bundle
from appliance.db import write
from appliance.models import Evidence, Outbox, Read
from sync import hq, post
from tests.sync.conftest import (
    HQServer,
    _public,
    add_reads,
    alert_on,
    hq_reads,
    post_reads,
    push_headers,
    restore,
    send_push,
    snapshot,
)


def hq_counts(post_id):
    with hq.hq_database.connection_context():
        p = hq.HQPost.get_by_id(post_id)
        return {
            "reads": hq.HQRead.select().where(hq.HQRead.post_id == post_id).count(),
            "images": hq.HQImage.select().count(),
            "records": hq.HQAccessRecord.select().where(hq.HQAccessRecord.post_id == post_id).count(),
            "last_seq": p.last_seq,
            "chain_seq": p.chain_seq,
            "chain_hash": p.chain_hash,
        }


def batch_log():
    with hq.hq_database.connection_context():
        return [(b.status, b.problem) for b in hq.HQBatch.select().order_by(hq.HQBatch.id)]


def assert_hq_holds_the_post(settings):
    """Same reads by id, same images by content, every access record, the chain verifying."""
    assert hq_reads(settings.post.id) == post_reads()
    with hq.hq_database.connection_context():
        held = {
            r.uuid: sorted(im["sha256"] for im in r.data["images"])
            for r in hq.HQRead.select().where(hq.HQRead.post_id == settings.post.id)
        }
        ok, bad, message = hq.verify_chain(settings.post.id)
        records = {
            r.seq: r.hash for r in hq.HQAccessRecord.select().where(hq.HQAccessRecord.post_id == settings.post.id)
        }
    on_post = {}
    for ev in Evidence.select(Evidence, Read).join(Read):
        on_post.setdefault(ev.read.uuid, []).append(ev.sha256)
    assert held == {u: sorted(s) for u, s in on_post.items()}
    assert ok, message
    assert records == {r.seq: r.hash for r in audit.AccessRecord.select()}


def test_push_delivers_reads_images_and_records_exactly_once(settings, db, hq_server):
    add_reads(settings, 5)
    result = post.push(settings)
    # three batches of reads (batch_max_reads is 2), then one of their frames (the second lane)
    assert (result.batches, result.reads, result.duplicates) == (4, 5, 0)
    assert_hq_holds_the_post(settings)
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 0
    counts = hq_counts(settings.post.id)
    assert counts["images"] == 10 and counts["last_seq"] == Outbox.select().count()
    again = post.push(settings)
    assert (again.batches, again.duplicates) == (0, 0)
    assert hq_counts(settings.post.id) == counts
    add_reads(settings, 1, seed=1)
    assert post.push(settings).reads == 1
    assert_hq_holds_the_post(settings)


def _built(settings, pos=None, key=None):
    buf = io.BytesIO()
    header = post.build_batch(
        settings, key or bundle.post_key(settings), pos or post.Position(0, 0, audit.GENESIS), buf
    )
    return header, buf.getvalue()


def _send(settings, body: bytes):
    return post._request(settings, "POST", "/hq/v1/batches", body=body, length=len(body))


def test_the_same_batch_twice_is_acknowledged_and_stored_once(settings, db, hq_server):
    add_reads(settings, 2)
    header, body = _built(settings)
    assert _send(settings, body)[1]["status"] == "stored"
    before = hq_counts(settings.post.id)
    status, answer = _send(settings, body)
    assert (status, answer["status"]) == (200, "duplicate")
    assert answer["position"]["last_seq"] == header["last_seq"]
    # the same range built again (a new batch id, as after a lost answer): also a duplicate
    _, rebuilt = _built(settings)
    assert _send(settings, rebuilt)[1]["status"] == "duplicate"
    assert hq_counts(settings.post.id) == before
    assert batch_log() == [("stored", ""), ("duplicate", ""), ("duplicate", "")]
    # the post learns from the position that the range is held, and marks it
    assert post.push(settings).batches == 0
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 0


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


def _bad_batch(kind, settings):
    """(body, expected problem) for each kind of bad batch. Runs with one batch already stored."""
    held = post.fetch_position(settings)
    if kind == "bad_signature":
        return _built(settings, held, key=Ed25519PrivateKey.generate())[1]
    if kind == "unknown_post":
        return _built(_post_99(settings), held)[1]
    if kind == "gap":
        return _built(settings, post.Position(held.last_seq + 1, held.chain_seq, held.chain_hash))[1]
    if kind == "overlap":
        return _built(settings, post.Position(held.last_seq - 1, held.chain_seq, held.chain_hash))[1]
    if kind == "broken_chain":
        # the post's log rewritten after headquarters got it: record 1 changed and the chain re-hashed
        rows = list(audit.export_rows())
        rows[0]["username"] = "someone-else"
        sealed = list(audit.sealed([tuple(r[c] for c in audit.COLUMNS[:12]) for r in rows], audit.GENESIS))
        with db_write():
            for row in sealed:
                audit.database.execute_sql(
                    "UPDATE access_record SET username = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                    (row[2], row[12], row[13], row[0]),
                )
        return _built(settings, held)[1]
    if kind == "malformed":
        return _gzip(b'{"t":"header","format":"waypost-batch/1"}\nnot json\n')
    if kind == "oversized":
        return b"\0" * (2 * 1024 * 1024)
    if kind == "replay":
        first = _built(settings, held)
        assert _send(settings, first[1])[1]["status"] == "stored"
        add_reads(settings, 1, seed=3)
        assert post.push(settings).batches == 2  # the read, then its frame (the second lane)
        return first[1]
    raise AssertionError(kind)


def _post_99(settings):
    """The same post (its key) calling itself post-99, which headquarters has not enrolled."""
    return settings.model_copy(update={"post": settings.post.model_copy(update={"id": "post-99"})})


def db_write():

    return write()


@pytest.mark.parametrize(
    "kind,status,answered",
    [
        ("bad_signature", 403, "bad_signature"),
        # answered as a bad signature (which posts are enrolled is nobody's business); logged as what it is
        ("unknown_post", 403, "bad_signature"),
        ("gap", 409, "gap"),
        ("overlap", 409, "overlap"),
        ("broken_chain", 409, "broken_chain"),
        ("malformed", 400, "malformed"),
        ("oversized", 413, "oversized"),
        ("replay", 409, "replay"),
    ],
)
def test_bad_batches_are_refused_naming_the_problem_and_change_nothing(
    settings, db, hq_target, hq_port, kind, status, answered
):

    server = HQServer(hq_target, hq_port, max_batch_bytes=1024 * 1024).start()
    try:
        with hq.hq_database.connection_context():
            hq.enroll(settings.post.id, "Test post", _public(settings))
        add_reads(settings, 3)
        post.push(settings, max_batches=1)
        add_reads(settings, 2, seed=2)
        body = _bad_batch(kind, settings)
        before, log_before = hq_counts(settings.post.id), batch_log()
        if kind in ("malformed", "oversized"):  # no batch the post's client would sign: signed by hand
            got_status, answer = send_push(hq_port, body, push_headers(settings, body))
        else:
            got_status, answer = _send(_post_99(settings) if kind == "unknown_post" else settings, body)
        assert (got_status, answer["status"], answer["problem"]) == (status, "refused", answered)
        assert answer["message"]
        assert hq_counts(settings.post.id) == before
        assert batch_log() == log_before + [("refused", kind)]
    finally:
        server.stop()


def test_a_rewritten_access_log_is_reported_at_headquarters_after_the_next_sync(settings, db, hq_server):
    add_reads(settings, 3)
    post.push(settings)
    rows = list(audit.export_rows())
    rows[1]["details"] = '{"plate":"OTHER"}'
    sealed = list(audit.sealed([tuple(r[c] for c in audit.COLUMNS[:12]) for r in rows[1:]], rows[0]["hash"]))
    with db_write():
        for row in sealed:
            audit.database.execute_sql(
                "UPDATE access_record SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (row[11], row[12], row[13], row[0]),
            )
    assert audit.verify().ok  # consistent on the post: only headquarters' copy shows it
    add_reads(settings, 1, seed=1)
    before = hq_counts(settings.post.id)
    with pytest.raises(post.Refused) as refused:
        post.push(settings)
    assert refused.value.problem == "broken_chain" and "as headquarters holds it" in refused.value.message
    assert hq_counts(settings.post.id) == before
    with hq.hq_database.connection_context():
        row = hq.status()[0]
    assert row["chain_status"] == "broken" and row["first_bad_seq"] == len(rows) + 1
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 1


def test_a_record_altered_before_it_was_sent_is_refused(settings, db, hq_server):
    add_reads(settings, 2)
    with db_write():
        audit.database.execute_sql("UPDATE access_record SET username = 'x' WHERE seq = 2")
    with pytest.raises(post.Refused) as refused:
        post.push(settings)
    assert refused.value.problem == "broken_chain" and "record 2" in refused.value.message
    assert hq_counts(settings.post.id)["reads"] == 0


def test_the_post_resends_what_a_restored_headquarters_lost(settings, db, hq_server, hq_target):
    add_reads(settings, 3)
    post.push(settings)
    hq_server.stop()
    backup = snapshot(hq_target)
    hq_server.start()
    add_reads(settings, 3, seed=1)
    post.push(settings)
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 0
    hq_server.stop()
    restore(hq_target, backup)
    hq_server.start()
    assert len(hq_reads(settings.post.id)) == 3
    result = post.push(settings)
    assert result.reads == 3 and any("sent again" in n for n in result.notes)
    assert_hq_holds_the_post(settings)
    assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 0


def test_backoff_is_capped_with_jitter():
    assert post.backoff_s(1, rng=lambda: 1.0) == 5.0
    assert post.backoff_s(3, rng=lambda: 0.0) == 10.0
    assert post.backoff_s(50, cap_s=900, rng=lambda: 1.0) == 900


def test_an_alert_confirmed_after_its_read_was_sent_reaches_headquarters(settings, db, hq_server):
    read = add_reads(settings, 1)[0]
    alert = alert_on(read)
    post.push(settings)

    def held_alert():
        with hq.hq_database.connection_context():
            return hq.HQAlert.get((hq.HQAlert.post_id == settings.post.id) & (hq.HQAlert.alert_id == alert.id)).data

    assert held_alert()["status"] == "unconfirmed" and held_alert()["read_uuid"] == read.uuid
    officer = audit.Actor("officer.one", settings.post.agency, "local")
    alerts.confirm(
        officer,
        alert.id,
        outcome="confirmed",
        visual_compared=True,
        clets_verified=True,
        note="",
        purpose=audit.Purpose(settings.purpose_codes()[0], "2026-00123"),
    )
    assert post.push(settings).batches == 1
    data = held_alert()
    assert data["status"] == "confirmed" and [c["username"] for c in data["confirmations"]] == ["officer.one"]
    assert post.push(settings).batches == 0  # nothing more to say
    assert_hq_holds_the_post(settings)


def test_a_batch_says_where_headquarters_will_stand_once_it_is_stored(settings, db, hq_server):
    """header["next"] is the position headquarters answers with: the next batch can be built
    while this one is being stored."""
    add_reads(settings, 3)
    key = bundle.post_key(settings)
    pos = post.fetch_position(settings)
    for _ in range(2):
        spooled = settings.data_dir / "sync" / "one.batch"
        spooled.parent.mkdir(parents=True, exist_ok=True)
        with open(spooled, "wb") as f:
            header = post.build_batch(settings, key, pos, f)
        status, answer = post._send(settings, spooled)
        assert status == 200 and answer["status"] == "stored"
        pos = post.Position.of(answer["position"])
        assert header["next"] == pos
    assert pos.last_seq == 3 and pos.chain_seq == header["chain"]["last_seq"] > 0  # batches of 2 reads, then 1


def test_a_batch_built_ahead_is_used_only_from_the_position_it_was_built_for(settings, db):
    add_reads(settings, 3)
    key = bundle.post_key(settings)
    spool = settings.data_dir / "sync"
    spool.mkdir(parents=True, exist_ok=True)
    first = post.build_batch(settings, key, post.Position(0, 0, audit.GENESIS), io.BytesIO())
    unacked, ahead_part = spool / "unacked.batch", spool / "next.batch.part"

    elsewhere = post.Position(0, 0, audit.GENESIS)  # headquarters answered otherwise
    assert post._Ahead(settings, key, first["next"], ahead_part).take(elsewhere, unacked) is None
    assert not ahead_part.exists() and not unacked.exists()

    taken = post._Ahead(settings, key, first["next"], ahead_part).take(first["next"], unacked)
    assert taken is not None and taken["first_seq"] == first["last_seq"] + 1
    assert not ahead_part.exists() and post._header_of(unacked)["batch"] == taken["batch"]
