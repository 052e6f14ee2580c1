"""Legal holds through the real app: placed from the read page, listed, opened, released only by
an administrator, every step an access record."""

import datetime as dt
import json
import re

import numpy as np
import pytest

from appliance import export, holds, users
from appliance.audit import system_actor
from appliance.models import AccessRecord
from appliance.store import EvidenceStore, NewRead, save_read
from tests.web.conftest import csrf, sign_in
from tests.web.conftest import state_purpose as state_session_purpose

T0 = dt.datetime(2026, 11, 20, 9, 30, 0)
TRAINING = {
    "completed_on": dt.date.today() - dt.timedelta(days=10),
    "expires_on": dt.date.today() + dt.timedelta(days=300),
    "course": "POST ALPR 101",
}


@pytest.fixture
def stored(settings, db):
    rng = np.random.default_rng(3)
    out = {}
    for i, plate in enumerate(["7ABC123", "7ABC128", "5LMN432"]):
        new = NewRead(plate_raw=plate, plate=plate, confidence=0.9, captured_at=T0 + dt.timedelta(minutes=i))
        out[plate] = save_read(
            settings, EvidenceStore(settings), new, rng.integers(0, 255, (40, 120, 3), dtype=np.uint8), None
        )
    return out


@pytest.fixture
def people(settings, account):
    for name, role in [("officer.lee", "officer"), ("admin.ray", "admin"), ("dispatch.kim", "dispatcher")]:
        account(name, role)
        users.set_training(system_actor(settings), name, **TRAINING)


def records(action):
    return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def state_purpose(client, read_id, case="2026-004512"):
    page = client.get(f"/reads/{read_id}")
    return client.post(
        f"/reads/{read_id}",
        data={"purpose": "CRIME-INV", "case_number": case, "csrf_token": csrf(page.get_data(as_text=True))},
    )


def place_from_read_page(client, read_id, case="2026-004512", reason="Vehicle seen leaving a robbery"):
    page = client.get(f"/reads/{read_id}").get_data(as_text=True)
    assert 'id="hold-form"' in page
    form = page[page.index('id="hold-form"') :]
    return client.post(
        f"/holds/read/{read_id}",
        data={"purpose": "CRIME-INV", "case_number": case, "reason": reason, "csrf_token": csrf(form)},
    )


def test_an_officer_places_a_hold_from_the_read_page(app, people, stored):
    client = app.test_client()
    sign_in(client, "officer.lee")
    read = stored["7ABC123"]
    state_purpose(client, read.id)
    resp = place_from_read_page(client, read.id)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/reads/{read.id}")
    [hold] = holds.LegalHold.select()
    assert (hold.kind, hold.case_number, hold.placed_by, hold.read_count) == ("read", "2026-004512", "officer.lee", 1)
    [rec] = records("hold.place")
    assert (rec.username, rec.purpose_code, rec.case_number) == ("officer.lee", "CRIME-INV", "2026-004512")
    assert read.uuid in rec.object_ids and rec.client_addr != "local"
    html = client.get(f"/reads/{read.id}").get_data(as_text=True)
    assert f'id="held-by-{hold.id}"' in html and "not purged automatically" in html


def test_a_placeholder_case_number_places_no_hold(app, people, stored):
    client = app.test_client()
    sign_in(client, "officer.lee")
    read = stored["7ABC123"]
    state_purpose(client, read.id)
    resp = place_from_read_page(client, read.id, case="N/A")
    assert resp.status_code == 302
    html = client.get(f"/reads/{read.id}").get_data(as_text=True)
    assert "Hold not placed" in html and "not a case or incident number" in html
    assert holds.LegalHold.select().count() == 0 and records("hold.place") == []


def test_those_who_may_not_hold_get_no_form_and_a_refusal(app, settings, people, stored, account):
    read = stored["7ABC123"]
    client = app.test_client()
    sign_in(client, "dispatch.kim")
    token = csrf(client.get("/auth/password").get_data(as_text=True))
    resp = client.post(
        f"/holds/read/{read.id}",
        data={
            "purpose": "CRIME-INV",
            "case_number": "2026-004512",
            "reason": "Vehicle seen leaving a robbery",
            "csrf_token": token,
        },
    )
    assert resp.status_code == 403
    assert client.get("/holds/").status_code == 403
    assert holds.LegalHold.select().count() == 0


def test_release_is_refused_to_officers_and_allowed_to_administrators(app, settings, people, stored):
    read = stored["7ABC123"]
    hold = holds.place_on_read(
        settings, system_actor(settings), read.id, "CRIME-INV", "2026-004512", "Vehicle seen leaving a robbery"
    )
    officer = app.test_client()
    sign_in(officer, "officer.lee")
    page = officer.get(f"/holds/{hold.id}")  # a purpose first: the hold lists plates
    assert 'id="purpose-form"' in page.get_data(as_text=True) and records("hold.view") == []
    officer.post(
        f"/holds/{hold.id}",
        data={"purpose": "CRIME-INV", "case_number": "2026-004512", "csrf_token": csrf(page.get_data(as_text=True))},
    )
    html = officer.get(f"/holds/{hold.id}").get_data(as_text=True)
    assert "7ABC123" in html and 'id="release-form"' not in html
    assert len(records("hold.view")) == 1
    resp = officer.post(
        f"/holds/{hold.id}/release", data={"reason": "Case closed, no charges filed", "csrf_token": csrf(html)}
    )
    assert resp.status_code == 403
    assert holds.LegalHold.get_by_id(hold.id).active and records("hold.release") == []

    admin = app.test_client()
    sign_in(admin, "admin.ray")
    state_purpose(admin, read.id)
    html = admin.get(f"/holds/{hold.id}").get_data(as_text=True)
    assert 'id="release-form"' in html
    resp = admin.post(
        f"/holds/{hold.id}/release", data={"reason": "Case closed, no charges filed", "csrf_token": csrf(html)}
    )
    assert resp.status_code == 302
    released = holds.LegalHold.get_by_id(hold.id)
    assert not released.active and released.released_by == "admin.ray"
    [rec] = records("hold.release")
    assert rec.username == "admin.ray" and json.loads(rec.details)["reason"] == "Case closed, no charges filed"
    listing = admin.get("/holds/").get_data(as_text=True)
    assert "released" in listing and "admin.ray" in listing
    assert records("hold.list")[-1].username == "admin.ray"


def test_a_query_hold_from_the_form_freezes_its_set(app, settings, people, stored):
    client = app.test_client()
    sign_in(client, "officer.lee")
    page = client.get("/holds/new").get_data(as_text=True)
    resp = client.post(
        "/holds/new",
        data={
            "plate": "7ABC*",
            "mode": "wildcard",
            "since": "2026-11-20T01:00",
            "until": "2026-11-20T02:00",  # PST
            "purpose": "STOLEN-VEH",
            "case_number": "2026-000417",
            "reason": "Reads of a stolen vehicle",
            "csrf_token": csrf(page),
        },
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    [hold] = holds.LegalHold.select()
    assert hold.read_count == 2
    ids = sorted(r.read_id for r in holds.HoldRead.select())
    assert ids == sorted([stored["7ABC123"].id, stored["7ABC128"].id])
    later = save_read(
        settings,
        EvidenceStore(settings),
        NewRead(plate_raw="7ABC129", plate="7ABC129", confidence=0.9, captured_at=T0 + dt.timedelta(minutes=5)),
        None,
        None,
    )
    assert sorted(r.read_id for r in holds.HoldRead.select()) == ids and holds.active_holds_on(later.id) == []
    # placing the hold under its case did not change the session's purpose: none was stated yet
    assert "Why are you opening" in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert state_session_purpose(client, "STOLEN-VEH", "2026-000417", resp.headers["Location"]).status_code == 302
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert re.findall(r'class="plate" href="/reads/\d+">(\w+)<', html) == ["7ABC128", "7ABC123"]
    assert (
        "found from 2026-11-20 01:00:00 PST to 2026-11-20 02:00:59 PST" in html
    )  # the window: to the end of the minute typed
    listing = client.get("/holds/").get_data(as_text=True)  # the list speaks local time too
    assert "2026-11-20 01:00:00 PST to 2026-11-20 02:00:59 PST" in listing and "T09:00:00" not in listing
    [rec] = records("hold.place")
    assert rec.result_count == 2 and (rec.purpose_code, rec.case_number) == ("STOLEN-VEH", "2026-000417")


def test_a_query_hold_without_a_period_is_refused_with_the_reason(app, people, stored):
    client = app.test_client()
    sign_in(client, "officer.lee")
    page = client.get("/holds/new").get_data(as_text=True)
    resp = client.post(
        "/holds/new",
        data={
            "plate": "7ABC*",
            "mode": "wildcard",
            "purpose": "STOLEN-VEH",
            "case_number": "2026-000417",
            "reason": "Reads of a stolen vehicle",
            "csrf_token": csrf(page),
        },
    )
    assert resp.status_code == 400 and holds.LegalHold.select().count() == 0


def test_placing_a_hold_leaves_the_session_purpose_as_stated(app, people, stored):
    """The auditor's finding: after a hold under CRIME-INV 26-004513, the officer's next read and
    image views were recorded under it, not under the purpose the officer had stated."""
    client = app.test_client()
    sign_in(client, "officer.lee")
    read, other = stored["7ABC123"], stored["5LMN432"]
    state_session_purpose(client, "STOLEN-VEH", "26-000417")
    assert place_from_read_page(client, read.id, case="26-004513").status_code == 302
    assert [(r.purpose_code, r.case_number) for r in records("hold.place")] == [("CRIME-INV", "26-004513")]
    client.get(f"/reads/{other.id}")
    client.get(f"/reads/{other.id}/image/crop")
    for action in ("read.view", "evidence.view"):
        assert [(r.purpose_code, r.case_number) for r in records(action)][-1] == ("STOLEN-VEH", "26-000417"), action


def test_the_hold_list_asks_for_a_purpose_and_records_it_with_the_plates(app, people, stored):
    client = app.test_client()
    sign_in(client, "officer.lee")
    state_purpose(client, stored["7ABC123"].id)
    page = client.get("/holds/new").get_data(as_text=True)
    data = {"plate": "7ABC*", "mode": "wildcard", "since": "2026-11-20T01:00", "until": "2026-11-20T02:00"}
    data.update(purpose="STOLEN-VEH", case_number="2026-000417", reason="Reads of a stolen vehicle")
    assert client.post("/holds/new", data={**data, "csrf_token": csrf(page)}).status_code == 302
    fresh = app.test_client()
    sign_in(fresh, "officer.lee")
    asked = fresh.get("/holds/").get_data(as_text=True)
    assert "Why are you opening the legal holds" in asked and "7ABC*" not in asked
    assert records("hold.list") == []  # nothing shown, nothing recorded
    state_session_purpose(fresh, "AUDIT", "AUD-2026-11", "/holds/")
    assert "7ABC*" in fresh.get("/holds/").get_data(as_text=True)
    [rec] = records("hold.list")
    assert (rec.purpose_code, rec.case_number) == ("AUDIT", "AUD-2026-11")
    assert json.loads(rec.query)["plates"] == ["7ABC*"]


def test_an_officer_exports_a_holds_evidence_under_the_holds_case(app, people, stored, tmp_path):
    client = app.test_client()
    sign_in(client, "officer.lee")
    read = stored["7ABC123"]
    state_purpose(client, read.id, case="2026-004512")
    assert place_from_read_page(client, read.id).status_code == 302
    [hold] = holds.LegalHold.select()
    state_session_purpose(client, "STOLEN-VEH", "26-999999")  # another case: no export under it
    page = client.get(f"/holds/{hold.id}").get_data(as_text=True)
    assert 'id="export-needs-case"' in page and 'id="export-hold"' not in page
    token = csrf(page)
    refused = client.post(f"/holds/{hold.id}/export", data={"csrf_token": token})
    assert refused.status_code == 302 and records("hold.export") == []
    state_session_purpose(client, "CRIME-INV", "2026-004512")
    page = client.get(f"/holds/{hold.id}").get_data(as_text=True)
    resp = client.post(f"/holds/{hold.id}/export", data={"csrf_token": csrf(page)})
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    zipped = tmp_path / "hold.zip"
    zipped.write_bytes(resp.get_data())
    assert export.verify(zipped).ok
    [rec] = records("hold.export")
    assert (rec.username, rec.purpose_code, rec.case_number) == ("officer.lee", "CRIME-INV", "2026-004512")
    assert read.plate in rec.query or read.uuid in rec.object_ids
