"""The sign-in journey in a real browser (Debian's chromium driven by Playwright)."""
import shutil

import pytest

from tests.web.conftest import PASSWORD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)"),
]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"])
        context = browser.new_context()
        pg = context.new_page()
        errors = []
        pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield pg
        assert not [e for e in errors if "Content Security Policy" in e], errors
        browser.close()


def test_first_sign_in_change_password_and_sign_out(live_server, account, page, tmp_path):
    account("admin.chen", role="admin", must_change=True)
    page.goto(live_server + "/")
    assert page.url.endswith("/auth/login?next=%2F")
    page.fill("#username", "admin.chen")
    page.fill("#password", "wrong wrong wrong")
    page.click("button[type=submit]")
    assert page.locator(".flash.error").inner_text() == "Wrong username or password."

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
    assert "/auth/login" in page.url
    assert "You are signed out." in page.content()
    page.goto(live_server + "/")
    assert "/auth/login" in page.url
