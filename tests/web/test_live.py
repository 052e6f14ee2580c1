"""The live view: no reads before a stated purpose, every listing and streamed read recorded with
it, dispatchers kept out, hostile text escaped, the status strip and the site-wide warning banner,
and where each role lands after sign-in."""

import datetime as dt
import json
import re
import threading
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from flask import url_for
from playwright.sync_api import expect, sync_playwright

from appliance import alerts, audit, hotlist, store
from appliance.models import AccessRecord, Alert, Hotlist, Read, utcnow
from appliance.service import PostService
from tests.appliance.test_cli import free_port
from tests.conftest import make_settings
from tests.web.conftest import CHROMIUM, PASSWORD, csrf, sign_in
from web.clock import localtime

ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")
HOSTILE = '<script>alert("x")</script>'


def save(settings, plate, *, camera_id=None, direction="north", on_stored=None, confidence=0.93, captured_at=None):
    rng = np.random.default_rng(len(plate))
    return store.save_read(
        settings,
        store.EvidenceStore(settings),
        store.NewRead(
            plate_raw=plate,
            plate=plate,
            confidence=confidence,
            captured_at=captured_at or utcnow(),
            direction=direction,
            camera_id=camera_id,
        ),
        rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
        None,
        on_stored=on_stored,
    )


def import_list(settings, tmp_path, reason="STOLEN", name="SVS"):
    path = tmp_path / f"{name}.csv"
    path.write_text(f"plate,state,reason,entry_date,source_ref\n7ABC123,ca,{reason},2026-11-20,S1\n")
    hotlist.import_csv(settings, path, name, ADMIN)


def records(action, via=None):
    rows = AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq)
    return [r for r in rows if via is None or via in r.details]


def state_purpose(client, code="STOLEN-VEH", case="26-004512"):
    page = client.get("/live").get_data(as_text=True)
    return client.post("/live/purpose", data={"purpose": code, "case_number": case, "csrf_token": csrf(page)})


def test_reads_are_listed_only_after_a_purpose_and_the_listing_is_recorded(client, settings, trained):
    read = save(settings, "8XYZ555", direction="southbound", confidence=0.41)
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")

    page = client.get("/live").get_data(as_text=True)
    assert 'id="purpose-form"' in page and "8XYZ555" not in page
    assert records("read.live") == []

    refused = state_purpose(client, case="n/a")
    assert refused.status_code == 400
    assert "not a case or incident number" in refused.get_data(as_text=True)
    assert "8XYZ555" not in refused.get_data(as_text=True) and records("read.live") == []
    no_token = client.post("/live/purpose", data={"purpose": "STOLEN-VEH", "case_number": "26-004512"})
    assert no_token.status_code == 400

    resp = state_purpose(client)
    assert resp.status_code == 302 and resp.headers["Location"] == "/live"
    page = client.get("/live").get_data(as_text=True)
    assert "8XYZ555" in page and "southbound" in page and "LOW" in page and 'id="purpose-form"' not in page
    app = client.application
    if "reads.detail" in app.view_functions:
        with app.test_request_context():
            assert f'href="{url_for("reads.detail", read_id=read.id)}"' in page
    [rec] = records("read.live")
    # The four statutory fields: date/time, the data used to query, the username, the purpose.
    assert rec.at.startswith(str(utcnow().year)) and json.loads(rec.query) == {
        "latest_reads": 25,
        "plates": ["8XYZ555"],
    }
    assert (rec.username, rec.organization) == ("officer.lee", settings.post.agency)
    assert (rec.purpose_code, rec.case_number) == ("STOLEN-VEH", "26-004512")
    assert json.loads(rec.object_ids) == [f"read:{read.uuid}"] and rec.result_count == 1
    assert audit.verify().ok


def test_dispatcher_is_refused_the_live_view_and_lands_on_the_alerts(client, trained, account):
    trained("dispatch.ray", "dispatcher")
    sign_in(client, "dispatch.ray")
    assert client.get("/").headers["Location"] == "/alerts"
    refused = client.get("/live")
    assert refused.status_code == 403
    assert client.get("/live/stream").status_code == 403
    assert client.post("/live/purpose", data={"purpose": "STOLEN-VEH", "case_number": "26-1"}).status_code in (400, 403)
    nav = client.get("/alerts").get_data(as_text=True)
    assert 'id="nav-alerts"' in nav and 'id="nav-live"' not in nav and 'id="nav-search"' not in nav
    assert records("read.live") == []


def test_each_role_starts_where_its_work_is(client, trained, account):
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    assert client.get("/").headers["Location"] == "/live"
    nav = client.get("/live").get_data(as_text=True)
    assert 'id="nav-live"' in nav and 'id="nav-alerts"' in nav
    if {"reads.search_form", "reads.search"} & set(client.application.view_functions):
        assert 'id="nav-search"' in nav
    client.post("/auth/logout", data={"csrf_token": csrf(nav)})

    account("officer.new", "officer")  # untrained: stays on the start page, which says why
    sign_in(client, "officer.new")
    home = client.get("/")
    assert home.status_code == 200 and "training-required" in home.get_data(as_text=True)
    assert 'id="nav-live"' not in home.get_data(as_text=True)
    assert client.get("/live").status_code == 403


def test_hostile_text_is_escaped_on_the_live_view(client, settings, trained, tmp_path):
    import_list(settings, tmp_path, reason=f"{HOSTILE} STOLEN")
    save(settings, "7ABC123", on_stored=lambda r: alerts.raise_alerts(settings, r))
    # Plates are normalised when stored; a row edited outside the product must still not run.
    Read.update(plate=HOSTILE, direction="<img src=x onerror=alert(1)>").where(Read.plate == "7ABC123").execute()
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    state_purpose(client)
    page = client.get("/live").get_data(as_text=True)
    assert HOSTILE not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert page.count("&lt;script&gt;") >= 3  # the read, the alert's read, the alert's reason
    # The strict CSP allows no inline code: every script comes from a file, no style attributes.
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and " style=" not in page


def test_open_alerts_carry_the_verification_rule(client, settings, trained, tmp_path):
    import_list(settings, tmp_path)
    save(settings, "7ABC123", on_stored=lambda r: alerts.raise_alerts(settings, r))
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    page = client.get("/live").get_data(as_text=True)
    panel = page[page.index('id="open-alerts"') : page.index('id="no-open-alerts"')]
    assert "7ABC123" in panel and "UNCONFIRMED" in panel
    assert "confirm through CLETS and compare the characters with the image before any action" in panel
    rec = records("alert.view", via="live view")[-1]
    assert rec.username == "officer.lee" and rec.purpose_code == "HIT-VERIFY" and rec.result_count == 1
    assert records("read.live") == []  # alerts shown, but no reads without a purpose


def test_stale_hotlist_shows_the_banner_and_the_status_strip(client, settings, trained, account, tmp_path):
    import_list(settings, tmp_path)
    account("tech.ortiz", "technician")
    sign_in(client, "tech.ortiz")
    assert 'id="site-warnings"' not in client.get("/").get_data(as_text=True)

    old = utcnow() - dt.timedelta(hours=settings.hotlist.stale_after_hours + 1)
    Hotlist.update(refreshed_at=old).where(Hotlist.name == "SVS").execute()
    page = client.get("/").get_data(as_text=True)  # a page without plate data shows it too
    banner = page[page.index('id="site-warnings"') : page.index("<main>")]
    assert "Hotlist SVS is stale" in banner and localtime(old, "minutes", ZoneInfo(settings.post.timezone)) in banner
    assert "do not rely on it" in banner

    client.post("/auth/logout", data={"csrf_token": csrf(page)})
    assert 'id="site-warnings"' not in client.get("/auth/login").get_data(as_text=True)
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    strip = client.get("/live").get_data(as_text=True)
    strip = strip[strip.index('id="hotlist-status"') : strip.index('id="disk-state"')]
    assert 'class="state bad"' in strip and "SVS:" in strip and "STALE" in strip


def _sign_in_over_http(base):
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(base + "/auth/login").read().decode()
    opener.open(
        base + "/auth/login",
        data=urlencode({"username": "officer.lee", "password": PASSWORD, "csrf_token": csrf(page)}).encode(),
    ).read()
    return opener


def _next_event(stream) -> tuple[str, dict]:
    """The next event of an SSE stream, skipping keep-alive comments and the retry line."""
    kind, data = None, None
    while True:
        line = stream.readline()
        assert line, "the stream ended"
        if line.startswith(b"event: "):
            kind = line[7:].strip().decode()
        elif line.startswith(b"data: "):
            data = json.loads(line[6:])
        elif line == b"\n" and kind:
            assert data is not None, f"event {kind} without data"
            return kind, data


def test_stream_sends_reads_only_with_a_purpose_and_records_each(settings, db, trained, tmp_path):
    trained("officer.lee", "officer")
    read = save(settings, "6DEF789", direction="eastbound")
    import_list(settings, tmp_path, reason=HOSTILE)
    raised = []
    save(settings, "7ABC123", on_stored=lambda r: raised.extend(alerts.raise_alerts(settings, r)))
    live = make_settings(settings.data_dir, web__port=free_port())
    service = PostService(live, with_capture=False).start()
    try:
        base = f"http://127.0.0.1:{live.web.port}"
        opener = _sign_in_over_http(base)
        read_event = {
            "id": read.id,
            "uuid": read.uuid,
            "plate": read.plate,
            "confidence": read.confidence,
            "low_confidence": False,
            "captured_at": read.captured_at.isoformat() + "Z",
            "direction": "eastbound",
        }
        alert_event = {
            "id": raised[0].id,
            "read_id": raised[0].read_id,
            "plate": "7ABC123",
            "entry_plate": "7ABC123",
            "reason": HOSTILE,
            "hotlist": "SVS",
            "score": 1.0,
            "match_kind": "exact",
            "status": "unconfirmed",
        }

        # Without a stated purpose the read is not sent; the alert (its own purpose) is.
        stream = opener.open(base + "/live/stream", timeout=20)
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.readline().startswith(b"retry:")

        def publish_both():
            service.bus.publish("read", read_event)
            service.bus.publish("alert", alert_event)

        threading.Timer(0.5, publish_both).start()
        kind, data = _next_event(stream)
        assert kind == "alert" and data["url"] == f"/alerts/{raised[0].id}" and data["reason"] == HOSTILE
        stream.close()
        assert records("read.live") == []

        page = opener.open(base + "/live").read().decode()
        opener.open(
            base + "/live/purpose",
            data=urlencode({"purpose": "CRIME-INV", "case_number": "26-000777", "csrf_token": csrf(page)}).encode(),
        ).read()
        stream = opener.open(base + "/live/stream", timeout=20)
        stream.readline()
        threading.Timer(0.5, lambda: service.bus.publish("read", read_event)).start()
        kind, data = _next_event(stream)
        assert kind == "read" and data["plate"] == "6DEF789" and data["direction"] == "eastbound"
        assert data["camera"] and data["captured_at"] == localtime(
            read.captured_at, tz=ZoneInfo(settings.post.timezone)
        )
        stream.close()
    finally:
        service.stop()
    [rec] = records("read.live", via="live stream")
    assert (rec.username, rec.purpose_code, rec.case_number) == ("officer.lee", "CRIME-INV", "26-000777")
    assert json.loads(rec.object_ids) == [f"read:{read.uuid}"] and rec.result_count == 1
    # The listing of the page (after the purpose) is the only other read.live.
    assert len(records("read.live")) == 2
    assert audit.verify().ok


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)")
def test_live_view_in_a_browser_on_a_laptop_and_a_phone(settings, db, trained, tmp_path):
    """A read arrives live in the page, the theme toggle sticks, nothing breaks the CSP, and the
    phone layout has no sideways scrolling. Screenshots are kept in the test's tmp_path."""

    trained("officer.lee", "officer")
    save(settings, "4GHJ321", direction="northbound", confidence=0.42)
    live = make_settings(settings.data_dir, web__port=free_port())
    service = PostService(live, with_capture=False).start()
    base = f"http://127.0.0.1:{live.web.port}"
    errors = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark")
            page = context.new_page()
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(base + "/")
            page.fill("#username", "officer.lee")
            page.fill("#password", PASSWORD)
            page.click("main button[type=submit]")
            page.wait_for_url(base + "/live")
            expect(page.locator("#purpose-form")).to_be_visible()
            assert "4GHJ321" not in page.content()
            page.select_option("#purpose", "STOLEN-VEH")
            page.fill("#case_number", "26-004512")
            page.click("#state-purpose")
            assert page.locator("#latest-reads").inner_text().count("4GHJ321") == 1
            expect(page.locator("#live-view")).to_have_attribute("data-state", re.compile("^Live"))
            dark_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")

            new = save(live, "5KLM654", direction="southbound")
            service.bus.publish("read", {"id": new.id, "uuid": new.uuid, "plate": new.plate})
            page.wait_for_selector("#latest-reads tbody tr.new >> text=5KLM654", timeout=10_000)
            assert page.locator("#latest-reads tbody tr").first.inner_text().startswith("5KLM654")
            page.screenshot(path=str(tmp_path / "live-laptop-dark.png"), full_page=True)

            page.click("#theme-toggle")
            light_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert light_bg != dark_bg
            page.reload()
            assert page.evaluate("document.documentElement.dataset.theme") == "light"

            page.set_viewport_size({"width": 390, "height": 844})
            page.click("#theme-toggle")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(tmp_path / "live-phone-dark.png"), full_page=True)
            browser.close()
    finally:
        service.stop()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    assert len(records("read.live", via="live stream")) == 1


def test_streams_left_by_their_browsers_free_their_threads(settings, db, trained):
    """Reloading the live view many times must not use up the server's worker threads: each
    abandoned stream notices its browser left and ends within a second, giving back its place (3
    threads: streams get one of them, web/events.py StreamSlots)."""

    trained("officer.lee", "officer")
    live = make_settings(settings.data_dir, web__port=free_port(), web__threads=3)
    service = PostService(live, with_capture=False).start()
    try:
        base = f"http://127.0.0.1:{live.web.port}"
        opener = _sign_in_over_http(base)
        for path in ["/live/stream", "/alerts/stream"] * 4:  # more streams than threads
            deadline = time.monotonic() + 1.5
            while True:  # the last stream's place, back once the server has seen its browser leave
                try:
                    stream = opener.open(base + path, timeout=10)
                    break
                except urllib.error.HTTPError as refused:
                    assert refused.code == 503 and time.monotonic() < deadline
                    time.sleep(0.1)
            assert stream.readline().startswith(b"retry:")
            stream.close()
        time.sleep(1.5)
        started = time.monotonic()
        assert urllib.request.urlopen(base + "/health", timeout=5).status == 200
        assert time.monotonic() - started < 1.0
    finally:
        service.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)")
def test_reads_arriving_out_of_order_are_listed_newest_first(settings, db, trained):
    """Reads of one pass can reach the stream in another order than they were captured; the page
    keeps the table newest first by capture time, as the server lists it, and names the camera."""

    trained("officer.lee", "officer")
    now = utcnow()
    save(settings, "1AAA111", captured_at=now - dt.timedelta(seconds=30))
    save(settings, "2BBB222", captured_at=now - dt.timedelta(seconds=20))
    live = make_settings(settings.data_dir, web__port=free_port())
    service = PostService(live, with_capture=False).start()
    base = f"http://127.0.0.1:{live.web.port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            page = browser.new_page()
            page.goto(base + "/auth/login")
            page.fill("#username", "officer.lee")
            page.fill("#password", PASSWORD)
            page.click("main button[type=submit]")
            page.wait_for_url(base + "/live")
            page.select_option("#purpose", "STOLEN-VEH")
            page.fill("#case_number", "26-004512")
            page.click("#state-purpose")
            expect(page.locator("#live-view")).to_have_attribute("data-state", re.compile("^Live"))

            def plates():
                return page.eval_on_selector_all(
                    "#latest-reads tbody tr td:first-child", "c => c.map(x => x.innerText)"
                )

            assert plates() == ["2BBB222", "1AAA111"]
            newest = save(live, "5NEW555", captured_at=now - dt.timedelta(seconds=1))
            between = save(live, "4MID444", captured_at=now - dt.timedelta(seconds=10))
            older = save(live, "3OLD333", captured_at=now - dt.timedelta(seconds=25))
            for read in (between, newest, older):  # published out of capture order
                service.bus.publish("read", {"id": read.id, "uuid": read.uuid, "plate": read.plate})
            expect(page.locator("#latest-reads tbody tr.new")).to_have_count(3, timeout=10_000)
            assert plates() == ["5NEW555", "4MID444", "2BBB222", "3OLD333", "1AAA111"]
            cameras = page.eval_on_selector_all(
                "#latest-reads tbody td[data-label=Camera]", "c => c.map(x => x.innerText)"
            )
            assert set(cameras) == {"Camera 1"}
            browser.close()
    finally:
        service.stop()


LOW_WORDS = "read with low confidence: compare every character"


def low_alert(settings, tmp_path, plate="7ABC123", ori="CA0190000"):
    """An exact match on a read of confidence 0.33 (the auditor's case), with its crop; the entry's
    ORI set as raise_alerts copies it from the entry."""
    import_list(settings, tmp_path)
    raised = []
    save(settings, plate, confidence=0.33, on_stored=lambda r: raised.extend(alerts.raise_alerts(settings, r)))
    Alert.update(entry_ori=ori).where(Alert.id == raised[0].id).execute()
    return Alert.get_by_id(raised[0].id)


def test_the_live_card_shows_the_read_confidence_crop_and_listed_plate(client, settings, trained, tmp_path):
    alert = low_alert(settings, tmp_path)
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    page = client.get("/live").get_data(as_text=True)
    assert "exact 1.00" not in " ".join(page.split())  # the match score, shown as if the read's
    card = page[page.index(f'<li class="alert-item unconfirmed" id="alert-{alert.id}"') :]
    card = " ".join(card[: card.index("</li>")].split())
    assert "exact match, score 1.00" in card
    crop = f'<img class="crop" src="/alerts/{alert.id}/image/crop"'
    assert card.index(crop) < card.index('class="read"') < card.index('class="listed"')
    assert re.search(r'class="read">.*7ABC123.*confidence 0\.33', card) and LOW_WORDS in card
    assert "ORI CA0190000, NIC S1" in card
    rec = records("alert.view", via="live view")[-1]
    assert json.loads(rec.query) == {"plates": ["7ABC123"]}


def test_streamed_alerts_carry_the_read_confidence_crop_and_entry_numbers(settings, db, trained, tmp_path):
    """Both streams (the live view's and the alerts page's) send what the cards show, read from the
    alert as stored, and record the listed plate and the plate read."""
    trained("officer.lee", "officer")
    alert = low_alert(settings, tmp_path)
    live = make_settings(settings.data_dir, web__port=free_port())
    service = PostService(live, with_capture=False).start()
    published = {
        "id": alert.id,
        "read_id": alert.read_id,
        "plate": "7ABC123",
        "entry_plate": "7ABC123",
        "reason": "STOLEN",
        "hotlist": "SVS",
        "score": 1.0,
        "match_kind": "exact",
        "status": "unconfirmed",
    }
    try:
        opener = _sign_in_over_http(f"http://127.0.0.1:{live.web.port}")
        for path in ("/live/stream", "/alerts/stream"):
            stream = opener.open(f"http://127.0.0.1:{live.web.port}{path}", timeout=20)
            assert stream.readline().startswith(b"retry:")
            threading.Timer(0.5, lambda: service.bus.publish("alert", published)).start()
            kind, data = _next_event(stream)
            stream.close()
            assert kind == "alert", path
            assert (data["plate"], data["read_confidence"], data["low_confidence"]) == ("7ABC123", 0.33, True), path
            assert data["crop_url"] == f"/alerts/{alert.id}/image/crop" and data["url"] == f"/alerts/{alert.id}"
            assert (data["entry_plate"], data["entry_state"], data["entry_ori"], data["entry_nic"]) == (
                "7ABC123",
                "CA",
                "CA0190000",
                "S1",
            )
    finally:
        service.stop()
    streamed = [r for r in records("alert.view") if "stream" in r.details]
    assert len(streamed) == 2
    for rec in streamed:
        assert json.loads(rec.query) == {"plate": "7ABC123", "read_plate": "7ABC123"}
        assert json.loads(rec.object_ids) == [f"alert:{alert.id}", f"read:{alert.read.uuid}"]
    assert audit.verify().ok


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)")
def test_an_alert_arriving_live_shows_its_crop_and_low_confidence_in_the_browser(settings, db, trained, tmp_path):
    """The cards live.js draws for a streamed alert: on the live view and on the alerts page, the
    crop (loaded through the recorded image route), the read's confidence in words, the listed plate."""
    trained("officer.lee", "officer")
    import_list(settings, tmp_path)
    # every alert sent, so the same listed plate can arrive on both pages
    live = make_settings(settings.data_dir, web__port=free_port(), alerts__repeat_window_s=0)
    service = PostService(live, with_capture=False).start()
    base = f"http://127.0.0.1:{live.web.port}"

    def arrive(plate):
        raised = []
        save(live, plate, confidence=0.33, on_stored=lambda r: raised.extend(alerts.raise_alerts(live, r)))
        a = raised[0]
        service.bus.publish(
            "alert",
            {
                "id": a.id,
                "read_id": a.read_id,
                "plate": plate,
                "entry_plate": a.entry_plate,
                "reason": "STOLEN",
                "hotlist": "SVS",
                "score": a.score,
                "match_kind": a.match_kind,
                "status": "unconfirmed",
            },
        )
        return a

    errors = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            page = browser.new_page()
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(base + "/auth/login")
            page.fill("#username", "officer.lee")
            page.fill("#password", PASSWORD)
            page.click("main button[type=submit]")
            page.wait_for_url(base + "/live")
            expect(page.locator("#live-view")).to_have_attribute("data-state", re.compile("^Live"))

            def check(card, alert):
                """The lead in `card`: the crop loaded, the read in words, the listed plate, in a row."""
                card.wait_for(timeout=10_000)
                text = " ".join(card.inner_text().split())
                assert LOW_WORDS in text and "confidence 0.33" in text and "7ABC123 CA" in text
                crop = card.locator("img.crop")
                assert crop.get_attribute("src") == f"/alerts/{alert.id}/image/crop"
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=crop.element_handle())
                left = card.evaluate(
                    "c => ['img.crop', '.read', '.listed'].map(s => c.querySelector(s).getBoundingClientRect().left)"
                )
                assert left == sorted(left), left  # side by side: crop, read, listed plate
                return text

            first = arrive("7ABC123")
            card = check(page.locator(f"#open-alerts li.new#alert-{first.id}"), first)
            assert "exact match, score 1.00" in card and "UNCONFIRMED" in card
            page.goto(base + "/alerts")  # the alerts page: a new alert goes on top of the page
            expect(page.locator("#live")).to_have_attribute("data-state", "open")
            second = arrive("7ABC123")
            card = check(page.locator(f"#live .live-alert#alert-{second.id}"), second)
            assert "exact match, score 1.00" in card and "UNCONFIRMED" in card
            page.screenshot(path=str(tmp_path / "alerts-laptop.png"), full_page=True)
            page.goto(base + f"/alerts/{second.id}")
            check(page.locator(f"#lead-{second.id}"), second)
            page.screenshot(path=str(tmp_path / "alert-laptop.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            for path in ("/live", f"/alerts/{second.id}"):  # on a phone: no sideways scrolling
                page.goto(base + path)
                assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
                page.screenshot(path=str(tmp_path / f"{path.strip('/').replace('/', '-')}-phone.png"), full_page=True)
            browser.close()
    finally:
        service.stop()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    crops = [r for r in records("evidence.view") if json.loads(r.details) == {"kind": "crop"}]
    # the live card's, the alerts page's list (the first again) and its new card's, the alert page's
    assert f"ALERT-{second.id}" in {r.case_number for r in crops} and len(crops) >= 4
    assert all(json.loads(r.query) == {"plate": "7ABC123", "read_plate": "7ABC123"} for r in crops)
