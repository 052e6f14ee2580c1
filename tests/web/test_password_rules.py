"""The password change page, at first sign-in and later, holds a new password to the rules of
appliance/users.py: not a common password (the shipped list, any case), not the username nor
containing it. The page says why, and the one-time password stays until an acceptable one is chosen."""

from appliance.models import AccessRecord, User
from tests.web.conftest import PASSWORD, csrf, sign_in


def _change(client, new, current=PASSWORD):
    page = client.get("/auth/password").get_data(as_text=True)
    return client.post(
        "/auth/password", data={"current": current, "new": new, "confirm": new, "csrf_token": csrf(page)}
    )


def test_a_one_time_password_cannot_be_replaced_by_a_common_password_or_the_username(client, account):
    account(must_change=True)
    assert sign_in(client, "officer.lee").headers["Location"] == "/auth/password"
    page = client.get("/auth/password").get_data(as_text=True)
    assert "common password" in page and "username" in page  # the rules are said before they bite

    for new, reason in (
        ("Password1234", "one of the most common passwords"),
        ("qwerty123456", "one of the most common passwords"),
        ("Officer.Lee-2026", "must not be the username or contain it"),
    ):
        resp = _change(client, new)
        text = resp.get_data(as_text=True)
        assert resp.status_code == 200 and reason in text, new
        assert new not in text  # never echoed back into the page
        assert client.get("/").headers["Location"] == "/auth/password"  # still the one-time password
    assert User.get(User.username == "officer.lee").must_change_password
    assert not AccessRecord.select().where(AccessRecord.action == "auth.password_change").exists()

    resp = _change(client, "seven brown otters 1987")
    assert resp.status_code == 302 and resp.headers["Location"] == "/"

    # A later change is held to the same list.
    resp = _change(client, "Password1234", current="seven brown otters 1987")
    assert "one of the most common passwords" in resp.get_data(as_text=True)
    assert AccessRecord.select().where(AccessRecord.action == "auth.password_change").count() == 1
