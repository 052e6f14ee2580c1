"""Commands name the person who runs them (Civil Code 1798.90.52: every access names its user).

A command that shows or changes plate data, hotlists, sharing, holds, accounts or the access log
runs as a named account (`waypost --as USERNAME`, or WAYPOST_OPERATOR), checked like a sign-in at
the web UI; its access records name that account and, apart from it, the operating-system user.
Unattended jobs run as the system and say so. Real database file, the real command (CliRunner).
"""

from __future__ import annotations

import getpass
import json
import os

import click
import pytest
from click.testing import CliRunner

from appliance import db as dbmod
from appliance import users
from appliance.audit import system_actor
from appliance.cli import COMMANDS, context, main
from appliance.cli.context import OPERATOR_ENV, PASSWORD_FILE_ENV
from appliance.models import AccessRecord, User
from tests.conftest import OPERATOR_PASSWORD, operator_env


def leaf_commands() -> list[tuple[str, click.Command]]:
    """Every command a person can run, by its path ("hold place")."""
    out = []

    def walk(path: str, command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(f"{path} {name}", sub)
        else:
            out.append((path, command))

    ctx = click.Context(main)
    for name in COMMANDS:
        walk(name, main.get_command(ctx, name))
    return out


def test_every_command_declares_who_runs_it():
    """As every route declares its permission (tests/web/test_routes.py), every command declares
    @runs_as(permission) or @unattended(why): a new command cannot ship unaccountable."""
    found = leaf_commands()
    assert len(found) >= 45
    undeclared = [path for path, command in found if not hasattr(command, "permission")]
    assert not undeclared, f"commands without @runs_as or @unattended: {undeclared}"
    named = {path for path, command in found if command.permission}
    # the auditor's list: these were recorded as cli:root
    for path in ("hold list", "hold place", "audit export", "report quarterly", "user add"):
        assert path in named, path


def test_a_command_without_a_declaration_is_caught(settings, db):
    @main.command("undeclared-probe")
    @click.pass_obj
    def probe(ctx):
        ctx.actor()

    try:
        result = CliRunner().invoke(main, ["undeclared-probe"], env=_env(settings))
        assert isinstance(result.exception, RuntimeError) and "declares neither" in str(result.exception)
    finally:
        main.commands.pop("undeclared-probe")


def _env(settings, **extra) -> dict:
    return {
        "WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
        OPERATOR_ENV: "",
        PASSWORD_FILE_ENV: "",
        **extra,
    }


def _records(action: str) -> list[AccessRecord]:
    return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def test_without_a_named_operator_the_command_says_how_to_name_one(settings, db):
    result = CliRunner().invoke(main, ["hold", "list", "--case", "AUD-2026-1"], env=_env(settings))
    assert result.exit_code == 2, result.output
    assert "waypost --as USERNAME hold list" in result.output and PASSWORD_FILE_ENV in result.output
    assert _records("hold.list") == []


def test_the_record_names_the_account_and_the_operating_system_user(settings, db):
    named = operator_env(settings, "sgt.ortiz", "officer")
    result = CliRunner().invoke(main, ["hold", "list", "--case", "AUD-2026-1"], env=_env(settings, **named))
    assert result.exit_code == 0, result.output
    [rec] = _records("hold.list")
    assert (rec.username, rec.organization) == ("sgt.ortiz", settings.post.agency)
    assert rec.client_addr == f"cli:{getpass.getuser()}"
    assert (rec.purpose_code, rec.case_number) == ("AUDIT", "AUD-2026-1")
    [login] = _records("auth.login")
    assert (login.username, login.client_addr) == ("sgt.ortiz", f"cli:{getpass.getuser()}")


def test_the_operator_as_an_option_and_the_password_on_a_terminal(settings, db, monkeypatch):
    operator_env(settings, "sgt.ortiz", "officer")
    monkeypatch.setattr(context, "_terminal", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: OPERATOR_PASSWORD)
    result = CliRunner().invoke(main, ["--as", "sgt.ortiz", "hold", "list", "--case", "AUD-2026-1"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert _records("hold.list")[0].username == "sgt.ortiz"


@pytest.mark.parametrize(
    "role, trained, refusal",
    [
        ("dispatcher", True, "dispatcher.x (Dispatcher) may not run `hold list`: it needs the 'holds.request'"),
        ("officer", False, "has no current ALPR training on record"),
    ],
)
def test_the_account_must_be_allowed_as_at_the_web_ui(settings, db, role, trained, refusal):
    named = operator_env(settings, f"{role}.x", role, trained=trained)
    result = CliRunner().invoke(main, ["hold", "list", "--case", "AUD-2026-1"], env=_env(settings, **named))
    assert result.exit_code == 1 and refusal in result.output, result.output
    assert _records("hold.list") == []


def test_a_wrong_password_counts_towards_the_lock_out_and_a_locked_account_is_refused(settings, db, tmp_path):
    named = operator_env(settings, "sgt.ortiz", "officer")
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password at all\n")
    os.chmod(wrong, 0o600)
    env = _env(settings, **{**named, PASSWORD_FILE_ENV: str(wrong)})
    for _ in range(settings.web.failed_logins_before_lockout):
        result = CliRunner().invoke(main, ["hold", "list", "--case", "AUD-2026-1"], env=env)
        assert result.exit_code == 1 and "sgt.ortiz:" in result.output, result.output
    failed = _records("auth.login_failed")
    assert len(failed) == settings.web.failed_logins_before_lockout and {r.client_addr for r in failed} == {
        f"cli:{getpass.getuser()}"
    }
    assert User.get(User.username == "sgt.ortiz").locked_until is not None
    # the right password no longer opens a locked account
    result = CliRunner().invoke(main, ["hold", "list", "--case", "AUD-2026-1"], env=_env(settings, **named))
    assert result.exit_code == 1 and _records("hold.list") == []


def test_a_password_file_others_may_read_is_refused(settings, db):
    named = operator_env(settings, "sgt.ortiz", "officer")
    os.chmod(named[PASSWORD_FILE_ENV], 0o644)
    result = CliRunner().invoke(main, ["hold", "list", "--case", "AUD-2026-1"], env=_env(settings, **named))
    assert result.exit_code == 1 and "chmod 600" in result.output
    assert _records("auth.login") == []


def test_a_one_time_password_must_be_changed_first(settings, db):
    named = operator_env(settings, "sgt.ortiz", "officer")
    with dbmod.write():
        User.update(must_change_password=True).where(User.username == "sgt.ortiz").execute()
    result = CliRunner().invoke(main, ["hold", "list", "--case", "AUD-2026-1"], env=_env(settings, **named))
    assert result.exit_code == 1 and "one-time password" in result.output


def test_a_placeholder_case_is_refused_before_anything_is_shown(settings, db):
    named = operator_env(settings, "sgt.ortiz", "officer")
    result = CliRunner().invoke(main, ["hold", "list", "--case", "N/A"], env=_env(settings, **named))
    assert result.exit_code == 2 and "not a case or incident number" in result.output
    assert _records("hold.list") == []


def test_unattended_jobs_run_as_the_system_and_say_so(settings, db):
    result = CliRunner().invoke(main, ["retention", "run"], env=_env(settings))
    assert result.exit_code == 0 and "recorded as the system" in result.output, result.output
    [rec] = _records("retention.purge")
    assert rec.username == "system"
    shown = CliRunner().invoke(main, ["retention", "run", "--help"], env=_env(settings)).output
    assert "Needs no named account" in shown


def test_accounts_are_managed_by_a_named_administrator(settings, db):
    named = operator_env(settings, "capt.alvarez", "admin", trained=False)  # account work needs no ALPR training
    env = _env(settings, **named)
    result = CliRunner().invoke(main, ["user", "add", "jlee", "--role", "officer", "--name", "Jamie Lee"], env=env)
    assert result.exit_code == 0, result.output
    [rec] = _records("user.add")[-1:]
    assert rec.username == "capt.alvarez" and json.loads(rec.details)["username"] == "jlee"
    officer = operator_env(settings, "sgt.ortiz", "officer")
    refused = CliRunner().invoke(main, ["user", "disable", "jlee"], env=_env(settings, **officer))
    assert refused.exit_code == 1 and "needs the 'accounts.manage' permission" in refused.output
    operator_env(settings, "capt.other", "admin")  # the last active administrator cannot be deactivated
    users.set_active(system_actor(settings), "capt.alvarez", False)
    gone = CliRunner().invoke(main, ["user", "disable", "jlee"], env=env)
    assert gone.exit_code == 1 and "deactivated" in gone.output
