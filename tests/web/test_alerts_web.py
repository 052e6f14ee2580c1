"""Alerts in the web UI: who sees what, the unconfirmed warning, acknowledgement, confirmation,
images through the logged route, and the live stream."""

import datetime as dt
import json
import re
import threading
import urllib.request
from http.cookiejar import CookieJar

import numpy as np
import pytest

from appliance import alerts, audit, hotlist, store
from appliance.models import AccessRecord, Alert, AlertConfirmation, utcnow
from appliance.service import PostService
from tests.appliance.test_cli import free_port
from tests.conftest import make_settings
from tests.web.conftest import csrf, sign_in

ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")


@pytest.fixture
def alert(settings, db, tmp_path):
    path = tmp_path / "svs.csv"
    path.write_text(
        'plate,state,reason,entry_date,source_ref\n7ABC123,ca,<script>alert("x")</script> STOLEN,2026-11-20,S1\n'
    )
    hotlist.import_csv(settings, path, "SVS", ADMIN)
    raised = []
    rng = np.random.default_rng(0)
    store.save_read(
        settings,
        store.EvidenceStore(settings),
        store.NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.91, captured_at=utcnow()),
        rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
        rng.integers(0, 255, (200, 300, 3), dtype=np.uint8),
        on_stored=lambda r: raised.extend(alerts.raise_alerts(settings, r)),
    )
    return raised[0]


def records(action):
    return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def test_officer_sees_the_alert_with_the_warning_and_images(client, alert, trained):
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    page = client.get(f"/alerts/{alert.id}").get_data(as_text=True)
    assert "Unverified lead." in page and "through CLETS" in page
    assert '<script>alert("x")</script>' not in page and "&lt;script&gt;" in page
    rec = records("alert.view")[-1]
    assert rec.username == "officer.lee" and rec.purpose_code == "HIT-VERIFY" and '"plate":"7ABC123"' in rec.query
    img = client.get(f"/alerts/{alert.id}/image/crop")
    assert img.status_code == 200 and img.mimetype == "image/jpeg" and img.data[:2] == b"\xff\xd8"
    assert records("evidence.view")[-1].username == "officer.lee"
    assert client.get(f"/alerts/{alert.id}/image/../../etc/passwd").status_code == 404
    assert client.get(f"/alerts/{alert.id}/image/secret").status_code == 404
    listing = client.get("/alerts").get_data(as_text=True)
    assert "7ABC123" in listing and "UNCONFIRMED" in listing


def test_untrained_and_unauthorised_accounts_get_no_plate_data(client, alert, account, trained):
    account("officer.new", "officer")  # no training recorded
    sign_in(client, "officer.new")
    resp = client.get(f"/alerts/{alert.id}")
    assert resp.status_code == 403 and "training" in resp.get_data(as_text=True)
    assert "7ABC123" not in resp.get_data(as_text=True)
    assert client.get(f"/alerts/{alert.id}/image/crop").status_code == 403
    client.post("/auth/logout", data={"csrf_token": csrf(client.get("/").get_data(as_text=True))})
    trained("auditor.kay", "auditor")
    sign_in(client, "auditor.kay")
    assert client.get("/alerts").status_code == 403
    assert records("alert.view") == []


def test_dispatcher_acknowledges_but_cannot_confirm(client, alert, trained):
    trained("dispatch.ray", "dispatcher")
    sign_in(client, "dispatch.ray")
    page = client.get(f"/alerts/{alert.id}").get_data(as_text=True)
    assert 'id="acknowledge"' in page and 'id="record-outcome"' not in page
    resp = client.post(f"/alerts/{alert.id}/acknowledge", data={"csrf_token": csrf(page)})
    assert resp.status_code == 302
    a = Alert.get_by_id(alert.id)
    assert a.acknowledged_by == "dispatch.ray" and a.status == "unconfirmed"
    resp = client.post(
        f"/alerts/{alert.id}/confirm",
        data={"csrf_token": csrf(page), "outcome": "confirmed", "visual_compared": "y", "clets_verified": "y"},
    )
    assert resp.status_code == 403 and Alert.get_by_id(alert.id).status == "unconfirmed"


def test_officer_confirms_only_after_both_checks(client, alert, trained):
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    token = csrf(client.get(f"/alerts/{alert.id}").get_data(as_text=True))
    resp = client.post(
        f"/alerts/{alert.id}/confirm",
        data={"csrf_token": token, "outcome": "confirmed", "visual_compared": "y"},
        follow_redirects=True,
    )
    assert "AND verifying the entry through CLETS" in resp.get_data(as_text=True)
    assert Alert.get_by_id(alert.id).status == "unconfirmed"
    resp = client.post(
        f"/alerts/{alert.id}/confirm",
        data={
            "csrf_token": token,
            "outcome": "confirmed",
            "visual_compared": "y",
            "clets_verified": "y",
            "case_number": "n/a",
        },
        follow_redirects=True,
    )
    assert "not a case or incident number" in resp.get_data(as_text=True)
    resp = client.post(
        f"/alerts/{alert.id}/confirm",
        data={
            "csrf_token": token,
            "outcome": "confirmed",
            "visual_compared": "y",
            "clets_verified": "y",
            "case_number": "26-004512",
            "note": "Stopped at 5th",
        },
        follow_redirects=True,
    )
    assert "Recorded: Confirmed" in resp.get_data(as_text=True)
    assert Alert.get_by_id(alert.id).status == "confirmed"
    rec = records("alert.confirm")[-1]
    assert (rec.username, rec.purpose_code, rec.case_number) == ("officer.lee", "HIT-VERIFY", "26-004512")
    no_token = client.post(f"/alerts/{alert.id}/acknowledge")
    assert no_token.status_code == 400
    assert audit.verify().ok


def test_live_stream_delivers_new_alerts_and_records_them(settings, db, alert, trained, tmp_path):
    trained("officer.lee", "officer")
    live = make_settings(settings.data_dir, web__port=free_port())
    service = PostService(live, with_capture=False).start()
    try:
        base = f"http://127.0.0.1:{live.web.port}"

        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(base + "/auth/login").read().decode()
        data = f"username=officer.lee&password=correct+horse+battery+staple&csrf_token={csrf(page)}".encode()
        opener.open(base + "/auth/login", data=data).read()
        stream = opener.open(base + "/alerts/stream", timeout=20)
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.readline().startswith(b"retry:")
        stream.readline()
        threading.Timer(
            0.5,
            lambda: service.bus.publish(
                "alert",
                {
                    "id": alert.id,
                    "read_id": alert.read_id,
                    "plate": "7ABC123",
                    "entry_plate": "7ABC123",
                    "reason": "STOLEN",
                    "hotlist": "SVS",
                    "score": 1.0,
                    "match_kind": "exact",
                    "status": "unconfirmed",
                },
            ),
        ).start()
        lines = [stream.readline() for _ in range(3)]
        assert lines[1] == b"event: alert\n"
        assert json.loads(lines[2][len(b"data: ") :])["entry_plate"] == "7ABC123"
        stream.close()
    finally:
        service.stop()
    live_views = [r for r in records("alert.view") if "live stream" in r.details]
    assert len(live_views) == 1 and live_views[0].username == "officer.lee"


def alert_on(settings, tmp_path, region, region_confidence=None, listed_state="ca"):
    path = tmp_path / "list.csv"
    path.write_text(f"plate,state,reason,entry_date,source_ref\n8DEF456,{listed_state},STOLEN,2026-11-20,S2\n")
    hotlist.import_csv(settings, path, "SVS", ADMIN)
    raised = []
    store.save_read(
        settings,
        store.EvidenceStore(settings),
        store.NewRead(
            plate_raw="8DEF456",
            plate="8DEF456",
            confidence=0.9,
            captured_at=utcnow(),
            region=region,
            region_confidence=region_confidence,
        ),
        None,
        None,
        on_stored=lambda r: raised.extend(alerts.raise_alerts(settings, r)),
    )
    return raised[0]


def test_the_outcome_starts_empty_and_an_empty_outcome_records_nothing(client, alert, trained):
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    page = client.get(f"/alerts/{alert.id}").get_data(as_text=True)
    select = page[page.index('<select id="outcome"') :]
    select = select[: select.index("</select>")]
    assert re.search(r'<option value="">— choose the outcome —</option>', select) and "selected" not in select
    assert "required" in select[: select.index(">")]
    resp = client.post(
        f"/alerts/{alert.id}/confirm",
        data={"csrf_token": csrf(page), "outcome": "", "visual_compared": "y", "clets_verified": "y"},
        follow_redirects=True,
    )
    assert resp.status_code == 200
    assert "Outcome: choose the outcome of your verification; nothing was recorded." in resp.get_data(as_text=True)
    assert Alert.get_by_id(alert.id).status == "unconfirmed" and AlertConfirmation.select().count() == 0
    assert records("alert.confirm") == []
    assert client.post(f"/alerts/{alert.id}/confirm", data={"outcome": ""}).status_code == 400  # no CSRF token


@pytest.mark.parametrize(
    "region, confidence, shown, differs",
    [
        ("tx", 0.62, "TX (confidence 0.62)", True),
        ("ca", 0.88, "CA (confidence 0.88)", False),
        (None, None, "not told by the reader", False),
    ],
)
def test_the_alert_shows_the_state_read_beside_the_listed_one(
    client, settings, db, tmp_path, trained, region, confidence, shown, differs
):
    raised = alert_on(settings, tmp_path, region, confidence)
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    page = client.get(f"/alerts/{raised.id}").get_data(as_text=True)
    assert re.search(r"8DEF456 CA</dd>\s*<dt>State read</dt><dd id=\"read-state\">" + re.escape(shown), page)
    assert ('id="state-differs"' in page) is differs
    if differs:
        assert (
            "the list has\n      CA, the reader guessed TX" in page
            and "check\n      the plate's state through CLETS" in page
        )


def test_alert_search_and_live_name_the_camera_alike(client, settings, alert, trained):
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    page = client.get(f"/alerts/{alert.id}").get_data(as_text=True)
    assert "camera Camera 1</dd>" in page and "cam-1" not in page
    live = client.get("/live")
    client.post(
        "/live/purpose",
        data={"purpose": "STOLEN-VEH", "case_number": "26-004512", "csrf_token": csrf(live.get_data(as_text=True))},
    )
    assert '<td data-label="Camera">Camera 1</td>' in client.get("/live").get_data(as_text=True)
    form = client.get("/reads/search").get_data(as_text=True)
    results = client.post(
        "/reads/search",
        data={
            "plate": "7ABC123",
            "mode": "exact",
            "purpose": "STOLEN-VEH",
            "case_number": "26-004512",
            "csrf_token": csrf(form),
        },
    ).get_data(as_text=True)
    assert "7ABC123" in results and "<td>Camera 1</td>" in results and "<td>cam-1</td>" not in results


def test_a_repeat_says_so_and_links_the_alert_sent(client, alert, settings, trained):
    """The same car read again 2 min later: its alert is listed, unconfirmed, as a repeat of the first."""
    raised = []
    store.save_read(
        settings,
        store.EvidenceStore(settings),
        store.NewRead(
            plate_raw="7ABC123",
            plate="7ABC123",
            confidence=0.9,
            captured_at=alert.read.captured_at + dt.timedelta(minutes=2),
        ),
        None,
        None,
        on_stored=lambda r: raised.extend(alerts.raise_alerts(settings, r)),
    )
    [again] = raised
    assert again.repeat_of_id == alert.id
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    link = f'<a href="/alerts/{alert.id}">alert {alert.id}</a> (same entry, 2 min earlier)'
    page = client.get(f"/alerts/{again.id}").get_data(as_text=True)
    assert "repeat of " + link in " ".join(page.split()) and "Unverified lead." in page
    listing = " ".join(client.get("/alerts").get_data(as_text=True).split())
    assert "repeat of " + link in listing
    assert f'href="/alerts/{again.id}"' in listing and listing.count("repeat of") == 1
    assert "repeat of" not in client.get(f"/alerts/{alert.id}").get_data(as_text=True)


LOW_WORDS = "read with low confidence: compare every character"
CLETS_BOX = "I checked the entry&#39;s current status through CLETS"


@pytest.fixture
def svs(settings, db, tmp_path):
    """A state list: 7ABC123 with its NIC, 8DEF456 without one."""
    path = tmp_path / "svs.csv"
    path.write_text(
        "plate,state,reason,entry_date,source_ref\n7ABC123,ca,STOLEN,2026-11-20,V123456789\n8DEF456,ca,WANTED,2026-11-20,\n"
    )
    hotlist.import_csv(settings, path, "SVS", ADMIN)


def raise_alert(settings, plate, confidence, alternatives=(), crop=True):
    raised = []
    rng = np.random.default_rng(len(plate))
    store.save_read(
        settings,
        store.EvidenceStore(settings),
        store.NewRead(
            plate_raw=plate,
            plate=plate,
            confidence=confidence,
            captured_at=utcnow(),
            alternatives=[{"text": t, "score": s} for t, s in alternatives],
        ),
        rng.integers(0, 255, (40, 120, 3), dtype=np.uint8) if crop else None,
        None,
        on_stored=lambda r: raised.extend(alerts.raise_alerts(settings, r)),
    )
    return raised[0]


def lead_of(page: str, alert_id: int) -> str:
    """The side-by-side block (crop, read, listed plate) of one alert on a page."""
    start = page.index(f'id="lead-{alert_id}"')
    return " ".join(page[start : page.index("<!-- /lead -->", start)].split())


def parts_of(lead: str) -> tuple[str, str]:
    """The read's and the listed plate's parts of a lead, as text."""
    read, listed = lead.index('class="read"'), lead.index('class="listed"')

    def text(html: str) -> str:
        return " ".join(re.sub(r"<[^>]+>", " ", html).split())

    return text(lead[read:listed]), text(lead[listed:])


def test_the_read_confidence_crop_and_listed_plate_are_shown_side_by_side(client, settings, svs, trained):
    """The auditor's case: a read of confidence 0.33 matched exactly, and the list said "exact 1.00"
    with no crop. The list and the page show the crop, the read with its own confidence (and in
    words when it is low), and the listed plate; the match score is labelled as such."""
    low = raise_alert(settings, "7ABC123", 0.33)
    sure = raise_alert(settings, "8DEF458", 0.91, alternatives=[("8DEF456", 0.8)], crop=False)
    assert (low.match_kind, low.score, sure.match_kind, sure.entry_plate) == ("exact", 1.0, "alternative", "8DEF456")
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    listing = client.get("/alerts").get_data(as_text=True)
    assert "exact 1.00" not in " ".join(listing.split())  # the match score, shown as if the read's
    for page in (listing, client.get(f"/alerts/{low.id}").get_data(as_text=True)):
        lead = lead_of(page, low.id)
        crop = f'<img class="crop" src="/alerts/{low.id}/image/crop"'
        assert lead.index(crop) < lead.index('class="read"') < lead.index('class="listed"'), lead
        read, listed = parts_of(lead)
        assert f"Read 7ABC123 confidence 0.33 {LOW_WORDS}" in read and "Listed 7ABC123 CA" in listed
        assert "exact 1.00" not in " ".join(page.split()) and "exact match, score 1.00" in " ".join(page.split())
    lead = lead_of(listing, sure.id)
    assert "confidence 0.91" in lead and LOW_WORDS not in lead and "No plate crop stored" in lead
    assert "Read 8DEF458 confidence 0.91" in parts_of(lead)[0] and "Listed 8DEF456 CA" in parts_of(lead)[1]
    # what the list showed, the list's record names: the listed plates and the plates read
    rec = records("alert.view")[0]
    assert json.loads(rec.query) == {"plates": ["7ABC123", "8DEF456", "8DEF458"]}
    client.get(f"/alerts/{sure.id}")
    assert json.loads(records("alert.view")[-1].query) == {"plate": "8DEF456", "read_plate": "8DEF458"}
    assert client.get(f"/alerts/{low.id}/image/crop").status_code == 200
    assert json.loads(records("evidence.view")[-1].query) == {"plate": "7ABC123", "read_plate": "7ABC123"}
    assert audit.verify().ok


def test_an_outcome_is_refused_without_the_check_it_states_naming_the_box(client, settings, svs, trained):
    """ "No longer wanted (CLETS shows the entry cleared)" with neither box ticked was accepted."""
    low = raise_alert(settings, "7ABC123", 0.33)
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    page = client.get(f"/alerts/{low.id}").get_data(as_text=True)
    resp = client.post(
        f"/alerts/{low.id}/confirm", data={"csrf_token": csrf(page), "outcome": "not_wanted"}, follow_redirects=True
    )
    assert Alert.get_by_id(low.id).status == "unconfirmed" and records("alert.confirm") == []
    text = resp.get_data(as_text=True)
    assert f"tick the box &#34;{CLETS_BOX}&#34;" in text and "nothing was recorded." in text
    assert CLETS_BOX in page  # the box the refusal names is the one on the form
    resp = client.post(
        f"/alerts/{low.id}/confirm",
        data={"csrf_token": csrf(page), "outcome": "not_wanted", "clets_verified": "y"},
        follow_redirects=True,
    )
    assert "Recorded: No longer wanted" in resp.get_data(as_text=True)
    assert Alert.get_by_id(low.id).status == "not_wanted"


def test_a_changed_outcome_needs_a_reason_and_the_page_lists_every_outcome(client, settings, svs, trained):
    low = raise_alert(settings, "7ABC123", 0.33)
    trained("officer.lee", "officer")
    trained("sgt.diaz", "officer")
    sign_in(client, "officer.lee")
    page = client.get(f"/alerts/{low.id}").get_data(as_text=True)
    assert 'id="change_reason"' not in page  # nothing on file to change yet
    both = {"csrf_token": csrf(page), "visual_compared": "y", "clets_verified": "y"}
    client.post(f"/alerts/{low.id}/confirm", data=dict(both, outcome="confirmed", note="Stopped at 5th"))
    client.post("/auth/logout", data={"csrf_token": csrf(page)})
    sign_in(client, "sgt.diaz")
    page = client.get(f"/alerts/{low.id}").get_data(as_text=True)
    token = csrf(page)
    refused = client.post(
        f"/alerts/{low.id}/confirm",
        data={"csrf_token": token, "outcome": "misread", "visual_compared": "y"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert Alert.get_by_id(low.id).status == "confirmed"
    assert "CONFIRMED by officer.lee" in refused and "&#34;Reason for the change&#34;" in refused
    assert 'id="change_reason"' in page
    client.post(
        f"/alerts/{low.id}/confirm",
        data={
            "csrf_token": token,
            "outcome": "misread",
            "visual_compared": "y",
            "note": "Crop shows 7ABC128",
            "change_reason": "Compared the crop again: the last 3 is an 8.",
        },
    )
    assert Alert.get_by_id(low.id).status == "misread"
    page = client.get(f"/alerts/{low.id}").get_data(as_text=True)
    history = page[page.index('id="outcome-history"') :]
    history = history[: history.index("</table>")]
    rows = [" ".join(re.sub(r"<[^>]+>", " ", r).split()) for r in history.split("<tr")[2:]]
    assert len(rows) == 2
    assert "officer.lee" in rows[0] and "Confirmed" in rows[0] and "Stopped at 5th" in rows[0]
    assert "visual comparison, CLETS" in rows[0]
    assert "sgt.diaz" in rows[1] and "Misread" in rows[1] and "Crop shows 7ABC128" in rows[1]
    assert "Compared the crop again: the last 3 is an 8." in rows[1] and "visual comparison" in rows[1]
    assert "CLETS" not in rows[1].split("visual comparison")[1].split("Crop shows")[0]
    listing = " ".join(client.get("/alerts").get_data(as_text=True).split())
    recent = listing[listing.index("Recently resolved") :]
    assert "MISREAD (changed from CONFIRMED)" in recent


def test_the_alert_shows_the_entry_ori_and_nic_labelled_when_present(client, settings, svs, trained):
    with_both = raise_alert(settings, "7ABC123", 0.9)
    Alert.update(entry_ori="CA0190000").where(Alert.id == with_both.id).execute()  # raise_alerts fills it
    without = raise_alert(settings, "8DEF456", 0.9, crop=False)
    trained("dispatch.ray", "dispatcher")
    sign_in(client, "dispatch.ray")
    page = " ".join(client.get(f"/alerts/{with_both.id}").get_data(as_text=True).split())
    assert '<dt>Entering agency (ORI)</dt><dd id="entry-ori">CA0190000</dd>' in page
    assert '<dt>NCIC number (NIC)</dt><dd id="entry-nic">V123456789</dd>' in page
    page = client.get(f"/alerts/{without.id}").get_data(as_text=True)
    assert "(ORI)" not in page and "(NIC)" not in page
    listing = client.get("/alerts").get_data(as_text=True)
    assert "ORI CA0190000, NIC V123456789" in " ".join(lead_of(listing, with_both.id).split())
    assert "ORI" not in lead_of(listing, without.id) and "NIC" not in lead_of(listing, without.id)
