"""Legal holds placed at a post reach headquarters with its batches, on SQLite and on the private
PostgreSQL: a real post pushes (or headquarters pulls) real signed batches over HTTP on 127.0.0.1;
headquarters' retention and `waypost hq hold ...` run through click with its own configuration."""

from __future__ import annotations

import base64
import datetime as dt
import io

import pytest
from click.testing import CliRunner

from appliance import audit, bundle, holds, search, store
from appliance import db as dbmod
from appliance.cli import main
from appliance.db import write
from appliance.models import Outbox, Read, utcnow
from sync import hq, post, protocol
from sync.hq.models import HQLegalHold, HQLegalHoldRead
from tests.conftest import operator_env
from tests.sync import test_cli
from tests.sync.conftest import _public, restore, snapshot
from tests.sync.hq import test_retention as test_hq_retention
from tests.sync.hq.test_retention import aged_reads, held_uuids, hq_cli, on_post, push
from web import create_app
from web.server import WebServer

OFFICER = audit.Actor("officer.lee", "Demo Police Department", "10.0.0.9")
ADMIN = audit.Actor("admin.ray", "Demo Police Department", "10.0.0.2")
REASON = "Vehicle seen leaving the Main St robbery"

hq_env = test_hq_retention.hq_env  # headquarters' configuration and accounts database (a fixture)


def place_query(settings, plate, mode="exact"):
    """A hold at the post on what a plate search finds in the last 500 days."""
    on_post(settings)
    with dbmod.connection():
        query = search.Query(plate, mode, since=utcnow() - dt.timedelta(days=500), until=utcnow())
        return holds.place_on_query(settings, OFFICER, query, "CRIME-INV", "26-004512", REASON)


def place_read(settings, read):
    on_post(settings)
    with dbmod.connection():
        return holds.place_on_read(settings, OFFICER, read.id, "CRIME-INV", "26-004513", REASON)


def release(settings, hold):
    on_post(settings)
    with dbmod.connection():
        return holds.release(ADMIN, hold.id, "Case closed, no charges filed")


def hq_holds_of(post_id) -> dict[int | None, HQLegalHold]:
    """The post's holds as headquarters holds them, by their id at the post."""
    with hq.hq_database.connection_context():
        return {h.origin_hold_id: h for h in HQLegalHold.select().where(HQLegalHold.post_id == post_id)}


def retention(env, target) -> str:
    out = hq_cli(env, target, "retention")
    assert out.exit_code == 0, out.output
    return out.output


def test_a_post_hold_survives_hq_retention_until_released_at_the_post(settings, db, hq_server, hq_target, hq_env):
    reads = aged_reads(settings, [400, 400, 400], seed=11)  # plates 7ABC110, 7ABC111, 7ABC112
    by_plate = place_query(settings, reads[0].plate)
    one_read = place_read(settings, reads[2])
    pushed = push(settings)
    assert (pushed.reads, pushed.holds) == (3, 2)

    at_hq = hq_holds_of(settings.post.id)
    assert set(at_hq) == {by_plate.id, one_read.id}
    copy = at_hq[by_plate.id]
    assert (copy.plate, copy.mode, copy.case_number, copy.purpose_code, copy.reason, copy.placed_by) == (
        reads[0].plate,
        "exact",
        "26-004512",
        "CRIME-INV",
        REASON,
        "officer.lee",
    )
    assert copy.active and copy.origin == f"post {settings.post.id}"
    with hq.hq_database.connection_context():
        frozen = {(r.hold_id, r.read_uuid) for r in HQLegalHoldRead.select()}
    assert frozen == {(copy.id, reads[0].uuid), (at_hq[one_read.id].id, reads[2].uuid)}
    listed = hq_cli(hq_env, hq_target, "hold", "list")
    assert listed.exit_code == 0, listed.output
    assert f"placed at post {settings.post.id} (its hold {by_plate.id}; released there only)" in listed.output

    # the read no hold covers goes; the two held ones stay
    out = retention(hq_env, hq_target)
    assert "purged 1 read(s)" in out and "kept under legal hold: 2 read(s)" in out, out
    assert held_uuids() == {reads[0].uuid, reads[2].uuid}

    # headquarters cannot release a post's hold
    refused = hq_cli(hq_env, hq_target, "hold", "release", str(copy.id), "--reason", "Case closed at headquarters")
    assert refused.exit_code != 0
    assert (
        f"hold {copy.id} was placed at post {settings.post.id} (its hold {by_plate.id} there) and only that "
        "post can release it"
    ) in refused.output, refused.output
    assert hq_holds_of(settings.post.id)[by_plate.id].active

    # released at the post: the next batch carries the release, and the next run purges the read
    release(settings, by_plate)
    pushed = push(settings)
    assert (pushed.batches, pushed.reads, pushed.holds) == (1, 0, 1)
    released = hq_holds_of(settings.post.id)[by_plate.id]
    assert not released.active and released.released_by == "admin.ray"
    assert released.release_reason == "Case closed, no charges filed"
    out = retention(hq_env, hq_target)
    assert "purged 1 read(s)" in out and "kept under legal hold: 1 read(s)" in out, out
    assert held_uuids() == {reads[2].uuid}
    again = hq_cli(hq_env, hq_target, "hold", "list", "--active")
    assert f"its hold {one_read.id};" in again.output and f"its hold {by_plate.id};" not in again.output


def test_a_hold_placed_offline_arrives_when_headquarters_is_back(settings, db, hq_server, hq_target, hq_env):
    reads = aged_reads(settings, [400, 400, 400], seed=12)
    assert push(settings).reads == 3  # the reads reach headquarters before any hold
    hq_server.stop()
    kept = place_query(settings, reads[1].plate)
    brief = place_query(settings, reads[2].plate)
    release(settings, brief)
    with pytest.raises(post.SyncError):
        push(settings)
    assert hq_holds_of(settings.post.id) == {}
    status = test_cli.run(settings, "sync", "status", "--offline")
    assert "reads waiting: 0, legal hold events waiting: 3" in status.output, status.output
    hq_server.start()
    pushed = push(settings)
    assert (pushed.reads, pushed.holds) == (0, 3)  # two placings and a release, in the order they happened
    at_hq = hq_holds_of(settings.post.id)
    assert at_hq[kept.id].active and not at_hq[brief.id].active
    on_post(settings)
    with dbmod.connection():
        assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 0
    out = retention(hq_env, hq_target)
    assert "purged 2 read(s)" in out and "kept under legal hold: 1 read(s)" in out, out
    assert held_uuids() == {reads[1].uuid}


def test_a_restored_headquarters_gets_the_holds_it_lost_again(settings, db, hq_server, hq_target, hq_env):
    reads = aged_reads(settings, [400, 400], seed=18)
    assert push(settings).reads == 2
    hq_server.stop()
    backup = snapshot(hq_target)  # before the hold reached headquarters
    hq_server.start()
    hold = place_query(settings, reads[0].plate)
    assert push(settings).holds == 1
    hq_server.stop()
    restore(hq_target, backup)
    hq_server.start()
    assert hq_holds_of(settings.post.id) == {}
    pushed = push(settings)
    assert pushed.holds == 1 and any("sent again" in n for n in pushed.notes), pushed.lines()
    assert hq_holds_of(settings.post.id)[hold.id].active
    out = retention(hq_env, hq_target)
    assert "purged 1 read(s)" in out and held_uuids() == {reads[0].uuid}, out


def test_holds_placed_with_the_post_cli_and_a_similar_search_keep_their_frozen_reads(
    settings, db, hq_server, hq_target, hq_env
):
    """`waypost hold place` on the post; a "similar" search is no plate pattern: headquarters keeps
    the reads it froze by their uuids (7ABC191 is similar to 7ABC190, not equal to it)."""

    reads = aged_reads(settings, [400, 400, 400], seed=19)  # 7ABC190, 7ABC191, 7ABC192
    on_post(settings)
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_SYNC__HQ_URL": settings.sync.hq_url,
        **operator_env(settings, "officer.lee", "officer"),
    }
    window = ["--from", f"{utcnow() - dt.timedelta(days=500):%Y-%m-%d}", "--to", f"{utcnow():%Y-%m-%d}"]
    out = CliRunner().invoke(
        main,
        [
            "hold",
            "place",
            "--plate",
            "7ABC190",
            "--mode",
            "similar",
            *window,
            "--purpose",
            "CRIME-INV",
            "--case",
            "26-004512",
            "--reason",
            REASON,
        ],
        env=env,
    )
    assert out.exit_code == 0 and "headquarters gets it with the next sync batch" in out.output, out.output
    on_post(settings)
    with dbmod.connection():
        (hold,) = holds.LegalHold.select()
        frozen = {r.read.uuid for r in holds.HoldRead.select().where(holds.HoldRead.hold == hold.id)}
    assert reads[1].uuid in frozen and reads[0].uuid in frozen, frozen
    assert push(settings).holds == 1
    copy = hq_holds_of(settings.post.id)[hold.id]
    assert (copy.mode, copy.pattern) == ("similar", "7ABC190")
    out = retention(hq_env, hq_target)
    assert held_uuids() == frozen and f"kept under legal hold: {len(frozen)} read(s)" in out, out


def _built(settings) -> tuple[dict, bytes]:
    on_post(settings)
    with dbmod.connection():
        buf = io.BytesIO()
        header = post.build_batch(settings, bundle.post_key(settings), post.fetch_position(settings), buf)
    assert header is not None  # the tests build a batch only when something waits
    return header, buf.getvalue()


def _send(settings, body: bytes):
    return post._request(settings, "POST", "/hq/v1/batches", body=body, length=len(body))


def test_the_same_batch_delivered_twice_stores_the_hold_once(settings, db, hq_server, hq_target, hq_env):
    reads = aged_reads(settings, [400], seed=14)
    assert push(settings).reads == 1
    hold = place_query(settings, reads[0].plate)
    release_later = place_read(settings, reads[0])
    header, body = _built(settings)
    status, answer = _send(settings, body)
    assert (status, answer["status"], answer["batch"], answer["holds"]) == (200, "stored", header["batch"], 2)
    status, answer = _send(settings, body)
    assert (status, answer["status"], answer["holds"]) == (200, "duplicate", 0)
    with hq.hq_database.connection_context():
        assert HQLegalHold.select().count() == 2 and HQLegalHoldRead.select().count() == 2
    # a release, delivered twice, is applied once
    release(settings, release_later)
    header, body = _built(settings)
    assert _send(settings, body)[1]["holds"] == 1
    first = hq_holds_of(settings.post.id)[release_later.id].released_at
    assert _send(settings, body)[1]["status"] == "duplicate"
    at_hq = hq_holds_of(settings.post.id)
    assert at_hq[release_later.id].released_at == first and at_hq[hold.id].active
    assert push(settings).batches == 0


def _with_bad_hold(settings, change) -> tuple[str, bytes]:
    """The next batch, its first hold line changed by `change(line)`, signed by the post."""
    on_post(settings)
    key = bundle.post_key(settings)
    with dbmod.connection():
        plan = post.plan_batch(settings, key, post.fetch_position(settings))
        assert plan is not None  # a hold waits
        lines = list(post._lines(settings, plan, {"reads": 0, "chain_hash": plan.pos.chain_hash}))
    (line,) = [obj for obj in lines if obj["t"] == "hold"][:1]
    change(line)
    buf = io.BytesIO()
    writer = protocol.Writer(buf)
    for obj in lines:
        writer.line(obj)
    writer.finish(key)
    return plan.header["batch"], buf.getvalue()


BAD_HOLDS = [
    (lambda line: line["hold"].update(mode="fuzzy"), "hold field 'mode' must be one of exact, wildcard"),
    (lambda line: line["hold"].update(plate="7AB*"), "hold field 'plate' '7AB*' is not a plate for an exact search"),
    (lambda line: line["hold"].update(since="last week"), "hold field 'since' must be an ISO date"),
    (lambda line: line["hold"].update(reads="all of them"), "hold field 'reads' must be a list of read uuids"),
    (lambda line: line["hold"].pop("case_number"), "hold field 'case_number' must be a non-empty string"),
    (
        lambda line: line.update(
            event="release",
            hold={"id": 99, "released_at": "2026-11-01T10:00:00", "released_by": "admin", "release_reason": "closed"},
        ),
        "the release of hold 99, which post",
    ),
]


@pytest.mark.parametrize("change,message", BAD_HOLDS, ids=["mode", "plate", "since", "reads", "case", "release"])
def test_a_bad_hold_line_refuses_the_whole_batch(settings, db, hq_server, hq_target, hq_env, change, message):
    reads = aged_reads(settings, [400], seed=15)
    hold = place_query(settings, reads[0].plate)
    batch_id, body = _with_bad_hold(settings, change)
    status, answer = _send(settings, body)
    assert (status, answer["problem"]) == (400, "malformed"), answer
    assert f"batch {batch_id}, line " in answer["message"] and message in answer["message"], answer["message"]
    with hq.hq_database.connection_context():
        assert hq.HQRead.select().count() == 0 and HQLegalHold.select().count() == 0
        assert HQLegalHoldRead.select().count() == 0 and hq.HQAccessRecord.select().count() == 0
        assert hq.HQPost.get_by_id(settings.post.id).last_seq == 0
        (logged,) = hq.HQBatch.select()
        assert (logged.batch_id, logged.status, logged.problem) == (batch_id, "refused", "malformed")
    # nothing was lost at the post: the real batch carries the read and the hold
    pushed = push(settings)
    assert (pushed.reads, pushed.holds) == (1, 1)
    assert hq_holds_of(settings.post.id)[hold.id].active and held_uuids() == {reads[0].uuid}


@pytest.fixture
def pull_key(settings, db, hq_target):
    """Headquarters' key with the post serving /sync/batch to it; the post enrolled with its pull URL."""
    hq.open_hq(hq_target)
    key = hq.hq_key(hq_target, key_dir=settings.data_dir.parent / "hq-key")
    raw = base64.b64encode(bundle.raw_public(key.public_key())).decode()
    on = settings.model_copy(update={"sync": settings.sync.model_copy(update={"hq_public_key": raw})})

    server = WebServer(create_app(on), "127.0.0.1", 0).start()
    with hq.hq_database.connection_context():
        hq.enroll(settings.post.id, "Test post", _public(settings), pull_url=f"http://127.0.0.1:{server.port}")
    yield key
    server.stop()


def test_the_nightly_pull_brings_holds_and_their_release(settings, db, pull_key, hq_target, hq_env):
    reads = aged_reads(settings, [400, 400], seed=16)
    hold = place_query(settings, reads[0].plate)
    pulled = hq.pull(settings.post.id, pull_key)
    assert (pulled.reads, pulled.holds, pulled.problem) == (2, 1, ""), pulled.line()
    assert "1 legal hold event(s) from the post" in pulled.line()
    out = retention(hq_env, hq_target)
    assert "purged 1 read(s)" in out and "kept under legal hold: 1 read(s)" in out, out
    assert held_uuids() == {reads[0].uuid}

    release(settings, hold)
    pulled = hq.pull(settings.post.id, pull_key)
    assert (pulled.batches, pulled.holds, pulled.problem) == (1, 1, ""), pulled.line()
    assert not hq_holds_of(settings.post.id)[hold.id].active
    out = retention(hq_env, hq_target)
    assert "purged 1 read(s)" in out and held_uuids() == set()


def test_holds_placed_before_this_version_are_queued_by_the_migration(settings, db, hq_server, hq_target, hq_env):
    """A post upgraded with holds on file (placed before holds were sent): migration 0007 queues
    each, placed then released, and the next push takes them to headquarters."""
    reads = aged_reads(settings, [400, 400, 400], seed=17)
    kept, gone = place_query(settings, reads[0].plate), place_query(settings, reads[1].plate)
    release(settings, gone)
    on_post(settings)
    with dbmod.connection() as database:
        # as the database was before 0007: the holds, but no outbox event for them
        database.execute_sql("DELETE FROM outbox WHERE kind LIKE 'hold.%'")
        database.execute_sql("DELETE FROM schema_migration WHERE version = 7")
        assert dbmod.migrate(settings)[-1] == "applied migration 0007_hold_events"
        events = [(o.kind, int(o.object_id)) for o in Outbox.select().where(Outbox.kind != "read").order_by(Outbox.seq)]
    assert events == [("hold.place", kept.id), ("hold.place", gone.id), ("hold.release", gone.id)]
    pushed = push(settings)
    assert (pushed.reads, pushed.holds) == (3, 3), pushed.lines()  # two placings and a release
    at_hq = hq_holds_of(settings.post.id)
    assert at_hq[kept.id].active and not at_hq[gone.id].active
    out = retention(hq_env, hq_target)
    assert "purged 2 read(s)" in out and held_uuids() == {reads[0].uuid}, out


def test_headquarters_schema_6_is_migrated_with_its_holds(settings, db, hq_target, hq_env, monkeypatch):
    """A headquarters at schema 6 with a hold of its own: schema 7 keeps it as headquarters' hold,
    released there as before."""
    monkeypatch.setattr(hq.models, "SCHEMA", [s for s in hq.models.SCHEMA if s[0] <= 6])
    hq.open_hq(hq_target)
    with hq.hq_database.connection_context():
        assert {r[0] for r in hq.hq_database.execute_sql("SELECT version FROM hq_schema")} == set(range(1, 7))
        p = hq.hq_database.param
        # a hold as schema 6 stored it (the columns it had then)
        hq.hq_database.execute_sql(
            "INSERT INTO hq_legal_hold (post_id, plate, mode, pattern, since, until, reason, purpose_code, "
            f"case_number, placed_by, placed_org, placed_at) VALUES ({', '.join([p] * 12)})",
            (
                settings.post.id,
                "7ABC999",
                "exact",
                "7ABC999",
                "2026-01-01T00:00:00",
                "2026-02-01T23:59:59.999999",
                "Vehicle in the Main St burglary",
                "STOLEN-VEH",
                "24-001234",
                "cli:root",
                "HQ",
                utcnow(),
            ),
        )
    monkeypatch.undo()
    hq.open_hq(hq_target)
    with hq.hq_database.connection_context():
        assert 7 in {r[0] for r in hq.hq_database.execute_sql("SELECT version FROM hq_schema")}
        # enrolled now: enrolment uses tables of later versions (aliases of renamed posts)
        hq.enroll(settings.post.id, "Test post", _public(settings))
        (own,) = HQLegalHold.select()
        assert own.origin_hold_id is None and own.origin == "headquarters"
    released = hq_cli(hq_env, hq_target, "hold", "release", str(own.id), "--reason", "Case closed, no charges filed")
    assert released.exit_code == 0, released.output


def test_a_hold_on_a_read_whose_plate_no_search_takes_still_reaches_headquarters(
    settings, db, hq_server, hq_target, hq_env
):
    """A stored read's plate is any run of A-Z and 0-9 (the recognizer sets no longest), while a
    search takes 1 to 10 characters. A hold on such a read is held by its uuid: its batch must be
    stored, not refused (a refused hold line is sent again and refused again: the post's sync
    would stop there for good)."""

    on_post(settings)
    with dbmod.connection():
        new = store.NewRead(plate_raw="7ABC1234567", plate="7ABC1234567", confidence=0.6, captured_at=utcnow())
        read = store.save_read(settings, store.EvidenceStore(settings), new, None, None)
        with write():
            Read.update(captured_at=utcnow() - dt.timedelta(days=400)).where(Read.id == read.id).execute()
    hold = place_read(settings, read)
    pushed = push(settings)
    assert (pushed.reads, pushed.holds) == (1, 1), pushed.lines()
    copy = hq_holds_of(settings.post.id)[hold.id]
    assert copy.active and copy.plate == "7ABC1234567"
    out = retention(hq_env, hq_target)
    assert "kept under legal hold: 1 read(s)" in out and held_uuids() == {read.uuid}, out
