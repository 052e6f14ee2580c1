"""Live streams cannot use up the server (issue 17, finding 5): each open stream holds one of
waitress's threads, so one account gets web.streams_per_account and the post half of web.threads;
one more is answered 503 with Retry-After, and sign-in and the pages keep the other half. The
browser's live.js waits longer after each refusal instead of asking again at once. All over real
HTTP against the post served by waitress (PostService, as `waypost run`), streams held open by real
connections."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright

from appliance.service import PostService
from tests.appliance.test_cli import free_port
from tests.conftest import make_settings
from tests.web.conftest import CHROMIUM, PASSWORD, csrf
from tests.web.test_sessions import _sign_in

ANSWER_WITHIN_S = 5.0  # sign-in (one argon2 hash) and the alerts page, while every stream is open


class Stream:
    """One GET of a stream on a connection of its own, left open until closed."""

    def __init__(self, base: str, path: str, cookie: str, account: str = "", timeout_s: float = 30):
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
        self.path, self.cookie, self.account = path, cookie, account
        self.status: int | None = None
        self.retry_after: str | None = None
        self.body = ""
        self.first_line = b""
        self.resp: http.client.HTTPResponse | None = None

    def open(self) -> Stream:
        self.conn.request("GET", self.path, headers={"Cookie": f"waypost_session={self.cookie}"})
        # held: a response dropped unread closes its socket, and the server would see the page leave
        self.resp = resp = self.conn.getresponse()
        self.status, self.retry_after = resp.status, resp.getheader("Retry-After")
        if resp.status == 200:
            self.first_line = resp.readline()
        else:
            self.body = resp.read().decode()
        return self

    def close(self) -> None:
        if self.resp is not None:
            self.resp.close()  # a stream's response owns the socket (http.client hands it over)
        self.conn.close()


@pytest.fixture
def post(settings, db):
    """The post served by waitress with its event bus (default web.threads: 8). Yields the base URL."""
    live = make_settings(settings.data_dir, web__port=free_port())
    service = PostService(live, with_capture=False).start()
    try:
        yield f"http://127.0.0.1:{live.web.port}"
    finally:
        service.stop()


def test_sign_in_and_the_alerts_page_answer_with_fifty_streams_open(post, trained):
    """One officer opens 20 streams, ten others 3 each (50 connections, real sockets, all held
    open): at most two per account and four in all (half of 8 threads) are served, the rest are
    refused at once with 503 and Retry-After, and a sign-in and the alerts page answer quickly."""
    names = ["officer.main"] + [f"officer.{n}" for n in range(10)]
    for name in names:
        trained(name, "officer")
    trained("officer.late", "officer")
    cookies = {name: _sign_in(post, name)[1] for name in names}
    plan = ["officer.main"] * 20 + [name for name in names[1:] for _ in range(3)]
    streams = [
        Stream(post, "/alerts/stream" if i % 2 else "/live/stream", cookies[name], name) for i, name in enumerate(plan)
    ]
    workers = [threading.Thread(target=s.open, daemon=True) for s in streams]
    try:
        for w in workers:
            w.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(s.status is None for s in streams):
            time.sleep(0.05)
        assert len(streams) == 50

        # While the 50 connections are open: a sign-in and the alerts page answer within the bound.
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        started = time.monotonic()
        page = opener.open(post + "/auth/login", timeout=ANSWER_WITHIN_S).read().decode()
        signed_in = opener.open(
            post + "/auth/login",
            data=urlencode({"username": "officer.late", "password": PASSWORD, "csrf_token": csrf(page)}).encode(),
            timeout=ANSWER_WITHIN_S,
        )
        assert "/auth/login" not in signed_in.geturl()
        alerts = opener.open(post + "/alerts", timeout=ANSWER_WITHIN_S)
        assert alerts.status == 200 and "Alerts" in alerts.read().decode()
        assert time.monotonic() - started < ANSWER_WITHIN_S

        served = [s for s in streams if s.status == 200]
        refused = [s for s in streams if s.status == 503]
        assert len(served) + len(refused) == 50, [s.status for s in streams]
        assert len(served) == 4 and all(s.first_line.startswith(b"retry:") for s in served)
        per_account = {name: sum(1 for s in served if s.account == name) for name in names}
        assert max(per_account.values()) <= 2
        assert all(s.retry_after and int(s.retry_after) > 0 for s in refused)
        assert all("Live updates refused for now" in s.body for s in refused)
    finally:
        for s in streams:
            s.close()


def test_one_account_has_two_streams_and_the_post_four(post, trained):
    for name in ("officer.lee", "officer.kim", "disp.ray"):
        trained(name, "officer" if name.startswith("officer") else "dispatcher")
    lee, kim, ray = (_sign_in(post, name)[1] for name in ("officer.lee", "officer.kim", "disp.ray"))
    held: list[Stream] = []
    parts = urlsplit(post)
    for _ in range(3):  # a HEAD never runs the stream, and gives its place back all the same
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("HEAD", "/live/stream", headers={"Cookie": f"waypost_session={lee}"})
        assert conn.getresponse().status == 200
        conn.close()
    try:
        held += [Stream(post, "/live/stream", lee).open(), Stream(post, "/alerts/stream", lee).open()]
        assert [s.status for s in held] == [200, 200]
        third = Stream(post, "/alerts/stream", lee).open()
        held.append(third)
        assert third.status == 503 and third.retry_after == "15"
        assert "this account already has 2 live pages open" in third.body and "web.streams_per_account" in third.body

        held += [Stream(post, "/live/stream", kim).open(), Stream(post, "/live/stream", kim).open()]
        assert [s.status for s in held[-2:]] == [200, 200]
        full = Stream(post, "/alerts/stream", ray).open()
        held.append(full)
        assert full.status == 503 and "the post is serving 4 live pages" in full.body

        # A page closed gives its place back: the dispatcher gets it within a second or so.
        held[0].close()
        deadline = time.monotonic() + 3
        while True:
            again = Stream(post, "/alerts/stream", ray).open()
            held.append(again)
            if again.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.status == 200 and again.first_line.startswith(b"retry:")
    finally:
        for s in held:
            s.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)")
def test_a_refused_live_view_waits_longer_each_time_and_connects_once_there_is_room(post, trained):
    """live.js: EventSource alone gives up for good on a 503. The page says so, tries again after a
    few seconds (not in a tight loop) and is live once one of the account's streams has closed."""
    trained("officer.lee", "officer")
    _, cookie = _sign_in(post)
    held = [Stream(post, "/live/stream", cookie).open() for _ in range(2)]
    assert [s.status for s in held] == [200, 200]
    asked: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            context = browser.new_context()
            page = context.new_page()
            page.on("request", lambda r: asked.append(time.monotonic()) if "/live/stream" in r.url else None)
            page.goto(post + "/auth/login")
            page.fill("input[name=username]", "officer.lee")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/live")
            expect(page.locator("#live-state")).to_contain_text("trying again in", timeout=10_000)
            page.wait_for_timeout(4000)  # not time.sleep: Playwright's sync API reports requests only inside its calls
            # refused at 0 s, then after about 2 s (1.5 to 2.5) and 4 s more: three asks in ~4 s, not dozens
            assert 2 <= len(asked) <= 3, [round(t - asked[0], 1) for t in asked]
            expect(page.locator("#live-state")).to_contain_text("trying again in")
            held[0].close()
            expect(page.locator("#live-state")).to_have_text(
                "Live: new reads and alerts appear as they are stored.", timeout=20_000
            )
            # The alerts page in a second tab is the account's third stream: refused, and it says so.
            alerts = context.new_page()
            alerts.goto(post + "/alerts")
            expect(alerts.locator("#live .live-paused")).to_contain_text("New alerts are not arriving", timeout=10_000)
            held[1].close()
            expect(alerts.locator("#live")).to_have_attribute("data-state", "open", timeout=20_000)
            expect(alerts.locator("#live .live-paused")).to_have_count(0)
            browser.close()
    finally:
        for s in held:
            s.close()
