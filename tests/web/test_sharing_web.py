"""Sharing requests through the real app: the recipient rule, review, and the export download."""

import datetime as dt
import json
import re
import zipfile

import numpy as np
import pytest
from playwright.sync_api import expect

from appliance import export, sharing, users
from appliance.audit import system_actor
from appliance.models import AccessRecord
from appliance.store import EvidenceStore, NewRead, save_read
from tests.web.conftest import CHROMIUM, PASSWORD, csrf, state_purpose
from tests.web.conftest import sign_in as sign_in_only

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
    for name, role in [
        ("officer.lee", "officer"),
        ("admin.chen", "admin"),
        ("capt.ruiz", "admin"),
        ("dispatch.kim", "dispatcher"),
    ]:
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
        "agency_ori": "CA0430400",
        "requester_name": "Det. Ana Silva",
        "requester_title": "Detective",
        "requester_contact": "asilva@sjpd.example",
        "intended_purpose": "Identify the vehicle in a hit-and-run on May 11",
        "legal_authority": "SJPD 26-88123",
        "assurance": "SJPD shares the data with no one but California state and local public agencies (Lt. Vo)",
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


SHARING_PURPOSE = ("SHARING", "SHR-2026-001")


def sign_in(client, username, **kwargs):
    """Sign in and state the purpose the sharing pages are opened for (they show the plates asked for)."""
    resp = sign_in_only(client, username, **kwargs)
    state_purpose(client, *SHARING_PURPOSE)
    return resp


def signed_in(client, username):
    other = client.application.test_client()
    sign_in(other, username)
    return other


def test_an_unapproved_request_cannot_be_exported_and_nothing_is_written(client, people, stored, settings):
    post_request(signed_in(client, "officer.lee"))
    sign_in(client, "admin.chen")
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
    post_request(signed_in(client, "officer.lee"))
    sign_in(client, "admin.chen")
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


def browser_sign_in(page, live_server, username):
    page.goto(live_server + "/auth/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)


def browser_state_purpose(page):
    """The purpose form a sharing page asks first (SHARING is suggested), filled as a person does."""
    expect(page.locator("#purpose-form")).to_be_visible()
    expect(page.locator("#purpose")).to_have_value("SHARING")
    page.fill("#case_number", SHARING_PURPOSE[1])
    page.click("#state-purpose")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)")
def test_browser_admin_records_another_approves_and_downloads(live_server, people, stored, page, artifacts, tmp_path):

    browser_sign_in(page, live_server, "admin.chen")
    page.goto(live_server + "/sharing/new")
    for field, value in form_data().items():
        if field in ("agency_type", "match_mode", "purpose"):
            page.select_option(f"#{field}", value)
        else:
            page.fill(f"#{field}", value)
    # the auditor's case: a federal agency under a California type and state
    page.fill("#agency_name", "U.S. Immigration and Customs Enforcement, San Francisco Field Office")
    page.select_option("#agency_type", "ca-other-public")
    page.click("#record-request")
    expect(page.locator("#refused")).to_contain_text("U.S. Immigration and Customs Enforcement (ICE), DHS")
    page.screenshot(path=str(artifacts / "1-federal-refused.png"), full_page=True)

    page.fill("#agency_name", "San Jose Police Department")
    page.select_option("#agency_type", "ca-city-police")
    page.fill("#case_number", "2026-005511")
    page.click("#record-request")
    browser_state_purpose(page)  # recording the request under its case did not state the session's purpose
    expect(page.locator("#status")).to_have_text("pending")
    expect(page.locator("#coverage")).to_contain_text("2 read(s) and 4 image(s)")
    expect(page.locator("#second-person")).to_contain_text("another")
    expect(page.locator("#approve")).to_have_count(0)
    page.screenshot(path=str(artifacts / "2-recorded.png"), full_page=True)

    reviewer = page.context.browser.new_context().new_page()
    browser_sign_in(reviewer, live_server, "capt.ruiz")
    reviewer.goto(page.url)
    browser_state_purpose(reviewer)
    expect(reviewer.locator("#releases")).to_contain_text("2 read(s) and 4 image(s)")
    reviewer.fill("#note", "Approved by Capt. Ruiz: California agency, case nexus shown")
    reviewer.click("#approve")
    expect(reviewer.locator("#status")).to_have_text("approved")
    with reviewer.expect_download() as info:
        reviewer.click("#export")
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(str(target))
    assert target.name.startswith("waypost-evidence-request-")
    report = export.verify(target)
    assert report.ok, report.problem
    reviewer.reload()
    expect(reviewer.locator("#exports")).to_contain_text("capt.ruiz")
    reviewer.screenshot(path=str(artifacts / "3-exported.png"), full_page=True)
    assert [(r.action, r.username) for r in records()] == [
        ("sharing.refuse", "admin.chen"),
        ("sharing.request", "admin.chen"),
        ("sharing.approve", "capt.ruiz"),
        ("sharing.export", "capt.ruiz"),
    ]


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
        {"status": "all", "plates": ["8XYZ456"]},
        1,
    )
    assert (rec.purpose_code, rec.case_number) == SHARING_PURPOSE
    before = last_seq()
    assert client.get("/sharing/?status=approved").status_code == 200
    [rec] = new_records(before)
    assert (rec.action, json.loads(rec.query), rec.result_count) == (
        "sharing.list",
        {"status": "approved", "plates": []},
        0,
    )
    before = last_seq()
    page = client.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert 'id="plate-only-note"' in page
    [rec] = new_records(before)
    assert (rec.action, rec.username, json.loads(rec.query), rec.client_addr) == (
        "sharing.view",
        "officer.lee",
        {"sharing_request": req.id, "plate": "8XYZ456"},
        "127.0.0.1",
    )
    assert (rec.purpose_code, rec.case_number) == SHARING_PURPOSE
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
    post_request(signed_in(client, "officer.lee"))
    sign_in(client, "admin.chen")
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


# -- issue 16: the recipient's ORI and the list, two people, the count, the assurance -------------


@pytest.mark.parametrize(
    "changes, words",
    [
        (
            {
                "agency_name": "U.S. Immigration and Customs Enforcement, San Francisco Field Office",
                "agency_type": "ca-other-public",
            },
            '"immigration and customs enforcement" (U.S. Immigration and Customs Enforcement (ICE), DHS)',
        ),
        (
            {"agency_name": "Flock Safety National Lookup", "agency_type": "ca-other-public"},
            '"flock safety" (Flock Safety and its network)',
        ),
        ({"agency_ori": "CAFBISF00"}, "Federal Bureau of Investigation (FBI)"),
        ({"agency_ori": "NV0020000"}, "begins with NV, not CA"),
    ],
)
def test_a_recipient_on_the_list_is_refused_on_the_page_whatever_its_type(client, people, changes, words):
    sign_in(client, "officer.lee")
    resp = post_request(client, **changes)
    html = resp.get_data(as_text=True).replace("&#34;", '"').replace("&quot;", '"')
    assert resp.status_code == 400 and 'id="refused"' in html
    assert words in html and "1798.90.55" in html and "Nothing has been shared" in html
    assert sharing.SharingRequest.select().count() == 0
    assert [r.action for r in records()] == ["sharing.refuse"]


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"agency_ori": ""}, "agency_ori", "ORI"),
        ({"agency_ori": "CA-12"}, "agency_ori", "nine characters"),
        ({"assurance": ""}, "assurance", "written assurance"),
        ({"plate": "8X*", "match_mode": "wildcard"}, "plate", "three known characters in a row"),
    ],
)
def test_the_ori_the_assurance_and_the_plate_are_checked_on_the_form(client, people, changes, field, words):
    sign_in(client, "officer.lee")
    form = client.get("/sharing/new").get_data(as_text=True)
    assert 'id="agency_ori"' in form and 'id="assurance"' in form
    resp = post_request(client, **changes)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and 'id="refused"' not in html
    error = re.search(rf'id="{field}".*?<p class="field-error" role="alert">([^<]*)</p>', html, re.S)
    assert error and words in error.group(1), html
    assert sharing.SharingRequest.select().count() == 0 and records() == []


def test_the_review_states_what_an_approval_releases(client, people, stored):
    post_request(signed_in(client, "officer.lee"), plate="8XYZ45?", match_mode="wildcard")
    [req] = sharing.SharingRequest.select()
    sign_in(client, "admin.chen")
    before = AccessRecord.select().count()
    page = client.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert re.search(r'id="coverage">\s*2 read\(s\) and 4 image\(s\)', page), page
    assert re.search(r'id="releases">[^<]*<strong>2 read\(s\) and 4 image\(s\)</strong>', page), page
    assert "CA0430400" in page and "SJPD shares the data with no one but California" in page
    [rec] = AccessRecord.select().where(AccessRecord.seq > before)
    assert rec.action == "sharing.view" and json.loads(rec.details)["reads_covered"] == 2
    assert decide(client, req.id, "approve").status_code == 302
    resp = export_zip(client, req.id)
    assert resp.status_code == 200
    [filed] = sharing.SharingExport.select()
    assert (filed.read_count, filed.image_count) == (2, 4)


def test_whoever_records_a_request_cannot_decide_it_on_the_page(client, people, stored):
    sign_in(client, "admin.chen")
    post_request(client)
    [req] = sharing.SharingRequest.select()
    page = client.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert 'id="second-person"' in page and 'id="approve"' not in page and 'id="deny"' not in page
    for choice in ("approve", "deny"):
        resp = decide(client, req.id, choice, "Approved by myself")
        html = resp.get_data(as_text=True)
        assert resp.status_code == 409 and "admin.chen recorded" in html and 'id="problem"' in html
    assert sharing.get(req.id).status == "pending"
    assert [r.action for r in records()] == ["sharing.request"]
    reviewer = signed_in(client, "capt.ruiz")
    assert 'id="approve"' in reviewer.get(f"/sharing/{req.id}").get_data(as_text=True)
    assert decide(reviewer, req.id, "approve").status_code == 302
    assert [(r.action, r.username) for r in records()] == [
        ("sharing.request", "admin.chen"),
        ("sharing.approve", "capt.ruiz"),
    ]


def test_an_old_request_without_ori_or_assurance_is_shown_and_can_only_be_denied(client, people, stored):
    post_request(signed_in(client, "officer.lee"))
    [req] = sharing.SharingRequest.select()
    # as a request recorded before migration 0011 is: no ORI, no assurance
    sharing.SharingRequest.update(agency_ori="", assurance="").where(sharing.SharingRequest.id == req.id).execute()
    sign_in(client, "admin.chen")
    resp = client.get(f"/sharing/{req.id}")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'id="missing"' in page and "San Jose Police Department" in page
    assert 'id="approve"' not in page and 'id="deny"' in page
    refused = decide(client, req.id, "approve")
    assert refused.status_code == 409 and "record the request again" in refused.get_data(as_text=True)
    assert decide(client, req.id, "deny", "Recorded without ORI or assurance").status_code == 302
    assert sharing.get(req.id).status == "denied"
    assert client.get("/sharing/").status_code == 200


def test_the_public_policy_states_the_sharing_rules_the_post_enforces(client, db):
    resp = client.get("/policy")
    steps = re.search(r'<ol id="sharing-steps">(.*?)</ol>', resp.get_data(as_text=True), re.S)
    assert resp.status_code == 200 and steps, "no sharing steps on the policy page"
    text = " ".join(steps.group(1).split())
    for words in (
        "ORI",
        "begins with CA",
        "written assurance that the data goes to no one but California state or local public agencies",
        "three known characters in a row",
        "federal, out-of-state, tribal, vendor and private bodies",
        "naming the entry that matched",
        "the person who recorded a request cannot decide it",
        "how many reads and images",
    ):
        assert words in text, words
