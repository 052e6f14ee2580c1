"""The pages speak the site's time zone; storage, the access record's instants and exports stay UTC.

Reads are stored at known UTC instants (real SQLite file, the real app); the pages must show them
in America/Los_Angeles (the post's default) with the zone's abbreviation, and the search forms take
local times, also on the days the clocks change (2026-03-08 and 2026-11-01 in Los Angeles).
"""

import base64
import datetime as dt
import json
import re
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance import db as dbmod
from appliance import users
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from appliance.models import AccessRecord
from appliance.store import EvidenceStore, NewRead, save_read
from sync import hq
from tests.conftest import make_settings
from tests.web.conftest import PASSWORD, csrf, sign_in, state_purpose, tamper_record
from web import clock
from web.hq import create_hq_app

LA = ZoneInfo("America/Los_Angeles")
PURPOSE = {"purpose": "STOLEN-VEH", "case_number": "2026-004512"}

# UTC instant -> what the page must show in Los Angeles
WINTER = dt.datetime(2026, 11, 29, 14, 14, 3)  # 06:14:03 PST
FALL_BACK_PDT = dt.datetime(2026, 11, 1, 8, 30)  # 01:30 PDT, the first 01:30 of the day
FALL_BACK_PST = dt.datetime(2026, 11, 1, 9, 30)  # 01:30 PST, the second one
FALL_BACK_LATER = dt.datetime(2026, 11, 1, 10, 30)  # 02:30 PST
FALL_BACK_EARLIER = dt.datetime(2026, 11, 1, 7, 50)  # 00:50 PDT
SPRING_BEFORE = dt.datetime(2026, 3, 8, 9, 30)  # 01:30 PST
SPRING_AFTER = dt.datetime(2026, 3, 8, 10, 30)  # 03:30 PDT
SPRING_EARLIER = dt.datetime(2026, 3, 8, 8, 30)  # 00:30 PST


@pytest.fixture
def stored(settings, db):
    """One read per instant above, each with its own plate (7ABC1nn), crop and frame."""
    rng = np.random.default_rng(5)
    reads = {}
    for i, at in enumerate(
        [
            WINTER,
            FALL_BACK_PDT,
            FALL_BACK_PST,
            FALL_BACK_LATER,
            FALL_BACK_EARLIER,
            SPRING_BEFORE,
            SPRING_AFTER,
            SPRING_EARLIER,
        ]
    ):
        plate = f"7ABC1{i:02d}"
        new = NewRead(
            plate_raw=plate,
            plate=plate,
            confidence=0.9,
            captured_at=at,
            first_seen_at=at - dt.timedelta(seconds=2),
            last_seen_at=at + dt.timedelta(seconds=1),
        )
        reads[at] = save_read(
            settings,
            EvidenceStore(settings),
            new,
            rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
            rng.integers(0, 255, (180, 320, 3), dtype=np.uint8),
        )
    return reads


@pytest.fixture
def officer(trained):
    return trained("officer.lee", "officer")


def search(client, **fields):
    page = client.get("/reads/search")
    data = {"plate": "7ABC1*", "mode": "wildcard", "csrf_token": csrf(page.get_data(as_text=True)), **PURPOSE}
    data.update(fields)
    return client.post("/reads/search", data=data)


def found(resp) -> set[str]:
    assert resp.status_code == 200, resp.get_data(as_text=True)[-600:]
    return set(re.findall(r'class="plate" href="/reads/\d+">(\w+)<', resp.get_data(as_text=True)))


def last_search_query() -> dict:
    rec = AccessRecord.select().where(AccessRecord.action == "read.search").order_by(AccessRecord.seq.desc()).first()
    return json.loads(rec.query)


def plates(stored, *instants) -> set[str]:
    return {stored[at].plate for at in instants}


# --- the filter and the conversion -------------------------------------------------------------------


def test_localtime_shows_one_instant_with_its_zone_from_every_stored_form():
    for value in (
        WINTER,
        "2026-11-29T14:14:03.000000Z",
        "2026-11-29T14:14:03",
        "2026-11-29 14:14:03",
        WINTER.replace(tzinfo=dt.UTC),
    ):
        assert clock.localtime(value, tz=LA) == "2026-11-29 06:14:03 PST", value
    assert clock.localtime(WINTER, "minutes", tz=LA) == "2026-11-29 06:14 PST"
    assert clock.localtime(dt.datetime(2026, 11, 29, 5, 0), "date", tz=LA) == "2026-11-28"  # still the 28th there
    assert clock.localtime(WINTER, "time", tz=LA) == "06:14:03 PST"
    # The repeated hour: the same wall time twice, told apart by the zone's abbreviation.
    assert clock.localtime(FALL_BACK_PDT, tz=LA) == "2026-11-01 01:30:00 PDT"
    assert clock.localtime(FALL_BACK_PST, tz=LA) == "2026-11-01 01:30:00 PST"
    assert clock.localtime(None, tz=LA) == ""
    assert clock.localtime("tampered", tz=LA) == "tampered"  # shown as stored, never a failed page
    with pytest.raises(ValueError, match="not one of"):
        clock.localtime(WINTER, "weekday", tz=LA)


# --- the post's pages --------------------------------------------------------------------------------


def test_results_and_the_read_show_local_time_with_the_zone(client, officer, stored):
    sign_in(client, "officer.lee")
    form = client.get("/reads/search").get_data(as_text=True)
    assert "From (America/Los_Angeles)" in form and "To (America/Los_Angeles)" in form and "(UTC)" not in form
    assert "Times are shown in America/Los_Angeles" in form
    html = search(client, plate=stored[WINTER].plate, mode="exact").get_data(as_text=True)
    row = html[html.index('id="result-table"') :]
    assert "2026-11-29 06:14:03 PST" in row
    assert "14:14:03" not in html and "UTC" not in row
    detail = client.get(f"/reads/{stored[WINTER].id}").get_data(as_text=True)
    seen = detail[detail.index("<dt>Seen</dt>") :]
    seen = seen[: seen.index("</dd>")]
    assert "2026-11-29 06:14:03 PST" in seen and "06:14:01 PST" in seen and "06:14:04 PST" in seen
    assert "14:14" not in detail and "UTC" not in seen


def test_a_local_window_finds_the_reads_inside_it_and_not_outside(client, officer, stored):
    sign_in(client, "officer.lee")
    # An ordinary winter afternoon: 06:00-06:30 Pacific is 14:00-14:30 UTC.
    assert found(search(client, since="2026-11-29T06:00", until="2026-11-29T06:30")) == plates(stored, WINTER)
    # The same wall times read as UTC (as the form used to) hold nothing.
    assert found(search(client, since="2026-11-29T14:00", until="2026-11-29T14:30")) == set()
    q = last_search_query()
    assert (q["since"], q["until"]) == ("2026-11-29T22:00:00Z", "2026-11-29T22:30:59Z")
    # The form takes minutes: a window that ends at 06:14 takes in the read at 06:14:03.
    assert found(search(client, since="2026-11-29T06:00", until="2026-11-29T06:14")) == plates(stored, WINTER)
    assert last_search_query()["until_local"] == "2026-11-29T06:14:59-08:00"
    assert found(search(client, since="2026-11-29T06:00", until="2026-11-29T06:13")) == set()


def test_a_window_over_the_repeated_hour_covers_both_and_is_recorded_unambiguously(client, officer, stored):
    sign_in(client, "officer.lee")
    # 01:00-01:45 on 2026-11-01 happens twice: from the first 01:00 (PDT) to the second 01:45 (PST).
    hits = found(search(client, since="2026-11-01T01:00", until="2026-11-01T01:45"))
    assert hits == plates(stored, FALL_BACK_PDT, FALL_BACK_PST)
    q = last_search_query()
    assert q["since"] == "2026-11-01T08:00:00Z" and q["until"] == "2026-11-01T09:45:59Z"
    assert q["since_local"] == "2026-11-01T01:00:00-07:00" and q["until_local"] == "2026-11-01T01:45:59-08:00"
    assert q["zone"] == "America/Los_Angeles"
    # From 02:00 (after the change) the two 01:30s and the 00:50 are outside, 02:30 PST inside.
    assert found(search(client, since="2026-11-01T02:00", until="2026-11-01T03:00")) == plates(stored, FALL_BACK_LATER)
    assert found(search(client, since="2026-11-01T00:00", until="2026-11-01T00:59")) == plates(
        stored, FALL_BACK_EARLIER
    )


def test_a_window_over_the_skipped_hour_and_a_time_that_never_happened(client, officer, stored):
    sign_in(client, "officer.lee")
    # 01:00 PST to 04:00 PDT on 2026-03-08 is two hours of real time: 09:00-11:00 UTC.
    assert found(search(client, since="2026-03-08T01:00", until="2026-03-08T04:00")) == plates(
        stored, SPRING_BEFORE, SPRING_AFTER
    )
    q = last_search_query()
    assert (q["since"], q["until"]) == ("2026-03-08T09:00:00Z", "2026-03-08T11:00:59Z")
    assert (q["since_local"], q["until_local"]) == ("2026-03-08T01:00:00-08:00", "2026-03-08T04:00:59-07:00")
    assert found(search(client, since="2026-03-08T03:00", until="2026-03-08T04:00")) == plates(stored, SPRING_AFTER)
    searches = AccessRecord.select().where(AccessRecord.action == "read.search").count()
    # 02:30 was skipped that night: the form says so, and nothing is searched or recorded.
    refused = search(client, since="2026-03-08T02:30", until="2026-03-08T04:00")
    html = refused.get_data(as_text=True)
    assert refused.status_code == 400 and 'id="results"' not in html
    assert "2026-03-08 02:30 does not exist in America/Los_Angeles" in html
    assert AccessRecord.select().where(AccessRecord.action == "read.search").count() == searches


# --- headquarters ------------------------------------------------------------------------------------


@pytest.fixture
def hq_app(tmp_path):
    """Headquarters in New York (its own configuration's zone) over a SQLite file holding two reads
    of post-a, stored as batches store them (ISO strings, UTC), and a trained officer."""
    settings = make_settings(
        tmp_path / "hq-data", post__id="hq", post__name="Headquarters", post__timezone="America/New_York"
    )
    bootstrap(settings, create_admin=False)
    app = create_hq_app(str(tmp_path / "hq" / "hq.sqlite"), settings=settings)
    app.config["TESTING"] = True
    with hq.hq_database.connection_context():
        key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        hq.enroll("post-a", "Main St", base64.b64encode(key))
        for read_id, plate, at in (
            (1, "7XYZ101", "2026-11-29T14:14:03.250000"),  # 09:14:03 EST
            (2, "7XYZ102", "2026-11-29T16:40:00.000000"),
        ):  # 11:40:00 EST
            hq.HQRead.insert(
                id=read_id,
                post_id="post-a",
                uuid=f"u{read_id}",
                seq=read_id,
                captured_at=at,
                plate=plate,
                content_hash="0" * 64,
                data={"camera_id": "cam-a", "plate": plate, "confidence": 0.9},
            ).execute()
    with dbmod.connection():
        actor = system_actor(settings)
        users.add(
            actor,
            username="officer.lee",
            display_name="Lee",
            organization="PD",
            role="officer",
            password=PASSWORD,
            must_change_password=False,
        )
        users.set_training(
            actor,
            "officer.lee",
            dt.date.today() - dt.timedelta(days=30),
            "ALPR 101",
            dt.date.today() + dt.timedelta(days=335),
        )
    yield app, settings
    if not hq.hq_database.is_closed():
        hq.hq_database.close()


def test_headquarters_shows_and_takes_its_own_zone(hq_app):
    app, _ = hq_app
    client = app.test_client()
    sign_in(client, "officer.lee")
    form = client.get("/hq/reads/search").get_data(as_text=True)
    assert "From (America/New_York)" in form and "Times are shown in America/New_York" in form
    data = {
        "plate": "7XYZ1*",
        "mode": "wildcard",
        "csrf_token": csrf(form),
        **PURPOSE,
        "since": "2026-11-29T09:00",
        "until": "2026-11-29T10:00",
    }
    resp = client.post("/hq/reads/search", data=data)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200, html[-600:]
    assert re.findall(r'<a class="plate" href="/hq/reads/\d+">(\w+)</a>', html) == ["7XYZ101"]
    assert "2026-11-29 09:14:03 EST" in html
    with dbmod.connection():
        rec = AccessRecord.select().where(AccessRecord.action == "read.search").get()
    q = json.loads(rec.query)
    assert (q["since"], q["until"]) == ("2026-11-29T14:00:00Z", "2026-11-29T15:00:59Z")
    assert (q["since_local"], q["zone"]) == ("2026-11-29T09:00:00-05:00", "America/New_York")
    detail = client.get("/hq/reads/1").get_data(as_text=True)
    assert "2026-11-29 09:14:03 EST" in detail and "UTC" not in detail


def test_the_access_log_shows_each_record_to_the_second_with_its_zone(client, officer, trained, stored):
    sign_in(client, "officer.lee")
    search(client, since="2026-11-01T01:00", until="2026-11-01T01:45")
    rec = AccessRecord.select().where(AccessRecord.action == "read.search").get()
    auditor = client.application.test_client()
    trained("auditor.kim", "auditor")
    sign_in(auditor, "auditor.kim")
    state_purpose(auditor, "AUDIT", "AUD-2026-11")
    log = auditor.get("/audit/").get_data(as_text=True)
    row = log[log.index(f'-{rec.seq}"><td>{rec.seq}</td>') :]
    row = row[: row.index("</tr>")]
    shown = clock.localtime(rec.at, tz=LA)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d P[SD]T", shown)
    assert f'<td class="nowrap">{shown}</td>' in row
    assert "2026-11-01T08:00:00Z" in row and "2026-11-01T01:45:59-08:00" in row  # the query as recorded


def test_a_tampered_time_is_shown_as_found_on_the_verification_page(client, settings, officer, trained, stored):
    sign_in(client, "officer.lee")
    search(client, since="2026-11-29T06:00", until="2026-11-29T06:30")
    target = AccessRecord.get(AccessRecord.action == "read.search").seq
    tamper_record(settings, target, "at", "yesterday at noon")
    trained("auditor.kim", "auditor")
    auditor = client.application.test_client()
    sign_in(auditor, "auditor.kim")
    state_purpose(auditor, "AUDIT", "AUD-2026-11")
    token = csrf(auditor.get("/audit/").get_data(as_text=True))
    resp = auditor.post("/audit/verify", data={"csrf_token": token})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and f"BROKEN at record {target}" in html
    bad = html[html.index(f'id="bad-{target}"') :]
    assert '<td class="nowrap">yesterday at noon</td>' in bad[: bad.index("</tr>")]
