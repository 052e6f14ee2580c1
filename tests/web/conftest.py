import datetime as dt
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from appliance import audit, users
from appliance import db as dbmod
from appliance.audit import system_actor

PASSWORD = "correct horse battery staple"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # Debian's, driven by Playwright


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client, username, password=PASSWORD, next_url=None):
    page = client.get("/auth/login")
    url = "/auth/login" + (f"?next={next_url}" if next_url else "")
    return client.post(
        url, data={"username": username, "password": password, "csrf_token": csrf(page.get_data(as_text=True))}
    )


def state_purpose(client, code: str, case_number: str, next_url: str = "/"):
    """State the session's purpose as a person does, on the purpose form (web/purpose.py)."""
    page = client.get("/auth/password").get_data(as_text=True)
    return client.post(
        f"/purpose/?next={next_url}",
        data={"purpose": code, "case_number": case_number, "csrf_token": csrf(page)},
    )


def tamper_record(settings, seq: int, column: str, value) -> None:
    """Change one column of one access record behind the application's back (a plain sqlite3
    connection, the app's own one closed first), as someone with the file would."""

    dbmod.database.close()
    conn = sqlite3.connect(settings.db_path)
    with conn:
        conn.execute(f"UPDATE access_record SET {column} = ? WHERE seq = ?", (value, seq))
    conn.close()


@pytest.fixture
def account(settings, db):
    """Make an account: account(username, role, must_change=False)."""

    def make(username="officer.lee", role="officer", must_change=False):
        return users.add(
            system_actor(settings),
            username=username,
            display_name=username.title(),
            organization=settings.post.agency,
            role=role,
            password=PASSWORD,
            must_change_password=must_change,
        )

    return make


@pytest.fixture
def trained(account):
    """Make an account with current ALPR training: trained(username, role)."""

    def make(username, role):
        user = account(username, role)
        users.set_training(
            audit.Actor("admin", "PD"),
            username,
            dt.date.today() - dt.timedelta(days=30),
            "ALPR 101",
            dt.date.today() + dt.timedelta(days=335),
        )
        return user

    return make


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def page():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        context = browser.new_context()
        pg = context.new_page()
        errors = []
        pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield pg
        assert not [e for e in errors if "Content Security Policy" in e], errors
        browser.close()


@pytest.fixture
def artifacts(request):
    """Screenshots kept after the run: $WAYPOST_TEST_ARTIFACTS, else test-artifacts/ in the checkout."""

    root = Path(os.environ.get("WAYPOST_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts")
    folder = root / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
