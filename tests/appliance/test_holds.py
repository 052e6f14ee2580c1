"""Legal holds on a real database: what a hold covers, what it needs, and its records."""

import datetime as dt
import json
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from click.testing import CliRunner

from appliance import audit, holds, search, store
from appliance.cli import main
from appliance.models import AccessRecord
from tests.conftest import operator_env

T0 = dt.datetime(2026, 3, 1, 12, 0)
OFFICER = audit.Actor("officer.lee", "Demo Police Department", "10.0.0.9")
ADMIN = audit.Actor("admin.ray", "Demo Police Department", "10.0.0.2")


def add_read(settings, plate, minutes):
    rng = np.random.default_rng(minutes)
    new = store.NewRead(plate_raw=plate, plate=plate, confidence=0.9, captured_at=T0 + dt.timedelta(minutes=minutes))
    return store.save_read(
        settings, store.EvidenceStore(settings), new, rng.integers(0, 256, (30, 90, 3), dtype=np.uint8), None
    )


def records(action):
    return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def held_ids(hold):
    return sorted(r.read_id for r in holds.HoldRead.select().where(holds.HoldRead.hold == hold.id))


def test_hold_on_one_read_is_recorded_with_its_purpose_and_case(settings, db):
    read = add_read(settings, "7ABC123", 0)
    hold = holds.place_on_read(settings, OFFICER, read.id, "CRIME-INV", "26-004512", "Vehicle seen leaving a robbery")
    assert (hold.kind, hold.case_number, hold.read_count, hold.active) == ("read", "26-004512", 1, True)
    assert held_ids(hold) == [read.id]
    assert [h.id for h in holds.active_holds_on(read.id)] == [hold.id]
    [rec] = records("hold.place")
    assert (rec.username, rec.purpose_code, rec.case_number, rec.result_count) == (
        "officer.lee",
        "CRIME-INV",
        "26-004512",
        1,
    )
    assert read.uuid in rec.object_ids and f"hold:{hold.id}" in rec.object_ids
    assert audit.verify().ok


@pytest.mark.parametrize(
    "code, case, reason, message",
    [
        ("CRIME-INV", "N/A", "Vehicle seen leaving a robbery", "not a case or incident number"),
        ("CRIME-INV", "123", "Vehicle seen leaving a robbery", "not a case or incident number"),
        ("", "26-004512", "Vehicle seen leaving a robbery", "purpose code is required"),
        ("NOSUCH", "26-004512", "Vehicle seen leaving a robbery", "unknown purpose code"),
        ("CRIME-INV", "26-004512", "evidence", "reason of at least 10 characters"),
    ],
)
def test_a_hold_needs_a_real_case_number_purpose_and_reason(settings, db, code, case, reason, message):
    read = add_read(settings, "7ABC123", 0)
    with pytest.raises(holds.HoldError, match=message):
        holds.place_on_read(settings, OFFICER, read.id, code, case, reason)
    assert holds.LegalHold.select().count() == 0 and records("hold.place") == []


def test_a_query_hold_freezes_the_set_it_found(settings, db):
    inside = [add_read(settings, "7ABC123", 0), add_read(settings, "7ABC128", 10)]
    add_read(settings, "7ABC124", 60 * 24 * 3)  # matches, but outside the period
    add_read(settings, "5LMN432", 5)  # in the period, does not match
    q = search.Query("7ABC*", "wildcard", since=T0 - dt.timedelta(hours=1), until=T0 + dt.timedelta(hours=1))
    hold = holds.place_on_query(settings, OFFICER, q, "STOLEN-VEH", "26-000417", "Reads of a stolen vehicle")
    assert hold.kind == "query" and hold.read_count == 2
    assert held_ids(hold) == sorted(r.id for r in inside)
    later = add_read(settings, "7ABC129", 20)  # would match now, was not there then
    assert held_ids(hold) == sorted(r.id for r in inside)
    assert holds.active_holds_on(later.id) == []
    [rec] = records("hold.place")
    assert json.loads(rec.query) == q.as_record() and rec.result_count == 2


def test_a_query_hold_needs_a_period_and_finds_something(settings, db):
    add_read(settings, "7ABC123", 0)
    with pytest.raises(holds.HoldError, match="needs a period"):
        holds.place_on_query(
            settings, OFFICER, search.Query("7ABC123"), "STOLEN-VEH", "26-000417", "Reads of a stolen vehicle"
        )
    with pytest.raises(holds.HoldError, match="finds no reads"):
        holds.place_on_query(
            settings,
            OFFICER,
            search.Query("9ZZZ999", since=T0, until=T0 + dt.timedelta(days=1)),
            "STOLEN-VEH",
            "26-000417",
            "Reads of a stolen vehicle",
        )
    with pytest.raises(holds.HoldError, match="ends before it starts"):
        holds.place_on_query(
            settings,
            OFFICER,
            search.Query("7ABC123", since=T0, until=T0 - dt.timedelta(days=1)),
            "STOLEN-VEH",
            "26-000417",
            "Reads of a stolen vehicle",
        )


def test_release_is_recorded_once_and_the_hold_stays_on_file(settings, db):
    read = add_read(settings, "7ABC123", 0)
    hold = holds.place_on_read(settings, OFFICER, read.id, "CRIME-INV", "26-004512", "Vehicle seen leaving a robbery")
    with pytest.raises(holds.HoldError, match="reason"):
        holds.release(ADMIN, hold.id, "")
    released = holds.release(ADMIN, hold.id, "Case closed by the district attorney")
    assert released.released_by == "admin.ray" and released.release_reason.startswith("Case closed")
    with pytest.raises(holds.HoldError, match="already released"):
        holds.release(ADMIN, hold.id, "Case closed by the district attorney")
    assert holds.active_holds_on(read.id) == []
    assert holds.LegalHold.get_by_id(hold.id).released_at is not None
    [rec] = records("hold.release")
    assert rec.username == "admin.ray" and json.loads(rec.details)["case_number"] == "26-004512"


def test_cli_place_list_release(settings, db):

    read = add_read(settings, "7ABC123", 0)
    env = {"WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    env.update(operator_env(settings))  # the ALPR administrator runs them
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "hold",
            "place",
            "--read",
            read.uuid,
            "--purpose",
            "CRIME-INV",
            "--case",
            "26-004512",
            "--reason",
            "Vehicle seen leaving a robbery",
        ],
        env=env,
    )
    assert out.exit_code == 0 and "1 read(s)" in out.output, out.output
    # no sync.enabled, hq_url or hq_public_key: nothing is sent, and the command must not promise it
    assert "sync is off on this post: headquarters does not get it" in out.output
    assert "next sync batch" not in out.output
    out = runner.invoke(
        main,
        [
            "hold",
            "place",
            "--plate",
            "7ABC*",
            "--mode",
            "wildcard",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-02",
            "--purpose",
            "CRIME-INV",
            "--case",
            "N/A",
            "--reason",
            "Vehicle seen leaving a robbery",
        ],
        env=env,
    )
    assert out.exit_code == 1 and "not a case or incident number" in out.output
    out = runner.invoke(
        main, ["hold", "list", "--case", "AUD-2026-11"], env={**env, "WAYPOST_POST__TIMEZONE": "America/Los_Angeles"}
    )
    assert out.exit_code == 0 and "26-004512" in out.output and "ACTIVE" in out.output
    placed = holds.LegalHold.select().get().placed_at.replace(tzinfo=dt.UTC)
    local = placed.astimezone(ZoneInfo("America/Los_Angeles"))
    assert f"placed {local:%Y-%m-%d %Z} by" in out.output  # the post's day and zone, as the pages show it
    hold_id = holds.LegalHold.select().get().id
    out = runner.invoke(main, ["hold", "release", str(hold_id), "--reason", "Case closed, no charges"], env=env)
    assert out.exit_code == 0, out.output
    assert "sync is off on this post: headquarters does not get it" in out.output
    assert [r.action for r in AccessRecord.select().where(AccessRecord.action.startswith("hold."))] == [
        "hold.place",
        "hold.list",
        "hold.release",
    ]
    for syncing in (
        {"WAYPOST_SYNC__HQ_URL": "https://hq.example.org"},  # pushed by hand
        {"WAYPOST_SYNC__HQ_PUBLIC_KEY": "A" * 43 + "="},
    ):  # pulled by headquarters
        out = runner.invoke(
            main,
            [
                "hold",
                "place",
                "--read",
                read.uuid,
                "--purpose",
                "CRIME-INV",
                "--case",
                "26-004512",
                "--reason",
                "Vehicle seen leaving a robbery",
            ],
            env={**env, **syncing},
        )
        assert out.exit_code == 0 and "headquarters gets it with the next sync batch" in out.output, out.output


def test_cli_a_bare_date_as_to_is_the_whole_day(settings, db):

    add_read(settings, "7ABC123", 0)  # 2026-03-01 12:00 UTC
    add_read(settings, "7ABC123", 24 * 60)  # the next day: outside
    env = {"WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    env.update(operator_env(settings))  # the ALPR administrator runs them
    out = CliRunner().invoke(
        main,
        [
            "hold",
            "place",
            "--plate",
            "7ABC123",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-01",
            "--purpose",
            "CRIME-INV",
            "--case",
            "26-004512",
            "--reason",
            "Vehicle seen leaving a robbery",
        ],
        env=env,
    )
    assert out.exit_code == 0 and "1 read(s)" in out.output, out.output


def test_cli_hold_window_is_utc_and_says_so(settings, db):
    add_read(settings, "7ABC123", 0)  # 2026-03-01 12:00 UTC, 04:00 PST
    env = {"WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    env.update(operator_env(settings))  # the ALPR administrator runs them
    usage = CliRunner().invoke(main, ["hold", "place", "--help"], env=env, terminal_width=200).output
    assert usage.count("read as UTC, not in post.timezone") == 2, usage
    # a time with an offset is that instant: 03:00-05:00 PST is 11:00-13:00 UTC
    out = CliRunner().invoke(
        main,
        [
            "hold",
            "place",
            "--plate",
            "7ABC123",
            "--from",
            "2026-03-01T03:00-08:00",
            "--to",
            "2026-03-01T05:00-08:00",
            "--purpose",
            "CRIME-INV",
            "--case",
            "26-004512",
            "--reason",
            "Vehicle seen leaving a robbery",
        ],
        env=env,
    )
    assert out.exit_code == 0 and "1 read(s)" in out.output, out.output
    query = json.loads(records("hold.place")[-1].query)
    assert (query["since"], query["until"]) == ("2026-03-01T11:00:00Z", "2026-03-01T13:00:00Z"), query
