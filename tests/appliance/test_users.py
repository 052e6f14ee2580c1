"""Accounts: what ends an account's sessions (the session version) and what leaves them alone."""

import datetime as dt

import pytest

from appliance import audit, users
from appliance.audit import system_actor
from appliance.models import AccessRecord, User

PASSWORD = "correct horse battery staple"


def _account(settings, username="officer.lee", role="officer"):
    return users.add(
        system_actor(settings),
        username=username,
        display_name=username,
        organization="PD",
        role=role,
        password=PASSWORD,
        must_change_password=False,
    )


def _version(username="officer.lee") -> int:
    return User.get(User.username == username).session_version


def test_a_new_account_starts_at_version_zero_and_its_session_is_current(settings, db):
    user = _account(settings)
    assert user.session_version == 0 == _version()
    assert users.session_current(User.get_by_id(user.id), 0)
    assert not users.session_current(User.get_by_id(user.id), None)  # a session from before migration 9
    assert not users.session_current(None, 0)


def test_sign_out_password_and_deactivation_raise_the_version(settings, db):
    admin = system_actor(settings)
    user = _account(settings)
    _account(settings, "admin.chen", "admin")
    users.sign_out(users.actor_for(user, "10.0.0.9"), user.id)
    assert _version() == 1
    users.set_password(
        users.actor_for(user, "10.0.0.9"),
        "officer.lee",
        "a different pass phrase",
        12,
        must_change=False,
        action="auth.password_change",
    )
    assert _version() == 2
    users.reset_password(admin, "officer.lee", 12)
    assert _version() == 3
    users.set_active(admin, "officer.lee", False)
    assert _version() == 4
    assert not users.session_current(User.get_by_id(user.id), 4)  # inactive: no session at all
    # Reactivation and training leave the version (and other accounts') alone.
    users.set_active(admin, "officer.lee", True)
    users.set_training(admin, "officer.lee", dt.date(2026, 1, 5), "ALPR 101", dt.date(2027, 1, 5))
    assert _version() == 4 and _version("admin.chen") == 0
    # Sign-out is still recorded once, in the chain.
    assert AccessRecord.select().where(AccessRecord.action == "auth.logout").count() == 1
    assert audit.verify().ok


def test_a_refused_password_leaves_the_sessions_alone(settings, db):
    _account(settings)
    with pytest.raises(users.UserError, match="at least 12"):
        users.set_password(system_actor(settings), "officer.lee", "short", 12, must_change=False)
    assert _version() == 0
