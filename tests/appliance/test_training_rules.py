"""A training record names a real course (at least 5 characters, not only digits or punctuation) and
expires at most two years after its completion, and not before it: appliance/users.py refuses
anything else, so `waypost user set-training` and the account page (tests/web/test_admin_accounts.py,
tests/web/test_training_rules_web.py) both do."""

import datetime as dt

import pytest
from click.testing import CliRunner

from appliance import users
from appliance.audit import system_actor
from appliance.cli import main
from appliance.models import AccessRecord, User
from tests.conftest import make_settings, operator_env

DONE = dt.date.today() - dt.timedelta(days=10)


def _officer(settings):
    users.add(
        system_actor(settings),
        username="officer.lee",
        display_name="Lee",
        organization="PD",
        role="officer",
        password="a long enough passphrase",
    )


def _years(day: dt.date, n: int) -> dt.date:
    return day.replace(year=day.year + n) if (day.month, day.day) != (2, 29) else dt.date(day.year + n, 2, 28)


@pytest.mark.parametrize(
    ("course", "expires", "field", "reason"),
    [
        ("ALPR", _years(DONE, 1), "course", "at least 5 characters"),
        ("   x  ", _years(DONE, 1), "course", "at least 5 characters"),
        ("12345", _years(DONE, 1), "course", "only digits or punctuation"),
        ("101 - 2.0 / 3", _years(DONE, 1), "course", "only digits or punctuation"),
        ("POST ALPR 101", _years(DONE, 2) + dt.timedelta(days=1), "expires_on", "at most two years"),
        ("POST ALPR 101", dt.date(2099, 1, 1), "expires_on", "at most two years"),
        ("POST ALPR 101", DONE - dt.timedelta(days=1), "expires_on", "after the completion date"),
        ("POST ALPR 101", DONE, "expires_on", "after the completion date"),
        ("POST ALPR 101", None, "expires_on", "expiry date is required"),
    ],
)
def test_a_training_record_without_a_real_course_or_a_bounded_expiry_is_refused(
    settings, db, course, expires, field, reason
):
    _officer(settings)
    with pytest.raises(users.UserError, match=reason) as refused:
        users.set_training(system_actor(settings), "officer.lee", DONE, course, expires)
    assert refused.value.field == field
    assert User.get(User.username == "officer.lee").training_completed_on is None
    assert not AccessRecord.select().where(AccessRecord.action == "user.training").exists()


def test_two_years_to_the_day_and_a_real_course_name_are_accepted(settings, db):
    _officer(settings)
    users.set_training(system_actor(settings), "officer.lee", DONE, "  POST ALPR 101 ", _years(DONE, 2))
    user = User.get(User.username == "officer.lee")
    assert (user.training_course, user.training_expires_on) == ("POST ALPR 101", _years(DONE, 2))
    leap = users.latest_expiry(dt.date(2024, 2, 29))
    assert leap == dt.date(2026, 2, 28)  # no 29 February in 2026: the last day of that February


def test_set_training_on_the_command_line_says_what_is_wrong(tmp_path):
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
    made = runner.invoke(main, ["user", "add", "jlee", "--role", "officer"], env=env)
    assert made.exit_code == 0, made.output

    def training(*args):
        return runner.invoke(main, ["user", "set-training", "jlee", "--completed", DONE.isoformat(), *args], env=env)

    # A usage error naming the option, as for a date that is not one.
    for args, option, reason in (
        (("--course", "101"), "--course", "at least 5 characters"),
        (("--course", "2026-101"), "--course", "only digits or punctuation"),
        (("--course", "POST ALPR 101", "--expires", _years(DONE, 3).isoformat()), "--expires", "at most two years"),
    ):
        refused = training(*args)
        assert refused.exit_code == 2, refused.output
        assert f"Invalid value for {option}" in refused.output and reason in refused.output, refused.output
        assert "Traceback" not in refused.output
    done = training("--course", "POST ALPR 101")
    assert done.exit_code == 0 and f"expires {_years(DONE, 1)}" in done.output, done.output
