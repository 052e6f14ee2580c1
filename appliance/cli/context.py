"""What every `waypost` command shares: the configuration and database it works on (Context),
who it runs as, and the parsing of dates and times given on the command line.

Who it runs as. A command that shows or changes plate data, hotlists, sharing, holds, accounts or
the access log is run by a named person, as a page is: `waypost --as USERNAME ...` (or
WAYPOST_OPERATOR), checked like a sign-in at the web UI (the password, the lock-out, an active
account whose role allows the command, current training for plate data), with the password asked
on the terminal or, for a script, read from the file WAYPOST_OPERATOR_PASSWORD_FILE names (mode
0600). The access record names that account, and the operating-system user apart from it
(client_addr "cli:<os user>"). Each command declares it: @runs_as(permission) for those, or
@unattended(why) for the jobs a timer or a technician runs with no person's data in them (they
are recorded as the system); tests/appliance/test_cli_operator.py fails on a command that
declares neither.
"""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import os
import stat
import sys
from pathlib import Path

import click
from peewee import OperationalError

from appliance import audit, config, db, users
from appliance.bootstrap import bootstrap
from appliance.clock import local_text
from appliance.hotlist import HotlistError
from appliance.models import User
from appliance.roles import PLATE_DATA, ROLES, allowed, permissions

OPERATOR_ENV = "WAYPOST_OPERATOR"
PASSWORD_FILE_ENV = "WAYPOST_OPERATOR_PASSWORD_FILE"
NO_OPERATOR = 2  # the exit status of a command that needs a named operator and was given none


def runs_as(permission: str):
    """Declare that a command is run by a named account holding `permission` (appliance/roles.py).
    Put it above the @group.command(...) line."""

    def declare(command: click.Command) -> click.Command:
        command.permission = permission  # type: ignore[attr-defined]  # read by Context.actor()
        body = command.callback
        assert body is not None

        @functools.wraps(body)
        def signed_in_first(*args, **kwargs):
            # who runs it is settled before the command reads or changes anything
            click.get_current_context().find_object(Context).actor()
            return body(*args, **kwargs)

        command.callback = signed_in_first
        command.help = (command.help or "") + (
            f"\n\nRuns as a named account with the {permission!r} permission: waypost --as USERNAME ..."
        )
        return command

    return declare


def unattended(why: str):
    """Declare that a command runs as the system, with the reason (an unattended job, or nothing a
    person must answer for: a key, a benchmark, a check of a file). Put it above @group.command."""

    def declare(command: click.Command) -> click.Command:
        command.permission = None  # type: ignore[attr-defined]
        command.unattended = why  # type: ignore[attr-defined]
        command.help = (command.help or "") + f"\n\nNeeds no named account ({why}); recorded, if at all, as the system."
        return command

    return declare


class OperatorRefused(click.ClickException):
    """The named account may not run this command (sign-in refused, role, training)."""


class Context:
    def __init__(self, config_path, operator: str | None = None):
        self.config_path = config_path
        self.operator_name = (operator or "").strip().lower() or None
        self._settings: config.Settings | None = None
        self._operator: audit.Actor | None = None
        self._user: User | None = None

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            try:
                self._settings = config.load(self.config_path)
            except config.ConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._settings

    def open(self):
        """Open the database, refusing to work on one whose schema is behind the code."""
        s = self.settings
        if not s.db_path.exists():
            raise click.ClickException(f"no database at {s.db_path}: run `waypost init` first")
        database = db.open_database(s)
        with db.connection():
            todo = db.pending(database)
        if todo:
            raise click.ClickException(f"the database needs {len(todo)} migration(s): run `waypost db migrate`")
        return database

    def run(self, action, *args, **kwargs):
        """Open the database, run one domain action, and turn its refusal into a clean CLI error."""
        self.open()
        with db.connection():
            try:
                return action(*args, **kwargs)
            except (users.UserError, HotlistError) as exc:
                raise click.ClickException(str(exc)) from exc

    def actor(self) -> audit.Actor:
        """Who the running command's access records name: the named operator, signed in now (once
        per command) and checked against the command's declared permission, or the system for an
        @unattended command."""
        current = click.get_current_context()
        command = current.command
        name = " ".join(current.command_path.split()[1:])  # "hold place", without the program's name
        if not hasattr(command, "permission"):
            raise RuntimeError(f"`{name}` declares neither @runs_as(...) nor @unattended(...)")
        permission = command.permission
        if permission is None:
            return audit.system_actor(self.settings)
        if self._operator is None:
            self._operator = self._sign_in(name, permission)
        return self._operator

    def purpose(self, code: str | None, case_number: str | None) -> audit.Purpose:
        """The stated purpose, checked as the pages check it (a placeholder case like "N/A" is refused)."""
        try:
            return audit.check_purpose(self.settings, code, case_number)
        except audit.PurposeError as exc:
            raise click.BadParameter(str(exc), param_hint="--purpose/--case") from None

    def _sign_in(self, command: str, permission: str) -> audit.Actor:
        if not self.settings.db_path.exists():
            raise click.ClickException(f"no database at {self.settings.db_path}: run `waypost init` first")
        if not self.operator_name:
            raise click.UsageError(
                f"`{command}` shows or changes data a person must answer for, so it runs as a named account: "
                f"`waypost --as USERNAME {command} ...` (or {OPERATOR_ENV}=USERNAME). The password is asked on "
                f"the terminal, or read from the file {PASSWORD_FILE_ENV} names (mode 0600) for a script."
            )
        password = _operator_password(self.operator_name)
        os_user = getpass.getuser()
        db.open_database(self.settings)
        with db.connection():
            try:
                user = users.authenticate(self.settings, self.operator_name, password, f"cli:{os_user}")
            except users.SignInRefused as exc:
                raise OperatorRefused(f"{self.operator_name}: {exc}") from None
            _check_may(user, command, permission)
        self._user = user
        return audit.Actor(user.username, user.organization, f"cli:{os_user}")

    def require(self, permission: str) -> None:
        """A second permission a command needs for one of its forms (`evidence export --request`
        needs sharing.approve on top of the command's own), checked on the signed-in account."""
        self.actor()
        name = " ".join(click.get_current_context().command_path.split()[1:])
        with db.connection():
            assert self._user is not None  # set by the sign-in above
            user = User.get_by_id(self._user.id)
            _check_may(user, name, permission)


pass_ctx = click.make_pass_decorator(Context)


def _operator_password(username: str) -> str:
    named = os.environ.get(PASSWORD_FILE_ENV)
    if named:
        path = Path(named)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"{PASSWORD_FILE_ENV}={named}: {exc.strerror or exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise click.ClickException(
                f"{PASSWORD_FILE_ENV}={named} may be read by other users (mode {stat.filemode(mode)}): "
                f"`chmod 600 {named}` first"
            )
        return text.rstrip("\r\n")
    if not _terminal():
        raise click.UsageError(
            f"no terminal to ask {username}'s password on: set {PASSWORD_FILE_ENV} to a file (mode 0600) that holds it"
        )
    return getpass.getpass(f"password for {username}: ")


def _terminal() -> bool:
    return sys.stdin.isatty()


def _check_may(user: User, command: str, permission: str) -> None:
    """The same rule as a page's @requires: active, the role allows it, current training for plate data."""
    if user.must_change_password:
        raise OperatorRefused(
            f"{user.username} still has a one-time password: sign in at the web UI once to choose your own"
        )
    if allowed(user, permission):
        return
    role = ROLES.get(user.role, {}).get("label", user.role)
    if permission in permissions(user.role) and permission in PLATE_DATA:
        raise OperatorRefused(
            f"{user.username} has no current ALPR training on record, which `{command}` needs "
            "(the ALPR administrator records it: `waypost user set-training`)"
        )
    raise OperatorRefused(f"{user.username} ({role}) may not run `{command}`: it needs the {permission!r} permission")


def local_time(value, settings: config.Settings, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """A stored instant (naive UTC, or ISO-8601 text) in post.timezone with the zone's
    abbreviation, converted as the pages convert it: '2026-11-29 08:53 PST'."""
    return local_text(value, settings, fmt)


def entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def parse_date(value: str | None, name: str):
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name) from None


def parse_period(start, end):
    first = parse_date(start, "--from")
    last = parse_date(end, "--to")
    if first and last and last < first:
        raise click.BadParameter(f"{end} is before --from {start}", param_hint="--to")
    lo = dt.datetime.combine(first, dt.time()) if first else None
    hi = dt.datetime.combine(last + dt.timedelta(days=1), dt.time()) if last else None
    return lo, hi


def report_bootstrap(result) -> None:
    for line in result.migrations:
        click.echo(line)
    rec = result.recovered
    if rec["rolled_forward"] or rec["removed"]:
        click.echo(
            f"settled an interrupted write: moved {rec['rolled_forward']} committed evidence file(s) "
            f"into place, removed {rec['removed']} uncommitted one(s)"
        )
    if result.admin_password:
        click.echo("")
        click.echo("Created the first administrator account.")
        click.echo("  username: admin")
        click.echo(f"  password: {result.admin_password}")
        click.echo("This password is shown once. Sign in and change it.")
        click.echo("")


def bootstrap_or_fail(settings, create_admin: bool = True):
    try:
        return bootstrap(settings, create_admin=create_admin)
    except (users.UserError, db.MigrationError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # a data directory that is a file, read-only, on a full disk...
        raise click.ClickException(
            f"cannot use {exc.filename or settings.data_dir}: {exc.strerror or exc} "
            f"(the data directory is storage.data_dir = {settings.data_dir})"
        ) from None
    except OperationalError as exc:
        raise click.ClickException(
            f"cannot open the database {settings.db_path}: {exc} (check that storage.data_dir = "
            f"{settings.data_dir} is a directory this user may write)"
        ) from None


def parse_when(value: str | None, name: str, end: bool = False) -> dt.datetime | None:
    """A time read as UTC (naive UTC out, as stored), or in the offset it carries
    (2026-11-20T08:00-08:00). A bare date is the start of that day, or with `end` (a --to) the
    whole of it: --from 2026-11-20 --to 2026-11-20 is that day."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)", param_hint=name
        ) from None
    if end and len(value.strip()) == 10:
        when += dt.timedelta(days=1, microseconds=-1)
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


WINDOW_HELP = (
    "YYYY-MM-DD or YYYY-MM-DDTHH:MM, read as UTC, not in post.timezone (or give an offset: 2026-03-01T00:00-08:00)"
)


def sync_off(settings) -> bool:
    """No way for headquarters to get this post's data: no push (sync.enabled, or a
    sync.hq_url to push to by hand) and no pull (sync.hq_public_key)."""
    sync = settings.sync
    return not (sync.enabled or sync.hq_url or sync.hq_public_key)


SYNC_OFF = "sync is off on this post: headquarters does not get it"


def stated_purpose(default_code: str):
    """--purpose and --case: the statutory purpose (Civil Code 1798.90.52) of a command that shows
    plate data or the access log, recorded with it; `default_code` is the usual one (AUDIT,
    SHARING), which must still be given with a reference to file the work under."""

    def add(command):
        for option in reversed(
            (
                click.option(
                    "--purpose",
                    "purpose_code",
                    default=default_code,
                    show_default=True,
                    help="Purpose code (audit.purposes).",
                ),
                click.option(
                    "--case",
                    "case_number",
                    required=True,
                    help="Case, incident or audit reference the work is filed under (e.g. AUD-2026-Q3).",
                ),
            )
        ):
            command = option(command)
        return command

    return add


def filed_under(command):
    """The options every hold is placed with, at a post and at headquarters: --purpose, --case, --reason."""
    for option in reversed(
        (
            click.option("--purpose", "purpose_code", required=True, help="Purpose code, e.g. CRIME-INV."),
            click.option(
                "--case", "case_number", required=True, help="Case or incident number the hold is filed under."
            ),
            click.option("--reason", required=True, help="What the data is or may be evidence of."),
        )
    ):
        command = option(command)
    return command
