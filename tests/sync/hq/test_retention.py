"""Retention and legal holds at headquarters, on SQLite and on the private PostgreSQL: a real post
pushes real batches over HTTP to headquarters on 127.0.0.1; `waypost hq hold ...` and `waypost hq
retention` run through click with headquarters' own configuration and accounts database."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from peewee import SqliteDatabase

from appliance import audit, config, store
from appliance import db as dbmod
from appliance.bootstrap import bootstrap
from appliance.cli import main
from appliance.db import write
from appliance.models import AccessRecord, Alert, Read, utcnow
from sync import hq, post
from sync.hq import retention as hq_retention
from sync.hq import search as hq_search
from sync.hq.models import HQLegalHold
from tests.conftest import operator_env
from tests.sync.conftest import add_reads

PURPOSE = ["--purpose", "STOLEN-VEH", "--case", "24-001234"]


def _hq_env(root, **overrides) -> dict:
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(root),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_POST__ID": "hq",
        "WAYPOST_RETENTION__READ_DAYS": "30",
        "WAYPOST_RETENTION__HIT_READ_DAYS": "90",
        "WAYPOST_CONFIG": "",
    }
    env.update({f"WAYPOST_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


@pytest.fixture
def hq_env(tmp_path, settings, db):
    """Headquarters' configuration (its data_dir holds its accounts database and access log)."""
    env = _hq_env(tmp_path / "hq-data")
    hq_settings = config.load(None, environ=env)
    bootstrap(hq_settings, create_admin=False)
    env = {**env, **operator_env(hq_settings, "hq.admin", "admin")}  # headquarters' administrator runs its commands
    dbmod.open_database(settings)  # the post's database is the one bound between steps
    return env


def hq_cli(env, target, *args):
    """`waypost hq ARGS --database TARGET` as headquarters' operator runs it."""
    group, *rest = args
    if group == "hold" and rest[0] == "list" and "--case" not in rest:
        rest = [*rest, "--case", "AUD-2026-11"]  # a listing shows plates: it is filed under an audit
    result = CliRunner().invoke(
        main,
        [
            "hq",
            *([group, rest[0]] if group == "hold" else [group]),
            "--database",
            target,
            *(rest[1:] if group == "hold" else rest),
        ],
        env=env,
    )
    return result


def on_post(settings):
    dbmod.open_database(settings)


def hq_records(env, action) -> list[AccessRecord]:
    dbmod.open_database(config.load(None, environ=env))
    with dbmod.connection():
        return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def hq_log_verifies(env) -> bool:
    dbmod.open_database(config.load(None, environ=env))
    with dbmod.connection():
        return audit.verify().ok


def aged_reads(settings, days: list[int], seed: int, alert_on: tuple[int, ...] = ()) -> list[Read]:
    """Reads on the post captured `days` ago (the post's clock is not wound back: their capture
    time is), with a hotlist alert on the reads at positions `alert_on`."""
    on_post(settings)
    with dbmod.connection():
        reads = add_reads(settings, len(days), seed=seed)
        with write():
            for i, (read, ago) in enumerate(zip(reads, days)):
                Read.update(captured_at=utcnow() - dt.timedelta(days=ago)).where(Read.id == read.id).execute()
                if i in alert_on:
                    Alert.create(
                        read=read,
                        hotlist_name="SVS",
                        entry_plate=read.plate,
                        entry_state="CA",
                        entry_reason="stolen",
                        entry_source_ref="",
                        matched_text=read.plate,
                        match_kind="exact",
                        score=1.0,
                        created_at=utcnow(),
                    )
        return [Read.get_by_id(r.id) for r in reads]


def push(settings):
    on_post(settings)
    with dbmod.connection():
        return post.push(settings)


def held_uuids() -> set[str]:
    with hq.hq_database.connection_context():
        return {r.uuid for r in hq.HQRead.select(hq.HQRead.uuid)}


def counts() -> dict:
    with hq.hq_database.connection_context():
        return {
            m._meta.table_name: m.select().count()
            for m in (
                hq.HQRead,
                hq.HQImage,
                hq.HQAlert,
                hq.HQAccessRecord,
                hq.HQBatch,
                hq.HQPost,
                hq.models.HQReadText,
                hq.models.HQRetentionRun,
                HQLegalHold,
            )
        }


def found(plate: str) -> int:
    with hq.hq_database.connection_context():
        return len(hq_search.search(hq_search.Query(plate)).hits)


def test_old_reads_go_recent_and_hit_reads_stay_and_the_post_resumes(settings, db, hq_server, hq_target, hq_env):
    # 400, 200 and 60 days old: past read_days (30); hit reads 60 days old (kept: hit_read_days is
    # 90) and 100 days old (purged); one read from yesterday
    reads = aged_reads(settings, [400, 200, 60, 60, 100, 1], seed=1, alert_on=(3, 4))
    assert push(settings).reads == 6
    purged, kept = [reads[i] for i in (0, 1, 2, 4)], [reads[i] for i in (3, 5)]
    assert found(purged[0].plate) == 1 and found(kept[0].plate) == 1
    with hq.hq_database.connection_context():
        position = hq.position(hq.HQPost.get_by_id(settings.post.id))
        images = {r.uuid: {im["sha256"] for im in r.data["images"]} for r in hq.HQRead.select()}
    before = counts()
    assert before["hq_alert"] == 2 and before["hq_access_record"] > 0 and before["hq_image"] == 12

    dry = hq_cli(hq_env, hq_target, "retention", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would purge 4 read(s) at headquarters (1 with alerts)" in dry.output
    assert "1 alert(s), up to 8 image(s)" in dry.output
    assert counts() == before and hq_records(hq_env, "retention.purge") == []

    out = hq_cli(hq_env, hq_target, "retention")
    assert out.exit_code == 0, out.output
    assert "purged 4 read(s) at headquarters (1 with alerts)" in out.output
    assert "1 alert(s), 8 image(s)" in out.output
    assert held_uuids() == {r.uuid for r in kept}
    after = counts()
    assert after["hq_alert"] == 1 and after["hq_image"] == 4
    with hq.hq_database.connection_context():
        left = {r.sha256 for r in hq.HQImage.select(hq.HQImage.sha256)}
        assert left == set().union(*(images[r.uuid] for r in kept))
        assert {t.read_id for t in hq.models.HQReadText.select()} == {r.id for r in hq.HQRead.select()}
    assert found(purged[0].plate) == 0 and found(purged[3].plate) == 0 and found(kept[0].plate) == 1
    # the posts' witness copies, the batch log and the positions are untouched
    for table in ("hq_access_record", "hq_batch", "hq_post"):
        assert after[table] == before[table], table
    with hq.hq_database.connection_context():
        assert hq.position(hq.HQPost.get_by_id(settings.post.id)) == position
        assert hq.verify_chain(settings.post.id)[0]

    (record,) = hq_records(hq_env, "retention.purge")
    assert record.result_count == 4 and record.username == "hq.admin" and record.client_addr.startswith("cli:")
    details, query = json.loads(record.details), json.loads(record.query)
    assert query["at"] == "headquarters" and query["hit_cutoff"] < query["read_cutoff"]
    assert details["reads"] == 4 and details["hit_reads"] == 1 and details["images"] == 8
    assert details["oldest_at"] == purged[0].captured_at.isoformat()
    assert details["newest_at"] == purged[2].captured_at.isoformat()
    assert hq_log_verifies(hq_env)

    # the post sends nothing again, then only what is new; its chain still verifies at headquarters
    assert push(settings).reads == 0
    new = aged_reads(settings, [0], seed=2)
    assert push(settings).reads == 1
    assert held_uuids() == {r.uuid for r in kept} | {new[0].uuid}
    with hq.hq_database.connection_context():
        p = hq.HQPost.get_by_id(settings.post.id)
        assert p.last_seq == position["last_seq"] + 1 and p.chain_status == "verified"
        ok, _, message = hq.verify_chain(settings.post.id)
        assert ok and p.chain_seq > position["chain_seq"], message
    status = hq_cli(hq_env, hq_target, "status")
    assert "3 read(s)" in status.output and "verified" in status.output and "BROKEN" not in status.output

    # a second run finds nothing more
    again = hq_cli(hq_env, hq_target, "retention")
    assert "purged 0 read(s)" in again.output and held_uuids() == {r.uuid for r in kept} | {new[0].uuid}


def test_held_reads_stay_until_released(settings, db, hq_server, hq_target, hq_env):
    reads = aged_reads(settings, [400, 400, 400, 400], seed=3)  # plates 7ABC030..7ABC033
    assert push(settings).reads == 4
    window = [
        "--from",
        (utcnow() - dt.timedelta(days=500)).strftime("%Y-%m-%d"),
        "--to",
        utcnow().strftime("%Y-%m-%dT%H:%M"),
    ]
    exact = hq_cli(
        hq_env,
        hq_target,
        "hold",
        "place",
        "--post",
        settings.post.id,
        "--plate",
        "7ABC030",
        *window,
        *PURPOSE,
        "--reason",
        "Vehicle in the Main St burglary",
    )
    assert exact.exit_code == 0, exact.output
    assert "hold 1 placed under case 24-001234" in exact.output and "covers 1 read(s)" in exact.output
    wildcard = hq_cli(
        hq_env,
        hq_target,
        "hold",
        "place",
        "--all-posts",
        "--plate",
        "*C032",
        "--mode",
        "wildcard",
        *window,
        *PURPOSE,
        "--reason",
        "Suspect vehicle, partial plate from a witness",
    )
    assert wildcard.exit_code == 0 and "covers 1 read(s)" in wildcard.output, wildcard.output
    # a hold whose period ends before the reads were captured holds nothing
    early = hq_cli(
        hq_env,
        hq_target,
        "hold",
        "place",
        "--post",
        settings.post.id,
        "--plate",
        "7ABC031",
        "--from",
        "2020-01-01",
        "--to",
        "2020-02-01",
        *PURPOSE,
        "--reason",
        "An older case, same plate",
    )
    assert early.exit_code == 0 and "covers 0 read(s)" in early.output, early.output

    out = hq_cli(hq_env, hq_target, "retention")
    assert "purged 2 read(s)" in out.output and "kept under legal hold: 2 read(s)" in out.output, out.output
    assert held_uuids() == {reads[0].uuid, reads[2].uuid}

    # a hold on an alternative reading (every read here has 7A8C123 as one) holds by it
    alt = hq_cli(
        hq_env,
        hq_target,
        "hold",
        "place",
        "--all-posts",
        "--plate",
        "7A8C123",
        *window,
        *PURPOSE,
        "--reason",
        "The OCR's second reading matches the stolen car",
    )
    assert alt.exit_code == 0 and "covers 2 read(s)" in alt.output, alt.output
    for hold_id in (1, 2):
        released = hq_cli(
            hq_env, hq_target, "hold", "release", str(hold_id), "--reason", "Case closed, no charges filed"
        )
        assert released.exit_code == 0 and f"hold {hold_id} (case 24-001234) released" in released.output
    assert "purged 0 read(s)" in hq_cli(hq_env, hq_target, "retention").output
    assert held_uuids() == {reads[0].uuid, reads[2].uuid}
    listed = hq_cli(hq_env, hq_target, "hold", "list", "--active")
    assert listed.exit_code == 0 and "7A8C123" in listed.output and "7ABC030" not in listed.output, listed.output
    assert (
        hq_cli(hq_env, hq_target, "hold", "release", "4", "--reason", "The OCR reading was wrong after all").exit_code
        == 0
    )
    out = hq_cli(hq_env, hq_target, "retention")
    assert "purged 2 read(s)" in out.output and held_uuids() == set()

    again = hq_cli(hq_env, hq_target, "hold", "release", "1", "--reason", "Case closed, no charges filed")
    assert again.exit_code != 0 and "hold 1 was already released" in again.output
    missing = hq_cli(hq_env, hq_target, "hold", "release", "99", "--reason", "Case closed, no charges filed")
    assert missing.exit_code != 0 and "there is no hold 99" in missing.output
    everything = hq_cli(hq_env, hq_target, "hold", "list")
    states = {line.split()[0]: "ACTIVE" in line for line in everything.output.splitlines()}
    assert states == {"1": False, "2": False, "3": True, "4": False}, everything.output
    assert "captured 2020-01-01T00:00:00 to 2020-02-01T23:59:59.999999 UTC" in everything.output  # a date: all of it
    placed, released_, listings = (hq_records(hq_env, a) for a in ("hold.place", "hold.release", "hold.list"))
    assert len(placed) == 4 and len(released_) == 3 and len(listings) == 2
    assert placed[1].purpose_code == "STOLEN-VEH" and placed[1].case_number == "24-001234"
    assert '"plate":"*C032"' in placed[1].query and '"post":"*"' in placed[1].query
    assert hq_log_verifies(hq_env)


def test_a_purge_in_batches_takes_every_read(settings, db, hq_server, hq_target, hq_env):
    reads = aged_reads(settings, [400, 300, 200, 100, 50], seed=4)
    assert push(settings).reads == 5
    out = hq_cli(hq_env, hq_target, "retention", "--batch", "2")
    assert out.exit_code == 0, out.output
    assert "purged 5 read(s)" in out.output and "3 batch(es)" in out.output
    assert held_uuids() == set() and counts()["hq_image"] == 0 and counts()["hq_read_text"] == 0
    (record,) = hq_records(hq_env, "retention.purge")
    assert record.result_count == 5 and f'"oldest_at":"{reads[0].captured_at.isoformat()}"' in record.details


@pytest.mark.parametrize(
    "args,message",
    [
        (["--post", "post-1", "--plate", "7ABC030", "--reason", "short"], "a reason of at least 10 characters"),
        (["--post", "post-1", "--plate", "7ABC030", "--reason", ""], "a reason of at least 10 characters"),
        (
            ["--post", "post-1", "--plate", "7ABC030", "--from", "2026-03-01", "--to", "2026-02-01"],
            "the period ends (2026-02-01 23:59) before it starts (2026-03-01 00:00)",
        ),
        (["--all-posts", "--plate", "**", "--mode", "wildcard"], "needs at least one known character"),
        (["--all-posts", "--plate", "7AB%", "--mode", "wildcard"], "a wildcard plate uses letters, digits, *"),
        (["--all-posts", "--plate", "7AB*"], "needs --mode wildcard"),
        (["--post", "post-9", "--plate", "7ABC030"], "post 'post-9' is not enrolled here"),
        (["--all-posts", "--plate", "7ABC030", "--case", "N/A"], "is not a case or incident number"),
        (["--all-posts", "--plate", "7ABC030", "--from", "last week"], "'last week' is not a date or time"),
        (["--post", "post-1", "--all-posts", "--plate", "7ABC030"], "give either --post ID or --all-posts"),
    ],
)
def test_a_bad_hold_is_refused_with_what_is_wrong(settings, db, hq_server, hq_target, hq_env, args, message):
    defaults = {
        "--from": "2026-01-01",
        "--to": "2026-02-01",
        "--purpose": "STOLEN-VEH",
        "--case": "24-001234",
        "--reason": "Vehicle in the Main St burglary",
    }
    extra = [x for k, v in defaults.items() if k not in args for x in (k, v)]
    out = hq_cli(hq_env, hq_target, "hold", "place", *args, *extra)
    assert out.exit_code != 0 and message in out.output, out.output
    assert counts()["hq_legal_hold"] == 0 and hq_records(hq_env, "hold.place") == []


def test_the_daily_run_purges_once_a_day_and_survives_a_failure(settings, db, hq_server, hq_target, hq_env, caplog):
    aged_reads(settings, [400, 1], seed=5)
    assert push(settings).reads == 2
    hq_settings = config.load(None, environ=dict(hq_env, WAYPOST_RETENTION__RUN_AT="00:00"))
    dbmod.open_database(hq_settings)
    stop = threading.Event()
    daily = hq_retention.Daily(hq_settings, stop, interval_s=0.2)
    daily.start()
    try:
        for _ in range(100):
            if counts()["hq_retention_run"] and hq_records(hq_env, "retention.purge"):
                break
            stop.wait(0.1)
    finally:
        stop.set()
        daily.join(10)
    assert not daily.is_alive() and len(held_uuids()) == 1
    (record,) = hq_records(hq_env, "retention.purge")
    assert record.username == "system" and record.result_count == 1
    with hq.hq_database.connection_context():
        assert not hq_retention.due(hq_settings)  # today's run is done
        later = hq_settings.model_copy(
            update={"retention": hq_settings.retention.model_copy(update={"run_at": "23:59"})}
        )
        assert not hq_retention.due(later, now=dt.datetime(2026, 1, 1, 12, 0))  # 04:00 in Los Angeles
    # a database that cannot be opened: logged, and the thread's next look tries again
    if "://" not in hq_target:
        hq.hq_database.initialize(SqliteDatabase(str(hq_env["WAYPOST_STORAGE__DATA_DIR"]) + "/no/such/dir/hq.sqlite"))
        with caplog.at_level(logging.ERROR, logger="sync.hq.retention"):
            assert daily.tick() is None
        assert "headquarters retention run failed" in caplog.text


def test_a_frame_shared_with_a_held_read_stays(settings, db, hq_server, hq_target, hq_env):
    """Two plates in one picture: their reads share the frame image; the held one keeps it."""

    on_post(settings)
    evidence = store.EvidenceStore(settings)
    rng = np.random.default_rng(6)
    frame = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    at = utcnow() - dt.timedelta(days=400)
    with dbmod.connection():
        for plate in ("8XYZ111", "8XYZ222"):
            new = store.NewRead(plate_raw=plate, plate=plate, confidence=0.9, captured_at=at, alternatives=[])
            store.save_read(settings, evidence, new, rng.integers(0, 256, (30, 80, 3), dtype=np.uint8), frame)
    assert push(settings).reads == 2
    with hq.hq_database.connection_context():
        images = {r.plate: {im["kind"]: im["sha256"] for im in r.data["images"]} for r in hq.HQRead.select()}
    assert images["8XYZ111"]["frame"] == images["8XYZ222"]["frame"] and counts()["hq_image"] == 3
    placed = hq_cli(
        hq_env,
        hq_target,
        "hold",
        "place",
        "--all-posts",
        "--plate",
        "8XYZ222",
        "--from",
        "2020-01-01",
        "--to",
        f"{utcnow():%Y-%m-%d}",
        *PURPOSE,
        "--reason",
        "Passenger car in the same picture",
    )
    assert placed.exit_code == 0, placed.output
    out = hq_cli(hq_env, hq_target, "retention")
    assert "purged 1 read(s)" in out.output and "1 image(s)" in out.output, out.output
    with hq.hq_database.connection_context():
        left = {r.sha256 for r in hq.HQImage.select(hq.HQImage.sha256)}
        (kept,) = hq.HQRead.select()
        assert kept.plate == "8XYZ222" and hq_search.image(kept, "frame") is not None
    assert left == set(images["8XYZ222"].values())
