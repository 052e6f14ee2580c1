import datetime as dt
import json
import urllib.request

from appliance import audit, users
from appliance.models import AccessRecord, User, utcnow
from tests.web.conftest import PASSWORD, csrf, sign_in


def actions():
    return [r.action for r in AccessRecord.select().order_by(AccessRecord.seq)]


def test_pages_need_sign_in(client):
    resp = client.get("/")
    assert resp.status_code == 302 and "/auth/login" in resp.headers["Location"]


def test_sign_in_and_out_are_recorded(client, account):
    account()
    resp = sign_in(client, "officer.lee")
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Welcome, Officer.Lee" in page
    assert "training-required" in page  # an officer without training is told why
    resp = client.post("/auth/logout", data={"csrf_token": csrf(page)})
    assert resp.status_code == 302
    assert client.get("/").status_code == 302
    assert actions()[-2:] == ["auth.login", "auth.logout"]
    assert audit.verify().ok


def test_wrong_password_and_unknown_user_look_the_same(client, account):
    account()
    a = sign_in(client, "officer.lee", "wrong password here")
    b = sign_in(client, "nobody.here", "wrong password here")
    assert a.status_code == b.status_code == 401
    assert users.REFUSED in a.get_data(as_text=True)
    assert users.REFUSED in b.get_data(as_text=True)
    recs = AccessRecord.select().where(AccessRecord.action == "auth.login_failed")
    assert [json.loads(r.details)["reason"] for r in recs] == ["wrong password", "unknown user"]


def test_lockout_after_five_failures_for_thirty_minutes(client, account):
    account()
    for _ in range(5):
        resp = sign_in(client, "officer.lee", "not the password")
    assert users.REFUSED in resp.get_data(as_text=True)  # the same answer as for an unknown name
    user = User.get(User.username == "officer.lee")
    assert dt.timedelta(minutes=29) < user.locked_until - utcnow() <= dt.timedelta(minutes=30)
    resp = sign_in(client, "officer.lee")  # right password, still locked
    assert resp.status_code == 401 and users.REFUSED in resp.get_data(as_text=True)
    assert "auth.lockout" in actions()
    # Once the lock has run out, the right password works again.
    User.update(locked_until=utcnow() - dt.timedelta(seconds=1)).execute()
    assert sign_in(client, "officer.lee").status_code == 302


def test_inactive_account_cannot_sign_in(client, account):
    account()
    User.update(active=False).execute()
    resp = sign_in(client, "officer.lee")
    assert resp.status_code == 401 and "deactivated" in resp.get_data(as_text=True)


def test_first_sign_in_forces_a_password_change(client, account):
    account(must_change=True)
    resp = sign_in(client, "officer.lee")
    assert resp.headers["Location"] == "/auth/password"
    assert client.get("/").headers["Location"] == "/auth/password"
    page = client.get("/auth/password").get_data(as_text=True)
    short = client.post(
        "/auth/password", data={"current": PASSWORD, "new": "short", "confirm": "short", "csrf_token": csrf(page)}
    )
    assert "at least 12 characters" in short.get_data(as_text=True)
    resp = client.post(
        "/auth/password",
        data={
            "current": PASSWORD,
            "new": "a much better passphrase",
            "confirm": "a much better passphrase",
            "csrf_token": csrf(page),
        },
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert "auth.password_change" in actions()


def test_post_without_csrf_token_is_refused(client, account):
    account()
    resp = client.post("/auth/login", data={"username": "officer.lee", "password": PASSWORD})
    assert resp.status_code == 400
    assert "auth.login" not in actions()


def test_no_open_redirect_after_sign_in(client, account):
    account()
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        resp = sign_in(client, "officer.lee", next_url=target)
        assert resp.headers["Location"] == "/", target
        client.post("/auth/logout", data={"csrf_token": csrf(client.get("/").get_data(as_text=True))})
    resp = sign_in(client, "officer.lee", next_url="/auth/password")
    assert resp.headers["Location"] == "/auth/password"


def test_security_headers_and_cookie_flags(client, account):
    account()
    resp = sign_in(client, "officer.lee")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"


def test_hostile_display_name_is_escaped(client, account):
    account()
    User.update(display_name='<script>alert("x")</script>').execute()
    sign_in(client, "officer.lee")
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_health_over_http(live_server):
    with urllib.request.urlopen(live_server + "/health", timeout=10) as resp:
        body = json.loads(resp.read())
    assert (body["status"], body["post"], body["problems"]) == ("ok", "post-1", [])
    assert body["sync"]["enabled"] is False  # the sync section (issue 18): sync is off here
    # urllib follows the redirect to the sign-in page
    with urllib.request.urlopen(live_server + "/", timeout=10) as resp:
        assert resp.url.endswith("/auth/login?next=%2F")
        assert "Sign in" in resp.read().decode()
