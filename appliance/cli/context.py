"""What every `waypost` command shares: the configuration and database it works on (Context),
who it runs as, and the parsing of dates and times given on the command line."""

from __future__ import annotations

import datetime as dt
import getpass

import click
from peewee import OperationalError

from appliance import audit, config, db, users
from appliance.bootstrap import bootstrap
from appliance.clock import local_text
from appliance.hotlist import HotlistError


class Context:
    def __init__(self, config_path):
        self.config_path = config_path
        self._settings = None

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
        """Commands are run by someone with a shell on the post; record who."""
        return audit.Actor(f"cli:{getpass.getuser()}", self.settings.post.agency, "local")


pass_ctx = click.make_pass_decorator(Context)


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


def bootstrap_or_fail(settings):
    try:
        return bootstrap(settings)
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
