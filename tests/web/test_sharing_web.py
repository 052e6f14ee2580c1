"""Sharing requests through the real app: the recipient rule, review, and the export download."""

import datetime as dt
import json
import zipfile

import numpy as np
import pytest
from playwright.sync_api import expect

from appliance import export, sharing, users
from appliance.audit import system_actor
from appliance.models import AccessRecord
from appliance.store import EvidenceStore, NewRead, save_read
from tests.web.conftest import CHROMIUM, PASSWORD, csrf, sign_in

T0 = dt.datetime(2026, 5, 11, 8, 15)
TRAINED = dict(
    completed_on=dt.date.today() - dt.timedelta(days=10),
    expires_on=dt.date.today() + dt.timedelta(days=300),
    course="POST ALPR 101",
)


@pytest.fixture
def stored(settings, db):
    rng = np.random.default_rng(11)
    out = []
    for i, plate in enumerate(["8XYZ456", "8XYZ456", "4QRS111"]):
        out.append(
            save_read(
                settings,
                EvidenceStore(settings),
                NewRead(
                    plate_raw=plate,
                    plate=plate,
                    confidence=0.88,
                    captured_at=T0 + dt.timedelta(minutes=i),
                    alternatives=[{"text": "8XY2456", "score": 0.2}],
                ),
                rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
                rng.integers(0, 255, (120, 200, 3), dtype=np.uint8),
            )
        )
    return out


@pytest.fixture
def people(settings, account):
    for name, role in [("officer.lee", "officer"), ("admin.chen", "admin"), ("dispatch.kim", "dispatcher")]:
        account(name, role)
        users.set_training(system_actor(settings), name, **TRAINED)


VIEWING = ("sharing.list", "sharing.view")


def records(prefix="sharing.", viewing=False):
    """The access records of the sharing steps; with viewing=True the page views as well."""
    q = AccessRecord.select().where(AccessRecord.action.startswith(prefix))
    if not viewing:
        q = q.where(AccessRecord.action.not_in(VIEWING))
    return list(q.order_by(AccessRecord.seq))


def form_data(**changes):
    data = {
        "agency_name": "San Jose Police Department",
        "agency_type": "ca-city-police",
        "agency_state": "CA",
        "requester_name": "Det. Ana Silva",
        "requester_title": "Detective",
        "requester_contact": "asilva@sjpd.example",
        "intended_purpose": "Identify the vehicle in a hit-and-run on May 11",
        "legal_authority": "SJPD 26-88123",
        "plate": "8XYZ456",
        "match_mode": "exact",
        "period_start_at": "2026-05-10T00:00",
        "period_end_at": "2026-05-12T00:00",
        "purpose": "CRIME-INV",
        "case_number": "2026-005511",
    }
    data.update(changes)
    return data


def post_request(client, **changes):
    token = csrf(client.get("/sharing/new").get_data(as_text=True))
    return client.post("/sharing/new", data={**form_data(**changes), "csrf_token": token})


def decide(client, request_id, decision, note="Approved by Capt. Ruiz"):
    token = csrf(client.get(f"/sharing/{request_id}").get_data(as_text=True))
    return client.post(f"/sharing/{request_id}/decide", data={"decision": decision, "note": note, "csrf_token": token})


def export_zip(client, request_id):
    token = csrf(client.get(f"/sharing/{request_id}").get_data(as_text=True))
    return client.post(f"/sharing/{request_id}/export", data={"csrf_token": token})


@pytest.mark.parametrize(
    "agency_type, state, words",
    [
        ("out-of-state", "NV", "another state"),
        ("federal", "DC", "federal agency"),
        ("private", "CA", "private entity"),
        ("ca-city-police", "AZ", "in AZ, not California"),
    ],
)
def test_non_california_public_recipients_are_refused_on_the_page(client, people, agency_type, state, words):
    sign_in(client, "officer.lee")
    resp = post_request(client, agency_type=agency_type, agency_state=state)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and 'id="refused"' in html
    assert words in html and "1798.90.55" in html and "2023-DLE-06" in html
    assert sharing.SharingRequest.select().count() == 0
    assert [r.action for r in records()] == ["sharing.refuse"]


def test_an_officer_records_a_request_with_the_statutory_fields(client, people):
    sign_in(client, "officer.lee")
    resp = post_request(client)
    assert resp.status_code == 302
    [req] = sharing.SharingRequest.select()
    assert resp.headers["Location"].endswith(f"/sharing/{req.id}")
    assert (req.status, req.agency_name, req.requester_name, req.created_by) == (
        "pending",
        "San Jose Police Department",
        "Det. Ana Silva",
        "officer.lee",
    )
    # The period is typed in the post's zone (Los Angeles, PDT in May) and kept in UTC.
    assert (req.period_start_at, req.period_end_at) == (
        dt.datetime(2026, 5, 10, 7, 0),
        dt.datetime(2026, 5, 12, 7, 0, 59, 999999),
    )
    [rec] = records()
    assert rec.action == "sharing.request" and rec.at and rec.username == "officer.lee"
    assert json.loads(rec.query)["plate"] == "8XYZ456" and (rec.purpose_code, rec.case_number) == (
        "CRIME-INV",
        "2026-005511",
    )
    page = client.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert "San Jose Police Department" in page and 'id="approve"' not in page and 'id="export"' not in page
    assert "San Jose Police Department" in client.get("/sharing/").get_data(as_text=True)


def test_bad_input_and_a_placeholder_case_are_refused_with_the_field(client, people):
    sign_in(client, "officer.lee")
    resp = post_request(client, period_end_at="2026-05-01T00:00")
    assert resp.status_code == 400 and "ends before it starts" in resp.get_data(as_text=True)
    resp = post_request(client, case_number="N/A")
    assert resp.status_code == 400 and "not a case or incident number" in resp.get_data(as_text=True)
    resp = post_request(client, period_start_at="")
    assert resp.status_code == 400 and "period (from and to) is required" in resp.get_data(as_text=True)
    assert sharing.SharingRequest.select().count() == 0 and records() == []


def test_officers_cannot_decide_or_export_and_dispatchers_see_nothing(client, people, stored):
    sign_in(client, "officer.lee")
    post_request(client)
    [req] = sharing.SharingRequest.select()
    token = csrf(client.get(f"/sharing/{req.id}").get_data(as_text=True))
    assert (
        client.post(
            f"/sharing/{req.id}/decide", data={"decision": "approve", "note": "ok then", "csrf_token": token}
        ).status_code
        == 403
    )
    assert client.post(f"/sharing/{req.id}/export", data={"csrf_token": token}).status_code == 403
    other = client.application.test_client()
    sign_in(other, "dispatch.kim")
    assert other.get("/sharing/").status_code == 403 and other.get(f"/sharing/{req.id}").status_code == 403
    assert sharing.get(req.id).status == "pending" and [r.action for r in records()] == ["sharing.request"]


def test_an_unapproved_request_cannot_be_exported_and_nothing_is_written(client, people, stored, settings):
    sign_in(client, "admin.chen")
    post_request(client)
    [req] = sharing.SharingRequest.select()
    before = records()
    seq = AccessRecord.select().count()
    resp = export_zip(client, req.id)
    assert resp.status_code == 409 and "pending, not approved" in resp.get_data(as_text=True)
    assert resp.mimetype == "text/html"
    # the page that took the token and the 409 page each show the request: two views, no export
    assert [r.action for r in AccessRecord.select().where(AccessRecord.seq > seq)] == ["sharing.view"] * 2
    decide(client, req.id, "deny", "No nexus to a California case shown")
    resp = export_zip(client, req.id)
    assert resp.status_code == 409 and "denied, not approved" in resp.get_data(as_text=True)
    assert [r.action for r in records()] == [r.action for r in before] + ["sharing.deny"]
    assert sharing.SharingExport.select().count() == 0
    exports = settings.data_dir / "exports"
    assert not exports.exists() or list(exports.iterdir()) == []
    # a decision is final
    again = decide(client, req.id, "approve", "Second thoughts")
    assert again.status_code == 409 and "a decision is final" in again.get_data(as_text=True)


def test_export_without_a_csrf_token_is_refused(client, people, stored):
    sign_in(client, "admin.chen")
    post_request(client)
    [req] = sharing.SharingRequest.select()
    decide(client, req.id, "approve")
    assert client.post(f"/sharing/{req.id}/export", data={}).status_code == 400
    assert sharing.SharingExport.select().count() == 0


def test_admin_approves_and_downloads_an_export_that_verifies(client, people, stored, settings, tmp_path):
    sign_in(client, "officer.lee")
    post_request(client)
    [req] = sharing.SharingRequest.select()
    admin = client.application.test_client()
    sign_in(admin, "admin.chen")
    page = admin.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert 'id="approve"' in page and 'id="export"' not in page
    assert decide(admin, req.id, "approve").status_code == 302
    resp = export_zip(admin, req.id)
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    assert "attachment" in resp.headers["Content-Disposition"] and resp.headers["Cache-Control"] == "no-store"
    path = tmp_path / "download.zip"
    path.write_bytes(resp.data)
    report = export.verify(path)
    assert report.ok, report.problem
    assert "2 read(s), 4 image(s)" in report.facts[0]
    # nothing of the export stays on the post's disk
    assert list((settings.data_dir / "exports").iterdir()) == []
    actions = [(r.action, r.username, r.purpose_code, r.case_number) for r in records()]
    assert actions == [
        ("sharing.request", "officer.lee", "CRIME-INV", "2026-005511"),
        ("sharing.approve", "admin.chen", "CRIME-INV", "2026-005511"),
        ("sharing.export", "admin.chen", "CRIME-INV", "2026-005511"),
    ]
    assert all(r.at and r.organization and json.loads(r.query)["plate"] == "8XYZ456" for r in records())
    page = admin.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert 'id="exports"' in page and "admin.chen" in page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)")
def test_browser_admin_records_approves_and_downloads(live_server, people, stored, page, artifacts, tmp_path):

    page.goto(live_server + "/auth/login")
    page.fill("#username", "admin.chen")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.goto(live_server + "/sharing/new")
    for field, value in form_data().items():
        if field in ("agency_type", "match_mode", "purpose"):
            page.select_option(f"#{field}", value)
        else:
            page.fill(f"#{field}", value)
    page.select_option("#agency_type", "federal")
    page.fill("#agency_state", "DC")
    page.click("#record-request")
    expect(page.locator("#refused")).to_contain_text("federal agency")
    page.screenshot(path=str(artifacts / "1-federal-refused.png"), full_page=True)

    page.select_option("#agency_type", "ca-city-police")
    page.fill("#agency_state", "CA")
    page.fill("#case_number", "2026-005511")
    page.click("#record-request")
    expect(page.locator("#status")).to_have_text("pending")
    page.screenshot(path=str(artifacts / "2-recorded.png"), full_page=True)
    page.fill("#note", "Approved by Capt. Ruiz: California agency, case nexus shown")
    page.click("#approve")
    expect(page.locator("#status")).to_have_text("approved")
    with page.expect_download() as info:
        page.click("#export")
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(str(target))
    assert target.name.startswith("waypost-evidence-request-")
    report = export.verify(target)
    assert report.ok, report.problem
    page.reload()
    expect(page.locator("#exports")).to_contain_text("admin.chen")
    page.screenshot(path=str(artifacts / "3-exported.png"), full_page=True)
    assert [r.action for r in records()] == ["sharing.refuse", "sharing.request", "sharing.approve", "sharing.export"]


def new_records(after: int) -> list[AccessRecord]:
    return list(AccessRecord.select().where(AccessRecord.seq > after).order_by(AccessRecord.seq))


def last_seq() -> int:
    return AccessRecord.select(AccessRecord.seq).order_by(AccessRecord.seq.desc()).scalar() or 0


def test_the_list_and_a_request_page_each_write_one_access_record(client, people, stored):
    sign_in(client, "officer.lee")
    post_request(client)
    [req] = sharing.SharingRequest.select()
    before = last_seq()
    page = client.get("/sharing/")
    assert page.status_code == 200 and "8XYZ456" in page.get_data(as_text=True)
    [rec] = new_records(before)
    assert (rec.action, rec.username, json.loads(rec.query), rec.result_count) == (
        "sharing.list",
        "officer.lee",
        {"status": "all"},
        1,
    )
    before = last_seq()
    assert client.get("/sharing/?status=approved").status_code == 200
    [rec] = new_records(before)
    assert (rec.action, json.loads(rec.query), rec.result_count) == ("sharing.list", {"status": "approved"}, 0)
    before = last_seq()
    page = client.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert 'id="plate-only-note"' in page
    [rec] = new_records(before)
    assert (rec.action, rec.username, json.loads(rec.query), rec.client_addr) == (
        "sharing.view",
        "officer.lee",
        {"sharing_request": req.id},
        "127.0.0.1",
    )
    before = last_seq()
    assert client.get("/sharing/999").status_code == 404 and client.get("/sharing/?status=x").status_code == 404
    assert new_records(before) == []  # nothing shown, nothing recorded
    other = client.application.test_client()
    sign_in(other, "dispatch.kim")
    before = last_seq()
    assert other.get("/sharing/").status_code == 403 and other.get(f"/sharing/{req.id}").status_code == 403
    assert [r.action for r in new_records(before)] == []


def test_the_export_leaves_out_a_read_with_the_plate_only_as_an_alternative(client, people, stored, settings, tmp_path):
    rng = np.random.default_rng(12)
    lookalike = save_read(
        settings,
        EvidenceStore(settings),
        NewRead(
            plate_raw="9DEF000",
            plate="9DEF000",
            confidence=0.93,
            captured_at=T0 + dt.timedelta(minutes=7),
            alternatives=[{"text": "8XYZ456", "score": 0.04}],
        ),
        rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
        rng.integers(0, 255, (120, 200, 3), dtype=np.uint8),
    )
    sign_in(client, "admin.chen")
    post_request(client)
    [req] = sharing.SharingRequest.select()
    assert decide(client, req.id, "approve").status_code == 302
    resp = export_zip(client, req.id)
    assert resp.status_code == 200
    path = tmp_path / "download.zip"
    path.write_bytes(resp.data)
    assert export.verify(path).ok
    shipped = json.loads(zipfile.ZipFile(path).read("reads.json"))
    assert sorted(r["plate"] for r in shipped) == ["8XYZ456", "8XYZ456"]
    assert lookalike.uuid not in json.dumps(shipped)
    [rec] = records("sharing.export")
    assert rec.result_count == 2 and f"read:{lookalike.uuid}" not in json.loads(rec.object_ids)
    page = client.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert "<td>2</td>" in page  # the export's read count on the request page
    assert 'id="plate-only-note"' in page and 'id="plate-only-note"' in client.get("/sharing/new").get_data(
        as_text=True
    )
