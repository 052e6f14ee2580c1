"""Nobody on the network can keep an account's owner out (issue 17, finding 6). The account lock-out
stays (CJIS: five failures in a row), but it holds for the addresses that failed: the owner signs in
from an address that has not; someone guessing from address after address locks it for every
address. An address with too many failures (any name) is refused for a while (HTTP 429), behind a
trusted proxy by the client's forwarded address, never by a forged one. A lock ends the account's
sessions. All over real HTTP against the app served by waitress, each "address" a real source
address on the loopback network (127.0.0.2, 127.0.0.3, ...)."""

from __future__ import annotations

import functools
import http.client
import json
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlencode

import pytest

from appliance import audit, users
from appliance.models import AccessRecord, User, utcnow
from tests.conftest import make_settings
from tests.web.conftest import PASSWORD, csrf
from tests.web.test_sessions import _flash, _refused, _sign_in
from web import create_app
from web.server import WebServer

ATTACKER = "127.0.0.2"
OWNER = "127.0.0.3"
WRONG = "not the password at all"


class _FromAddress(urllib.request.HTTPHandler):
    """Connections from one source address: another machine on the network, as the server sees it."""

    def __init__(self, address: str):
        super().__init__()
        self.address = address

    def http_open(self, req):
        return self.do_open(functools.partial(http.client.HTTPConnection, source_address=(self.address, 0)), req)


def attempt(base, address, username, password, headers=None) -> tuple[int, str, str]:
    """One sign-in from `address`: (status, the flashed answer or "", Retry-After or ""). Status 302
    is a sign-in: the page it led to is not the sign-in page."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _FromAddress(address))
    opener.addheaders = list((headers or {}).items())
    page = opener.open(base + "/auth/login").read().decode()
    try:
        resp = opener.open(
            base + "/auth/login",
            data=urlencode({"username": username, "password": password, "csrf_token": csrf(page)}).encode(),
        )
    except urllib.error.HTTPError as refused:
        return refused.code, _flash(refused.read().decode()), refused.headers.get("Retry-After") or ""
    assert "/auth/login" not in resp.geturl()
    return 302, "", ""


def reasons() -> list[str]:
    rows = AccessRecord.select().where(AccessRecord.action == "auth.login_failed").order_by(AccessRecord.seq)
    return [json.loads(r.details)["reason"] for r in rows]


def lockouts() -> list[dict]:
    rows = AccessRecord.select().where(AccessRecord.action == "auth.lockout").order_by(AccessRecord.seq)
    return [json.loads(r.details) for r in rows]


@pytest.fixture
def admin(account):
    return account("capt.alvarez", "admin")


def test_a_locked_administrator_signs_in_from_an_address_that_has_not_failed(live_server, settings, admin):
    limit = settings.web.failed_logins_before_lockout
    for _ in range(limit):
        assert attempt(live_server, ATTACKER, "capt.alvarez", WRONG)[:2] == (401, users.REFUSED)
    assert User.get_by_id(admin.id).locked_until > utcnow()
    # The address that failed gets the same answer as for a wrong password, even with the right one ...
    assert attempt(live_server, ATTACKER, "capt.alvarez", PASSWORD)[:2] == (401, users.REFUSED)
    # ... and the administrator, at their own machine, is not kept out.
    assert attempt(live_server, OWNER, "capt.alvarez", PASSWORD)[0] == 302
    assert User.get_by_id(admin.id).locked_until is None
    assert reasons() == ["wrong password"] * (limit - 1) + ["wrong password; account locked", "locked"]
    assert lockouts()[0]["addresses"] == "those with a failed sign-in"
    login = AccessRecord.select().where(AccessRecord.action == "auth.login").get()
    assert login.client_addr == OWNER and "signed in from an address with no failed sign-in" in login.details
    assert audit.verify().ok


def test_a_lock_out_ends_the_accounts_open_sessions(live_server, settings, trained):
    """An auditor's session left open kept working through a lock-out of the account."""
    trained("auditor.kim", "auditor")
    _, cookie = _sign_in(live_server, "auditor.kim")
    assert not _refused(live_server, "/audit/", cookie)
    for _ in range(settings.web.failed_logins_before_lockout):
        attempt(live_server, ATTACKER, "auditor.kim", WRONG)
    assert _refused(live_server, "/audit/", cookie)
    assert _refused(live_server, "/", cookie)


def test_guesses_from_address_after_address_lock_the_account_for_every_address(live_server, settings, admin):
    limit = settings.web.failed_logins_before_lockout
    for _ in range(limit):
        attempt(live_server, ATTACKER, "capt.alvarez", WRONG)
    # During the lock an address that has not failed has its password checked, and its failures count.
    for n in range(limit):
        assert attempt(live_server, f"127.0.1.{n + 1}", "capt.alvarez", WRONG)[:2] == (401, users.REFUSED)
    # Someone is trying from address after address: now no address gets in, not even with the right password.
    assert attempt(live_server, OWNER, "capt.alvarez", PASSWORD)[:2] == (401, users.REFUSED)
    assert reasons()[limit:] == ["wrong password"] * (limit - 1) + [
        "wrong password; account locked for every address",
        "locked",
    ]
    assert [x["addresses"] for x in lockouts()] == ["those with a failed sign-in", "every address"]
    assert User.get_by_id(admin.id).locked_until > utcnow()


def test_an_address_with_too_many_failures_is_refused_for_a_while_whatever_the_name(live_server, settings, admin):
    per_address = settings.web.failed_logins_per_address
    names = ["nobody.1", "nobody.2", "capt.alvarez", "nobody.3"]
    for n in range(per_address):
        assert attempt(live_server, ATTACKER, names[n % 4], WRONG)[0] == 401
    # Past the limit: refused before any password is checked, the right one included, with the same
    # answer for a name that exists and one that does not (it is about the address, not the name).
    throttled = attempt(live_server, ATTACKER, "capt.alvarez", PASSWORD)
    assert throttled[0] == 429 and throttled[1].startswith(f"Too many failed sign-ins from this address ({ATTACKER})")
    assert 0 < int(throttled[2]) <= settings.web.failed_login_window_minutes * 60
    unknown = attempt(live_server, ATTACKER, "nobody.4", WRONG)
    assert unknown[:2] == throttled[:2]
    assert reasons()[-2:] == ["address throttled", "address throttled"]
    # Another address is not held up by it.
    assert attempt(live_server, OWNER, "capt.alvarez", PASSWORD)[0] == 302


def test_behind_a_trusted_proxy_the_throttle_counts_the_forwarded_client(tmp_path, account):
    settings = make_settings(tmp_path / "data", web__trusted_proxy=True)
    app = create_app(settings)
    server = WebServer(app, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        account("capt.alvarez", "admin")
        client = {"X-Forwarded-For": "198.51.100.7"}
        for _ in range(settings.web.failed_logins_per_address):
            assert attempt(base, "127.0.0.1", "nobody.here", WRONG, client)[0] == 401
        assert attempt(base, "127.0.0.1", "capt.alvarez", PASSWORD, client)[0] == 429
        # The proxy's own address is not throttled: another client behind it signs in.
        assert attempt(base, "127.0.0.1", "capt.alvarez", PASSWORD, {"X-Forwarded-For": "198.51.100.8"})[0] == 302
        # Only the proxy on this host (127.0.0.1) is believed: a client reaching waitress directly
        # and naming another address is counted by its own.
        assert attempt(base, ATTACKER, "nobody.here", WRONG, {"X-Forwarded-For": "198.51.100.9"})[0] == 401
        failed = AccessRecord.select().where(AccessRecord.action == "auth.login_failed").order_by(AccessRecord.seq)
        assert [r.client_addr for r in failed][-2:] == ["198.51.100.7", ATTACKER]
        assert {r.client_addr for r in failed} == {"198.51.100.7", ATTACKER}
        login = AccessRecord.select().where(AccessRecord.action == "auth.login").get()
        assert login.client_addr == "198.51.100.8"
    finally:
        server.stop()


def test_without_a_trusted_proxy_a_forged_forwarded_for_does_not_escape_the_throttle(live_server, settings, admin):
    for n in range(settings.web.failed_logins_per_address):
        attempt(live_server, ATTACKER, "nobody.here", WRONG, {"X-Forwarded-For": f"203.0.113.{n}"})
    refused = attempt(live_server, ATTACKER, "capt.alvarez", PASSWORD, {"X-Forwarded-For": "203.0.113.200"})
    assert refused[0] == 429 and f"({ATTACKER})" in refused[1]
    failed = AccessRecord.select().where(AccessRecord.action == "auth.login_failed")
    assert {r.client_addr for r in failed} == {ATTACKER}
