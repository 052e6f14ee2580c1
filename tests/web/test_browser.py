"""The sign-in journey in a real browser (Debian's chromium driven by Playwright)."""

import datetime as dt

import pytest
from playwright.sync_api import expect

from appliance import audit, users
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from appliance.models import AccessRecord, Read
from appliance.service import PostService
from tests.appliance.test_cli import free_port
from tests.conftest import make_settings
from tests.web.conftest import CHROMIUM, PASSWORD

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)"),
]


def test_first_sign_in_change_password_and_sign_out(live_server, account, page, tmp_path):
    account("admin.chen", role="admin", must_change=True)
    page.goto(live_server + "/")
    assert page.url.endswith("/auth/login?next=%2F")
    page.fill("#username", "admin.chen")
    page.fill("#password", "wrong wrong wrong")
    page.click("button[type=submit]")
    assert page.locator(".flash.error").inner_text() == users.REFUSED

    page.fill("#username", "admin.chen")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.url.endswith("/auth/password")
    assert "temporary password" in page.locator(".notice").inner_text()
    page.fill("#current", PASSWORD)
    page.fill("#new", "river otter lantern 42")
    page.fill("#confirm", "river otter lantern 42")
    page.click("main button[type=submit]")
    assert page.url == live_server + "/"
    assert "Welcome, Admin.Chen" in page.locator("h1").inner_text()
    assert page.locator("#training-required").is_visible()
    page.screenshot(path=str(tmp_path / "home.png"), full_page=True)

    page.click("text=Sign out")
    page.wait_for_url("**/auth/login")
    expect(page.locator("main")).to_contain_text("You are signed out.")
    page.goto(live_server + "/")
    assert "/auth/login" in page.url


def test_officer_watches_a_demo_alert_arrive_searches_and_opens_a_read(tmp_path, page, artifacts):
    """The whole officer journey against a running post with the demo street and the shipped
    models: sign in, state a purpose, see a hotlist alert arrive live, run a purpose-bound
    wildcard search, open a read with its images. Every step leaves its access record."""

    settings = make_settings(
        tmp_path / "post",
        web__port=free_port(),
        capture__type="demo",
        capture__demo_vehicles_per_min=30,
        recognizer__threads=1,
    )
    bootstrap(settings, create_admin=False)
    with dbmod.connection():
        users.add(
            system_actor(settings),
            username="officer.diaz",
            display_name="Officer Diaz",
            organization=settings.post.agency,
            role="officer",
            password=PASSWORD,
            must_change_password=False,
        )
        users.set_training(
            system_actor(settings),
            "officer.diaz",
            completed_on=dt.date.today() - dt.timedelta(days=5),
            expires_on=dt.date.today() + dt.timedelta(days=360),
            course="POST ALPR 101",
        )
    service = PostService(settings).start()
    base = f"http://127.0.0.1:{settings.web.port}"
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(base + "/")
        page.fill("#username", "officer.diaz")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        assert page.url == base + "/live"
        page.select_option("#purpose", "STOLEN-VEH")
        page.fill("#case_number", "26-017734")
        page.click("#state-purpose")
        assert "Purpose STOLEN-VEH, case 26-017734" in page.locator("#stated-purpose").inner_text()

        # every fifth demo vehicle is on the demo hotlist: its alert arrives without a reload
        alert = page.locator("#open-alerts li").first
        alert.wait_for(timeout=120_000)
        assert "UNCONFIRMED" in alert.inner_text() and "CLETS" in alert.inner_text()
        page.locator("#latest-reads tbody tr").first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "1-live-alert.png"), full_page=True)

        with dbmod.connection():
            plate = Read.select().order_by(Read.id).first().plate
        page.click("nav >> text=Search")
        page.wait_for_url("**/reads/search")
        page.fill("#plate", plate[:3] + "*")
        page.select_option("#mode", "wildcard")
        assert page.input_value("#case_number") == "26-017734"  # the stated purpose carries over
        page.click("#search")
        page.locator("#result-table tbody tr").first.wait_for()
        assert plate in page.locator("#result-table").inner_text()
        page.screenshot(path=str(artifacts / "2-search-results.png"), full_page=True)

        page.click(f"#result-table a.plate:text-is('{plate}')")
        assert page.locator("h1 .plate").inner_text() == plate
        crop = page.locator("#crop")
        crop.wait_for()

        expect(crop).to_have_js_property("complete", True)
        assert crop.evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(artifacts / "3-read-detail.png"), full_page=True)
    finally:
        service.stop()

    with dbmod.connection():
        actions = {r.action for r in AccessRecord.select().where(AccessRecord.username == "officer.diaz")}
        searches = list(AccessRecord.select().where(AccessRecord.action == "read.search"))
        assert audit.verify().ok
    assert {"auth.login", "read.live", "alert.view", "read.search", "read.view", "evidence.view"} <= actions
    assert searches[0].case_number == "26-017734" and plate[:3] + "*" in searches[0].query
