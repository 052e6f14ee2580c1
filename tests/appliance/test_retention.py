"""Retention on a real database file and real image files: what goes, what stays, and the record."""

import base64
import datetime as dt
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import audit, bundle, holds, retention, search, store
from appliance import db as dbmod
from appliance.bootstrap import bootstrap
from appliance.cli import main
from appliance.hotlist import skeleton
from appliance.models import AccessRecord, Alert, AlertConfirmation, Evidence, Outbox, Read, utcnow
from appliance.service import PostService
from tests.conftest import make_settings

NOW = utcnow()
ACTOR = audit.Actor("system", "Demo Police Department", "local")
OFFICER = audit.Actor("officer.lee", "Demo Police Department", "10.0.0.9")


def images(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (40, 120, 3), dtype=np.uint8), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)


def add_read(settings, plate, days_old, seed, crop=None, frame=None, alerts=0, alternatives=("8ABC123",)):
    if crop is None and frame is None:
        crop, frame = images(seed)
    new = store.NewRead(
        plate_raw=plate,
        plate=plate,
        confidence=0.9,
        captured_at=NOW - dt.timedelta(days=days_old, minutes=seed),
        alternatives=[{"text": a, "score": 0.1} for a in alternatives],
    )
    read = store.save_read(settings, store.EvidenceStore(settings), new, crop, frame)
    with dbmod.write():
        for _ in range(alerts):
            alert = Alert.create(
                read=read,
                hotlist_name="SVS",
                entry_plate=plate,
                entry_state="CA",
                entry_reason="stolen",
                entry_source_ref="",
                matched_text=plate,
                match_kind="exact",
                score=1.0,
            )
            AlertConfirmation.create(
                alert=alert,
                username="officer.lee",
                organization="PD",
                visual_compared=True,
                clets_verified=True,
                outcome="confirmed",
            )
    return read


def files_of(settings, read):
    ev = store.EvidenceStore(settings)
    return [ev.path_for(e.sha256) for e in Evidence.select().where(Evidence.read == read)]


def indexed(read_id):
    """The read's id as the plate index returns it for its own plate."""
    read = Read.get_by_id(read_id)
    return any(h.read.id == read_id for h in search.search(search.Query(read.plate), limit=100).hits)


def purge_records():
    return list(AccessRecord.select().where(AccessRecord.action == "retention.purge").order_by(AccessRecord.seq))


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data", retention__read_days=30, retention__hit_read_days=90)


def test_purge_removes_rows_index_entries_files_and_writes_one_record(settings, db):
    old = add_read(settings, "7ABC123", 40, 1)
    old_hit = add_read(settings, "7ABC124", 100, 2, alerts=1)
    young = add_read(settings, "7ABC125", 5, 3)
    old_files = files_of(settings, old) + files_of(settings, old_hit)
    assert all(p.exists() for p in old_files) and len(old_files) == 4
    assert indexed(old.id) and indexed(old_hit.id)

    result = retention.run(settings, ACTOR)

    assert (result.reads, result.hit_reads, result.evidence_rows, result.files) == (2, 1, 4, 4)
    assert (result.alerts, result.outbox_rows) == (1, 2)
    assert not Read.select().where(Read.id.in_([old.id, old_hit.id])).exists()
    assert Evidence.select().count() == 2 and Alert.select().count() == 0 and AlertConfirmation.select().count() == 0
    assert [o.object_id for o in Outbox.select()] == [young.uuid]
    assert not any(p.exists() for p in old_files), "purged images must be gone from the disk"
    assert all(p.exists() for p in files_of(settings, young))
    # the search index forgot them: no phantom rowids left behind in the trigram index
    hits = search.search(search.Query("7ABC*", "wildcard"), limit=100).hits
    assert [h.read.id for h in hits] == [young.id]
    gram = skeleton("7ABC")[1:]
    rowids = {r[0] for r in db.execute_sql("SELECT rowid FROM read_text WHERE read_text MATCH ?", [f'"{gram}"'])}
    assert rowids == {young.id}
    [rec] = purge_records()
    details = json.loads(rec.details)
    assert rec.result_count == 2 and details["reads"] == 2 and details["files"] == 4
    assert details["oldest_at"] == old_hit.captured_at.strftime("%Y-%m-%d %H:%M:%S")
    assert details["newest_at"] == old.captured_at.strftime("%Y-%m-%d %H:%M:%S")
    assert audit.verify().ok
    assert dbmod.integrity_check() == "ok"
    assert store.check(settings, store.EvidenceStore(settings)) == []


def test_hit_reads_have_their_own_period(settings, db):
    hit_60 = add_read(settings, "5LMN432", 60, 1, alerts=1)  # past read_days (30), within hit_read_days (90)
    plain_60 = add_read(settings, "5LMN433", 60, 2)
    retention.run(settings, ACTOR)
    assert Read.get_or_none(Read.id == hit_60.id) is not None
    assert Read.get_or_none(Read.id == plain_60.id) is None


def test_a_file_shared_with_a_read_that_stays_is_kept(settings, db):
    crop, _ = images(9)
    old = add_read(settings, "7ABC123", 40, 1, crop=crop)
    young = add_read(settings, "7ABC123", 2, 2, crop=crop)  # the same bytes: the same file
    [shared] = files_of(settings, old)
    assert files_of(settings, young) == [shared]
    result = retention.run(settings, ACTOR)
    assert result.reads == 1 and result.files == 0
    assert shared.exists()
    assert store.EvidenceStore(settings).read_bytes(shared.stem)


def test_held_reads_survive_and_come_due_when_the_hold_is_released(settings, db):
    held = add_read(settings, "7ABC123", 40, 1)
    other = add_read(settings, "6XYZ999", 40, 2)
    hold = holds.place_on_read(settings, OFFICER, held.id, "CRIME-INV", "26-004512", "Vehicle in a robbery")
    result = retention.run(settings, ACTOR)
    assert result.reads == 1 and result.held_kept == 1
    assert Read.get_or_none(Read.id == held.id) is not None and Read.get_or_none(Read.id == other.id) is None
    assert all(p.exists() for p in files_of(settings, held)) and indexed(held.id)

    holds.release(ACTOR, hold.id, "Case closed, no charges filed")
    result = retention.run(settings, ACTOR)
    assert result.reads == 1 and result.held_kept == 0
    assert Read.get_or_none(Read.id == held.id) is None
    assert holds.LegalHold.get_by_id(hold.id).released_at is not None, "the hold stays on file"
    assert audit.verify().ok and len(purge_records()) == 2


def test_dry_run_deletes_nothing_and_records_nothing(settings, db):
    reads = [add_read(settings, "7ABC12" + str(i), 40 + i, i) for i in range(3)]
    add_read(settings, "7ABC130", 100, 7, alerts=1)
    paths = [p for r in reads for p in files_of(settings, r)]
    before = (Read.select().count(), Evidence.select().count(), Outbox.select().count(), AccessRecord.select().count())

    plan = retention.run(settings, ACTOR, dry_run=True)

    assert (plan.reads, plan.hit_reads, plan.evidence_rows, plan.files, plan.outbox_rows, plan.alerts) == (
        4,
        1,
        8,
        8,
        4,
        1,
    )
    assert before == (
        Read.select().count(),
        Evidence.select().count(),
        Outbox.select().count(),
        AccessRecord.select().count(),
    )
    assert all(p.exists() for p in paths) and all(indexed(r.id) for r in reads)
    assert "would purge 4 read(s)" in plan.lines()[0]
    # and the real run does what the dry run said
    done = retention.run(settings, ACTOR)
    assert (done.reads, done.evidence_rows, done.files) == (plan.reads, plan.evidence_rows, plan.files)


def _pull_key() -> str:

    return base64.b64encode(bundle.raw_public(Ed25519PrivateKey.generate().public_key())).decode()


@pytest.mark.parametrize("how", ["push", "pull"])
def test_reads_headquarters_has_not_received_are_kept_while_it_will_fetch_them(tmp_path, how):
    """Pushing (sync on) or pulled from (README 'pull instead of push': no sync.hq_url, so
    sync.enabled stays off, but sync.hq_public_key is set): what headquarters has not received yet
    is kept past the retention period, unless retention.purge_unsent allows it."""

    sync = (
        {"sync__enabled": "true", "sync__hq_url": "https://hq.example.org"}
        if how == "push"
        else {"sync__hq_public_key": _pull_key()}
    )
    settings = make_settings(tmp_path / how, retention__read_days=30, **sync)
    assert settings.sync.enabled == (how == "push")
    bootstrap(settings, create_admin=False)
    with dbmod.connection():
        sent = add_read(settings, "7ABC123", 40, 1)
        unsent = add_read(settings, "7ABC124", 40, 2)
        with dbmod.write():
            Outbox.update(sent_at=utcnow(), batch_id="b-1").where(Outbox.object_id == sent.uuid).execute()
        result = retention.run(settings, ACTOR)
        assert result.reads == 1 and result.unsent_kept == 1
        assert Read.get_or_none(Read.id == unsent.id) is not None and Read.get_or_none(Read.id == sent.id) is None
        allowing = make_settings(tmp_path / how, retention__read_days=30, retention__purge_unsent="true", **sync)
        assert retention.run(allowing, ACTOR).reads == 1
        assert Read.get_or_none(Read.id == unsent.id) is None


def test_with_neither_push_nor_pull_unsent_reads_are_purged(tmp_path):
    """Nothing will ever fetch them."""

    alone = make_settings(tmp_path / "alone", retention__read_days=30)
    bootstrap(alone, create_admin=False)
    with dbmod.connection():
        add_read(alone, "7ABC125", 40, 3)
        assert retention.run(alone, ACTOR).reads == 1


def test_batches_and_an_interrupted_run_is_recorded_by_the_next(settings, db, monkeypatch):
    reads = [add_read(settings, f"4DEF{100 + i}", 40, i) for i in range(7)]
    held = holds.place_on_read(settings, OFFICER, reads[3].id, "CRIME-INV", "26-004512", "Evidence of a hit and run")
    paths = [p for r in reads for p in files_of(settings, r) if r.id != reads[3].id]
    calls = []

    def crash_after_second(n):
        calls.append(n)
        if n == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        retention.run(settings, ACTOR, batch=2, progress=crash_after_second)
    assert Read.select().count() == 3 and purge_records() == []
    result = retention.run(settings, ACTOR, batch=2)
    assert result.reads == 2 and result.batches == 1 and [r["reads"] for r in result.interrupted_runs] == [4]
    first, second = purge_records()
    assert json.loads(first.details)["interrupted"] is True and first.result_count == 4
    assert second.result_count == 2
    assert [r.id for r in Read.select()] == [reads[3].id] and held.read_count == 1
    assert not any(p.exists() for p in paths)
    assert audit.verify().ok and dbmod.integrity_check() == "ok"


def test_files_noted_but_not_unlinked_before_a_crash_are_removed_by_the_next_run(settings, db, monkeypatch):
    old = add_read(settings, "7ABC123", 40, 1)
    paths = files_of(settings, old)
    monkeypatch.setattr(retention, "_settle_files", lambda store: 0)  # the process dies after each commit
    with pytest.raises(KeyboardInterrupt):
        retention.run(settings, ACTOR, progress=lambda n: (_ for _ in ()).throw(KeyboardInterrupt))
    assert all(p.exists() for p in paths)
    problems = store.check(settings, store.EvidenceStore(settings))
    assert len(problems) == 2 and all("orphan evidence file" in p for p in problems)
    monkeypatch.undo()
    retention.run(settings, ACTOR)
    assert not any(p.exists() for p in paths)
    assert store.check(settings, store.EvidenceStore(settings)) == []
    first = json.loads(purge_records()[0].details)
    assert first["interrupted"] and first["files"] == 2


def test_daily_run_is_due_once_a_day_after_run_at_local_time(settings, db):
    # 03:15 in Los Angeles is 11:15 UTC in winter (PST, UTC-8)
    day = dt.datetime(2026, 1, 10)
    assert not retention.due(settings, day.replace(hour=11, minute=14))
    assert retention.due(settings, day.replace(hour=11, minute=15))
    retention.run(settings, ACTOR, now=day.replace(hour=11, minute=15))
    with dbmod.write():
        db.execute_sql("UPDATE retention_run SET started_at = ?", [day.replace(hour=11, minute=15)])
    assert not retention.due(settings, day.replace(hour=23, minute=0))
    assert retention.due(settings, day.replace(hour=11, minute=20) + dt.timedelta(days=1))


def test_cli_dry_run_and_run(settings, db, monkeypatch, tmp_path):

    old = add_read(settings, "7ABC123", 40, 1)
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_RETENTION__READ_DAYS": "30",
    }
    runner = CliRunner()
    out = runner.invoke(main, ["retention", "run", "--dry-run"], env=env)
    assert out.exit_code == 0, out.output
    assert "would purge 1 read(s)" in out.output and "2 image file(s)" in out.output
    assert Read.get_or_none(Read.id == old.id) is not None
    out = runner.invoke(main, ["retention", "run"], env=env)
    assert out.exit_code == 0, out.output
    assert "purged 1 read(s)" in out.output
    assert Read.get_or_none(Read.id == old.id) is None
    [rec] = purge_records()
    # an unattended job (its timer runs it): recorded as the system, and it says so
    assert rec.username == "system" and "recorded as the system" in out.output


def test_cli_batches_are_capped_like_the_daily_run():
    """`--batch` is the most reads in one transaction (the pace sizes each); by hand as in the
    service's daily run, the cap is retention.BATCH unless lowered (README: at most 10,000)."""

    out = CliRunner().invoke(main, ["retention", "run", "--help"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"[default: {retention.BATCH}; x>=1]" in text and "most reads in one transaction" in text, text


def test_the_service_runs_the_purge_once_a_day_and_stops_between_batches(tmp_path):
    settings = make_settings(tmp_path / "svc", retention__read_days=30, retention__run_at="00:00")
    bootstrap(settings, create_admin=False)
    with dbmod.connection():
        reads = [add_read(settings, f"3GHJ{100 + i}", 40, i) for i in range(3)]
    service = PostService(settings, with_capture=False)
    service._daily_retention()
    service._daily_retention()  # the same day: not again
    with dbmod.connection():
        assert Read.select().count() == 0
        [rec] = purge_records()
        assert rec.username == "system" and rec.result_count == 3
        # a stop between batches ends the run with what it did, recorded as stopped
        more = [add_read(settings, f"3GHK{100 + i}", 40, i) for i in range(3)]
        stop = threading.Event()
        stop.set()
        result = retention.run(settings, ACTOR, batch=1, stop=stop)
        assert result.reads == 1 and result.stopped and Read.select().count() == 2
        assert json.loads(purge_records()[-1].details)["stopped"] is True
    assert len(reads) == len(more) == 3
