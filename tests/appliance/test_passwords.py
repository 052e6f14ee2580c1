"""The password rules (NIST SP 800-63B 5.1.1.2): a new password that is on the shipped list of common
passwords, in any case, or that is the username or contains it, is refused with the reason, wherever
a password is chosen: an account made with one, the change at first sign-in and later (the web side
is tests/web/test_password_rules.py), and `waypost user add --password-stdin`."""

import pytest
from click.testing import CliRunner

from appliance import users
from appliance.audit import system_actor
from appliance.cli import main
from appliance.models import AccessRecord, User
from tests.conftest import make_settings, operator_env

ONE_TIME = "a one-time passphrase 7Q"


def _add(settings, password, username="officer.lee", must_change=True):
    return users.add(
        system_actor(settings),
        username=username,
        display_name="Lee",
        organization="PD",
        role="officer",
        password=password,
        must_change_password=must_change,
    )


def test_the_list_is_shipped_lower_case_once_each_and_small():
    text = users.COMMON_PASSWORDS_FILE.read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("NCSC" in line or "National Cyber Security Centre" in line for line in header), "its source"
    entries = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert entries == [e.strip().lower() for e in entries]
    assert len(entries) == len(set(entries)) and 1000 < len(entries) <= 10_000
    assert min(len(e) for e in entries) >= 8  # below the lowest web.min_password_length
    assert len(text.encode()) < 100_000
    assert {"password1234", "qwerty123456", "1q2w3e4r5t6y"} <= users.common_passwords()


@pytest.mark.parametrize("password", ["password1234", "Password1234", "QWERTY123456", "1Q2w3E4r5T6y"])
def test_a_common_password_is_refused_in_any_case(settings, db, password):
    with pytest.raises(users.UserError, match="one of the most common passwords") as refused:
        _add(settings, password)
    assert password not in str(refused.value)  # the reason never repeats the password
    assert not User.select().where(User.username == "officer.lee").exists()
    assert not AccessRecord.select().where(AccessRecord.action == "user.add").exists()


def test_the_password_chosen_at_first_sign_in_and_later_is_held_to_the_list(settings, db):
    user = _add(settings, ONE_TIME)
    me = users.actor_for(user, "10.0.0.9")
    before = User.get_by_id(user.id).password_hash
    for password in ("TempPassword", "password1234"):
        with pytest.raises(users.UserError, match="one of the most common passwords"):
            users.set_password(me, "officer.lee", password, 12, must_change=False, action="auth.password_change")
    after = User.get_by_id(user.id)
    assert after.password_hash == before and after.must_change_password  # still the one-time password
    assert not AccessRecord.select().where(AccessRecord.action == "auth.password_change").exists()
    users.set_password(me, "officer.lee", "seven brown otters 1987", 12, must_change=False)
    assert not User.get_by_id(user.id).must_change_password


@pytest.mark.parametrize("password", ["officer.lee!", "OFFICER.LEE-2026", "my officer.lee passphrase"])
def test_the_username_or_a_password_containing_it_is_refused(settings, db, password):
    with pytest.raises(users.UserError, match="must not be the username or contain it"):
        _add(settings, password)


def test_user_add_with_password_stdin_refuses_a_common_password_and_the_username(tmp_path):
    data = tmp_path / "data"
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(data),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
        "WAYPOST_ADMIN_PASSWORD": "",
    }
    runner = CliRunner()
    assert runner.invoke(main, ["init"], env=env).exit_code == 0
    env |= operator_env(make_settings(data), "op.admin", "admin")

    def add(password):
        return runner.invoke(
            main, ["user", "add", "jlee", "--role", "officer", "--password-stdin"], env=env, input=password + "\n"
        )

    common = add("Password1234")
    assert common.exit_code == 1 and "one of the most common passwords" in common.output, common.output
    assert "Password1234" not in common.output
    named = add("jlee-at-the-front-desk")
    assert named.exit_code == 1 and "must not be the username or contain it" in named.output, named.output
    fine = add("seven brown otters 1987")
    assert fine.exit_code == 0 and "created officer account jlee" in fine.output, fine.output
