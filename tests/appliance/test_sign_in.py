"""Sign-in throttling by address and the way out of a lock-out that needs no locked account (issue
17, finding 6): the memory of failed sign-ins by address (users.FailedSignIns), `waypost user
unlock` run on the post's console, and the CLI's sign-in, which has no such memory and so gets no
exception from a lock. Real database file, the real command (CliRunner)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance import audit, users
from appliance.cli import main
from appliance.models import AccessRecord, User, utcnow
from tests.appliance.test_cli_operator import _env
from tests.conftest import OPERATOR_PASSWORD, operator_env

WRONG = "not the password at all"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_may_try_again_once_its_failures_are_older_than_the_window():
    clock = Clock()
    failed = users.FailedSignIns(limit=3, window_s=600, clock=clock)
    for step in range(3):
        assert failed.wait_s("10.0.0.5") == 0
        failed.add("10.0.0.5")
        clock.now += 60 * step
    # failures at 1000, 1000 and 1060: refused until the first of the last three is 600 s old
    assert failed.wait_s("10.0.0.5") == pytest.approx(1000 + 600 - clock.now)
    assert failed.wait_s("10.0.0.6") == 0 and not failed.has_failed("10.0.0.6")
    clock.now = 1600.5
    assert failed.wait_s("10.0.0.5") == 0 and failed.has_failed("10.0.0.5")  # one failure left in the window
    clock.now = 1660.5
    assert not failed.has_failed("10.0.0.5")


def test_the_memory_of_addresses_is_bounded():
    clock = Clock()
    failed = users.FailedSignIns(limit=2, window_s=600, max_addresses=3, clock=clock)
    for n in range(5):
        failed.add(f"10.0.0.{n}")
        failed.add(f"10.0.0.{n}")
        clock.now += 1
    # the oldest addresses went first; the newest are still refused
    assert not failed.has_failed("10.0.0.0") and not failed.has_failed("10.0.0.1")
    assert all(failed.wait_s(f"10.0.0.{n}") > 0 for n in (2, 3, 4))


def _lock(settings, username: str, address: str = "10.0.0.5") -> None:
    for _ in range(settings.web.failed_logins_before_lockout):
        with pytest.raises(users.SignInRefused):
            users.authenticate(settings, username, WRONG, address, users.FailedSignIns(10, 900))


def test_root_unlocks_an_account_on_the_posts_console_without_any_account(settings, db):
    operator_env(settings, "capt.alvarez", "admin")
    _lock(settings, "capt.alvarez")
    assert User.get(User.username == "capt.alvarez").locked_until > utcnow()
    result = CliRunner().invoke(main, ["user", "unlock", "capt.alvarez"], env=_env(settings, SUDO_USER="jtech"))
    assert result.exit_code == 0, result.output
    assert "unlocked capt.alvarez" in result.output
    [rec] = AccessRecord.select().where(AccessRecord.action == "user.unlock")
    assert (rec.username, rec.client_addr) == (audit.SYSTEM, "cli:jtech")  # the system, naming the OS user
    details = json.loads(rec.details)
    assert details["username"] == "capt.alvarez" and "was_locked_until" in details
    # unlocked: the right password works again, from the address that failed too
    users.authenticate(settings, "capt.alvarez", OPERATOR_PASSWORD, "10.0.0.5")
    assert audit.verify().ok

    again = CliRunner().invoke(main, ["user", "unlock", "capt.alvarez"], env=_env(settings))
    assert again.exit_code == 1 and "is not locked" in again.output
    nobody = CliRunner().invoke(main, ["user", "unlock", "no.such"], env=_env(settings))
    assert nobody.exit_code == 1 and "no account named 'no.such'" in nobody.output
    shown = CliRunner().invoke(main, ["user", "unlock", "--help"], env=_env(settings)).output
    assert "Needs no named account" in shown and "root" in shown


def test_a_lock_holds_for_the_cli_whoever_runs_it(settings, db):
    """The CLI keeps no memory of failed sign-ins between commands (each is a process of its own),
    so it cannot tell an operating-system user that has not failed: a locked account is refused
    there until the lock runs out, an administrator resets it, or root unlocks it."""
    named = operator_env(settings, "sgt.ortiz", "officer")
    _lock(settings, "sgt.ortiz")  # from the network, not from this OS user
    result = CliRunner().invoke(main, ["hold", "list", "--case", "AUD-2026-1"], env=_env(settings, **named))
    assert result.exit_code == 1 and users.REFUSED in result.output
    reasons = [
        json.loads(r.details)["reason"] for r in AccessRecord.select().where(AccessRecord.action == "auth.login_failed")
    ]
    assert reasons[-1] == "locked"
