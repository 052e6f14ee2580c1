"""Search, read detail and images through the real app: purpose first, one access record each."""

import datetime as dt
import re
import sqlite3
import threading

import numpy as np
import pytest

from appliance import audit as audit_mod
from appliance import users
from appliance.audit import system_actor
from appliance.models import AccessRecord
from appliance.store import EvidenceStore, NewRead, save_read
from tests.web.conftest import csrf, sign_in

T0 = dt.datetime(2026, 11, 20, 9, 30, 0)


@pytest.fixture
def stored(settings, db):
    rng = np.random.default_rng(3)
    reads = {}
    for i, (plate, alts) in enumerate([("7ABC123", ["7A8C123"]), ("7ABC128", []), ("5LMN432", [])]):
        crop = rng.integers(0, 255, (40, 120, 3), dtype=np.uint8)
        frame = rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)
        new = NewRead(
            plate_raw=plate,
            plate=plate,
            confidence=0.91 - i * 0.1,
            captured_at=T0 + dt.timedelta(minutes=i),
            alternatives=[{"text": a, "score": 0.2} for a in alts],
            first_seen_at=T0,
            last_seen_at=T0 + dt.timedelta(seconds=2),
            direction="toward",
        )
        reads[plate] = save_read(settings, EvidenceStore(settings), new, crop, frame)
    return reads


@pytest.fixture
def officer(settings, account):
    user = account("officer.lee", "officer")
    users.set_training(
        system_actor(settings),
        "officer.lee",
        completed_on=dt.date.today() - dt.timedelta(days=10),
        expires_on=dt.date.today() + dt.timedelta(days=300),
        course="POST ALPR 101",
    )
    return user


def records(action):
    return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def search(client, purpose="STOLEN-VEH", case="2026-004512", **fields):
    page = client.get("/reads/search")
    data = {
        "plate": "7ABC*",
        "mode": "wildcard",
        "purpose": purpose,
        "case_number": case,
        "csrf_token": csrf(page.get_data(as_text=True)),
    }
    data.update(fields)
    return client.post("/reads/search", data=data)


def test_search_needs_a_real_purpose_and_shows_nothing_without_one(client, officer, stored):
    sign_in(client, "officer.lee")
    for purpose, case in [
        ("", "2026-004512"),
        ("STOLEN-VEH", ""),
        ("STOLEN-VEH", "N/A"),
        ("STOLEN-VEH", "123"),
        ("NOSUCH", "2026-004512"),
    ]:
        resp = search(client, purpose=purpose, case=case)
        html = resp.get_data(as_text=True)
        assert resp.status_code == 400, (purpose, case)
        assert "7ABC123" not in html and 'id="results"' not in html
    assert records("read.search") == []


def test_wildcard_search_lists_reads_and_records_the_four_statutory_fields(client, officer, stored):
    sign_in(client, "officer.lee")
    resp = search(client)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert re.findall(r'class="plate" href="/reads/(\d+)">(\w+)<', html) == [
        (str(stored["7ABC128"].id), "7ABC128"),
        (str(stored["7ABC123"].id), "7ABC123"),
    ]
    [rec] = records("read.search")
    assert rec.username == "officer.lee" and rec.at is not None
    assert '"plate":"7ABC*"' in rec.query and '"mode":"wildcard"' in rec.query
    assert (rec.purpose_code, rec.case_number) == ("STOLEN-VEH", "2026-004512")
    assert rec.result_count == 2 and stored["7ABC123"].uuid in rec.object_ids


def test_alternatives_are_searched_and_shown(client, officer, stored):
    sign_in(client, "officer.lee")
    html = search(client, plate="7A8C123", mode="exact").get_data(as_text=True)
    assert "matched alternative" in html and "7ABC123" in html


def test_a_bad_query_says_why_and_is_recorded_as_refused(client, officer, stored):
    """Nothing is shown and no search runs, but the query was asked with a purpose: the access
    log keeps it as refused, with why (an officer probing with refused queries is on file)."""
    sign_in(client, "officer.lee")
    resp = search(client, plate="7?B*", mode="wildcard")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "three known characters in a row" in html and "7ABC123" not in html
    assert records("read.search") == [] and records("read.search_asked") == []
    [refused] = records("read.search_refused")
    assert (refused.username, refused.purpose_code, refused.case_number) == ("officer.lee", "STOLEN-VEH", "2026-004512")
    assert '"plate":"7?B*"' in refused.query and '"reason":"too broad"' in refused.details


def test_hostile_input_is_escaped(client, officer, stored):
    sign_in(client, "officer.lee")
    html = search(client, plate="<script>alert(1)</script>", mode="exact").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html


def test_read_detail_asks_for_a_purpose_then_records_the_view(client, officer, stored):
    sign_in(client, "officer.lee")
    read = stored["7ABC123"]
    first = client.get(f"/reads/{read.id}")
    assert first.status_code == 200 and 'id="purpose-form"' in first.get_data(as_text=True)
    assert "7ABC123" not in first.get_data(as_text=True)
    assert client.get(f"/reads/{read.id}/image/crop").status_code == 428
    token = csrf(first.get_data(as_text=True))
    stated = client.post(
        f"/reads/{read.id}", data={"purpose": "CRIME-INV", "case_number": "SO-26-1187", "csrf_token": token}
    )
    assert stated.status_code == 302
    page = client.get(f"/reads/{read.id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "7A8C123" in html and "toward" in html
    [view] = records("read.view")
    assert (view.username, view.purpose_code, view.case_number) == ("officer.lee", "CRIME-INV", "SO-26-1187")
    assert read.uuid in view.query
    img = client.get(f"/reads/{read.id}/image/crop")
    assert img.status_code == 200 and img.data[:2] == b"\xff\xd8"
    [ev] = records("evidence.view")
    assert ev.purpose_code == "CRIME-INV" and read.uuid in ev.object_ids


def test_an_auditor_finds_every_view_of_a_plate_by_the_plate(client, officer, stored):
    """Opening a read or its image names the plate in the record's query (with the read's uuid),
    so the access log's "data queried" filter finds who looked at a plate, not only who searched."""

    sign_in(client, "officer.lee")
    search(client)
    read = stored["7ABC128"]
    assert client.get(f"/reads/{read.id}").status_code == 200
    assert client.get(f"/reads/{read.id}/image/crop").status_code == 200
    found = audit_mod.browse(audit_mod.Filter(query="7ABC128")).records
    assert {"read.view", "evidence.view"} <= {r["action"] for r in found}
    assert not [
        r
        for r in audit_mod.browse(audit_mod.Filter(query="5LMN432")).records
        if r["action"] in ("read.view", "evidence.view")
    ]


def test_purpose_from_a_search_carries_to_the_results(client, officer, stored):
    sign_in(client, "officer.lee")
    search(client)
    read = stored["7ABC128"]
    assert client.get(f"/reads/{read.id}").status_code == 200
    assert client.get(f"/reads/{read.id}/image/frame").status_code == 200
    assert [r.case_number for r in records("read.view")] == ["2026-004512"]


def test_an_image_purged_while_its_view_waits_for_the_lock_is_not_sent(client, officer, stored, settings):
    """The image is looked up and read in the transaction that records its view: a purge that
    commits while the view waits for the write lock leaves nothing to send, and nothing recorded."""

    sign_in(client, "officer.lee")
    search(client)
    read = stored["7ABC128"]
    purge = sqlite3.connect(settings.db_path, isolation_level=None)
    purge.execute("BEGIN IMMEDIATE")
    purge.execute("DELETE FROM evidence WHERE read_id = ?", (read.id,))
    answer = {}
    view = threading.Thread(target=lambda: answer.update(r=client.get(f"/reads/{read.id}/image/frame")))
    view.start()
    view.join(0.5)
    assert view.is_alive()  # waiting for the lock (busy timeout 5 s)
    purge.execute("COMMIT")
    purge.close()
    view.join(10)
    assert answer["r"].status_code == 404
    assert records("evidence.view") == []


def test_no_path_from_the_request_reaches_the_file_system(client, officer, stored):
    sign_in(client, "officer.lee")
    search(client)
    read = stored["7ABC123"]
    for kind in ("../../waypost.db", "crop.jpg", "%2e%2e%2fsecret", "thumb"):
        assert client.get(f"/reads/{read.id}/image/{kind}").status_code == 404
    assert client.get("/reads/999999").status_code == 404


def test_refused_without_the_role_or_current_training(client, settings, account, stored):
    account("disp.kim", "dispatcher")
    sign_in(client, "disp.kim")
    assert client.get("/reads/search").status_code == 403
    assert client.get(f"/reads/{stored['7ABC123'].id}").status_code == 403
    client.post("/auth/logout", data={"csrf_token": csrf(client.get("/").get_data(as_text=True))})
    account("officer.new", "officer")  # no training recorded
    sign_in(client, "officer.new")
    resp = client.get("/reads/search")
    assert resp.status_code == 403 and "training" in resp.get_data(as_text=True).lower()
