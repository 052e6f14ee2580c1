"""`waypost`: the one command for every operational action."""
from __future__ import annotations

import csv
import datetime as dt
import getpass
import importlib
import json
import logging
import sys
from pathlib import Path

import click

from appliance import audit, config, db, users
from appliance.cli.types import ROW_ID
from appliance.roles import ROLES


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
                raise click.ClickException(str(exc))
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
        from appliance.hotlist import HotlistError
        self.open()
        with db.connection():
            try:
                return action(*args, **kwargs)
            except (users.UserError, HotlistError) as exc:
                raise click.ClickException(str(exc))

    def actor(self) -> audit.Actor:
        """Commands are run by someone with a shell on the post; record who."""
        return audit.Actor(f"cli:{getpass.getuser()}", self.settings.post.agency, "local")


pass_ctx = click.make_pass_decorator(Context)


def local_time(value, settings: config.Settings, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """A stored instant (naive UTC, or ISO-8601 text) in post.timezone with the zone's
    abbreviation, converted as the pages convert it: '2026-11-29 08:53 PST'."""
    from web.clock import to_local, zone_of     # (imports Flask: only when a command shows a time)
    return to_local(value, zone_of(settings)).strftime(fmt)


def entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


LAZY_COMMANDS = {"eval": ("recognizer.cli", "eval_command"), "recognize": ("recognizer.cli", "recognize_command")}


class _Main(click.Group):
    """The `waypost` group. The recognizer's commands are imported only when one of them is named
    (or the command list is shown): their package loads numpy and OpenCV, some 60 MB of memory that
    `waypost sync push` and the other commands do not need."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | {n for n in LAZY_COMMANDS if self.get_command(ctx, n)})

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module_name, attr = LAZY_COMMANDS[cmd_name]
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                return None      # the recognizer commands are not built yet
            command = getattr(module, attr)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=_Main)
@click.version_option(package_name="waypost", prog_name="waypost")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar=config.CONFIG_ENV, default=None,
              help="TOML configuration file (default: $WAYPOST_CONFIG, else ./waypost.toml if present, else built-in defaults).")
@click.pass_context
def main(ctx, config_path):
    """Waypost: an offline-first licence plate reader post."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Context(config_path or config.default_config_path())


def _report_bootstrap(result) -> None:
    for line in result.migrations:
        click.echo(line)
    rec = result.recovered
    if rec["rolled_forward"] or rec["removed"]:
        click.echo(f"settled an interrupted write: moved {rec['rolled_forward']} committed evidence file(s) "
                   f"into place, removed {rec['removed']} uncommitted one(s)")
    if result.admin_password:
        click.echo("")
        click.echo("Created the first administrator account.")
        click.echo("  username: admin")
        click.echo(f"  password: {result.admin_password}")
        click.echo("This password is shown once. Sign in and change it.")
        click.echo("")


def _bootstrap(settings):
    from peewee import OperationalError

    from appliance.service import bootstrap
    try:
        return bootstrap(settings)
    except (users.UserError, db.MigrationError) as exc:
        raise click.ClickException(str(exc))
    except OSError as exc:          # a data directory that is a file, read-only, on a full disk...
        raise click.ClickException(
            f"cannot use {exc.filename or settings.data_dir}: {exc.strerror or exc} "
            f"(the data directory is storage.data_dir = {settings.data_dir})") from None
    except OperationalError as exc:
        raise click.ClickException(
            f"cannot open the database {settings.db_path}: {exc} (check that storage.data_dir = "
            f"{settings.data_dir} is a directory this user may write)") from None


@main.command()
@pass_ctx
def init(ctx):
    """Create the data directory and database, apply migrations, create a first administrator."""
    _report_bootstrap(_bootstrap(ctx.settings))
    click.echo(f"database ready at {ctx.settings.db_path}")


@main.command()
@pass_ctx
def run(ctx):
    """Start the post: everything `init` does, then the web UI (and, later, capture and sync)."""
    from appliance.service import ListenError, listen, serve
    s = ctx.settings
    try:        # before bootstrap: a port in use must stop the start before anything is recorded
        sock = listen(s.web.host, s.web.port)
    except ListenError as exc:
        raise click.ClickException(str(exc)) from None
    _report_bootstrap(_bootstrap(s))
    click.echo(f"Waypost post {s.post.id} on http://{s.web.host}:{sock.getsockname()[1]}  (Ctrl-C stops)")
    serve(s, sock=sock)


# --- config ---------------------------------------------------------------------------------

@main.group(name="config")
def config_group():
    """Check and document the configuration."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def config_check(ctx, file):
    """Validate FILE (default: the active configuration) with environment overrides; list every problem."""
    path = file or ctx.config_path
    try:
        config.load(path)
    except config.ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"configuration OK ({path or 'built-in defaults'})")


@config_group.command("docs")
def config_docs():
    """Print the table of every configuration key (the README's table)."""
    click.echo(config.docs_markdown(), nl=False)


# --- users ----------------------------------------------------------------------------------

@main.group()
def user():
    """Manage accounts."""


def _date(value: str | None, name: str):
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name)


@user.command("add")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(sorted(ROLES)), help="What the account may do.")
@click.option("--name", "display_name", default="", help="Full name shown in the UI and records.")
@click.option("--org", "organization", default=None, help="Organization (default: the post's agency).")
@click.option("--job-title", default="", help="Job title, e.g. Sergeant.")
@click.option("--password-stdin", is_flag=True, help="Read the initial password from standard input.")
@pass_ctx
def user_add(ctx, username, role, display_name, organization, job_title, password_stdin):
    """Create an account. Without --password-stdin a password is generated and shown once; the
    person must change it at first sign-in either way."""
    ctx.open()
    s = ctx.settings
    password = sys.stdin.readline().rstrip("\n") if password_stdin else users.generate_password()
    with db.connection():
        try:
            users.add(ctx.actor(), username=username, display_name=display_name,
                      organization=organization or s.post.agency, role=role, password=password,
                      job_title=job_title, min_password_length=s.web.min_password_length)
        except users.UserError as exc:
            raise click.ClickException(str(exc))
    click.echo(f"created {role} account {username}")
    if not password_stdin:
        click.echo(f"temporary password (shown once): {password}")


@user.command("list")
@pass_ctx
def user_list(ctx):
    """List accounts with role, state and training."""
    from appliance.models import User
    ctx.open()
    with db.connection():
        rows = list(User.select().order_by(User.username))
    click.echo(f"{'username':<20} {'role':<11} {'active':<7} {'training':<24} last sign-in")
    for u in rows:
        training = ("current" if u.training_current() else "NOT CURRENT")
        if u.training_expires_on:
            training += f" (to {u.training_expires_on})"
        last = local_time(u.last_login_at, ctx.settings) if u.last_login_at else "never"
        click.echo(f"{u.username:<20} {u.role:<11} {'yes' if u.active else 'no':<7} {training:<24} {last}")


@user.command("disable")
@click.argument("username")
@pass_ctx
def user_disable(ctx, username):
    """Deactivate an account (it can no longer sign in)."""
    ctx.run(users.set_active, ctx.actor(), username, False)
    click.echo(f"disabled {username}")


@user.command("enable")
@click.argument("username")
@pass_ctx
def user_enable(ctx, username):
    """Reactivate an account."""
    ctx.run(users.set_active, ctx.actor(), username, True)
    click.echo(f"enabled {username}")


@user.command("set-training")
@click.argument("username")
@click.option("--completed", required=True, help="Date the ALPR training was completed (YYYY-MM-DD).")
@click.option("--course", required=True, help="Name of the course, as in the training record.")
@click.option("--expires", default=None, help="Date the training expires (default: one year after completion).")
@pass_ctx
def user_set_training(ctx, username, completed, course, expires):
    """Record an account's ALPR training. Accounts without current training cannot reach plate data."""
    done = _date(completed, "--completed")
    until = _date(expires, "--expires")
    if until is None:
        try:
            until = done.replace(year=done.year + 1)
        except ValueError:  # 29 February
            until = done + dt.timedelta(days=365)
    ctx.run(users.set_training, ctx.actor(), username, done, course, until)
    click.echo(f"training recorded for {username}: {course}, completed {done}, expires {until}")


@user.command("reset-password")
@click.argument("username")
@pass_ctx
def user_reset_password(ctx, username):
    """Give an account a new temporary password (shown once) and unlock it."""
    password = users.generate_password()
    ctx.run(users.set_password, ctx.actor(), username, password, ctx.settings.web.min_password_length,
            must_change=True)
    click.echo(f"temporary password for {username} (shown once): {password}")


# --- audit ----------------------------------------------------------------------------------

@main.group(name="audit")
def audit_group():
    """Verify and export the hash-chained access log."""


@audit_group.command("verify")
@click.option("--head", "head_text", default=None, help="A head saved earlier ('SEQ HASH') to detect truncation or rewriting.")
@click.option("--head-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file holding a saved head.")
@click.option("--bundle", "bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Check a signed bundle file offline instead of this post's log (no database needed).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --bundle: the post's public key (PEM, e.g. the post_key.pub file) the bundle must be signed with.")
@pass_ctx
def audit_verify(ctx, head_text, head_file, bundle_file, public_key):
    """Walk the chain; exit 1 naming the first broken record. With --bundle, check a signed bundle:
    its signature, every record's hash and the chain inside it."""
    if bundle_file:
        _verify_bundle(bundle_file, public_key)
        return
    if public_key:
        raise click.BadParameter("only with --bundle", param_hint="--public-key")
    ctx.open()
    expected = None
    try:
        if head_file:
            head_text = head_file.read_text()
        if head_text:
            expected = audit.parse_head(head_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--head")
    with db.connection():
        result = audit.verify(expected)
    click.echo(result.summary())
    for note in result.notes:
        click.echo(note)
    sys.exit(0 if result.ok else 1)


@audit_group.command("head")
@pass_ctx
def audit_head(ctx):
    """Print the last record's 'SEQ HASH', to keep somewhere else for `verify --head`."""
    ctx.open()
    with db.connection():
        seq, digest = audit.head()
    click.echo(f"{seq} {digest}")


@audit_group.command("export")
@click.option("--from", "start", default=None, help="First day (YYYY-MM-DD, UTC), inclusive.")
@click.option("--to", "end", default=None, help="Last day (YYYY-MM-DD, UTC), inclusive.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_ctx
def audit_export(ctx, start, end, fmt, out):
    """Export access records of a period. The export itself is recorded."""
    ctx.open()
    first = _date(start, "--from")
    last = _date(end, "--to")
    lo = dt.datetime.combine(first, dt.time()) if first else None
    hi = dt.datetime.combine(last + dt.timedelta(days=1), dt.time()) if last else None
    count = 0
    with db.connection():
        with db.write():
            tmp = out.with_name(out.name + ".part")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                if fmt == "csv":
                    writer = csv.DictWriter(f, fieldnames=audit.COLUMNS)
                    writer.writeheader()
                for row in audit.export_rows(lo, hi):
                    if fmt == "csv":
                        writer.writerow(row)
                    else:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    count += 1
            tmp.replace(out)
            audit.record("audit.export", ctx.actor(), result_count=count,
                         query={"from": start, "to": end}, details={"format": fmt, "file": out.name})
    click.echo(f"exported {count} access records to {out}")


def _verify_bundle(path: Path, public_key: Path | None) -> None:
    from appliance import bundle
    key = None
    if public_key:
        try:
            key = bundle.load_public_key(public_key.read_bytes(), str(public_key))
        except bundle.BundleError as exc:
            raise click.BadParameter(str(exc), param_hint="--public-key")
    result = bundle.verify(path.read_bytes(), key)
    click.echo(result.summary())
    if result.ok and key is None:
        click.echo("no --public-key given: the signature only shows the bundle is intact; check that key id "
                   f"{result.key_id} is the post's (`waypost audit key` on the post).")
    sys.exit(0 if result.ok else 1)


def _period(start, end):
    first = _date(start, "--from")
    last = _date(end, "--to")
    if first and last and last < first:
        raise click.BadParameter(f"{end} is before --from {start}", param_hint="--to")
    lo = dt.datetime.combine(first, dt.time()) if first else None
    hi = dt.datetime.combine(last + dt.timedelta(days=1), dt.time()) if last else None
    return lo, hi


@audit_group.command("bundle")
@click.option("--from", "start", default=None, help="First day (YYYY-MM-DD, UTC), inclusive.")
@click.option("--to", "end", default=None, help="Last day (YYYY-MM-DD, UTC), inclusive.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_ctx
def audit_bundle(ctx, start, end, out):
    """Export the records of a period as a JSON bundle signed with the post's Ed25519 key, for
    `waypost audit verify --bundle FILE --public-key post_key.pub` anywhere. The export is recorded."""
    from appliance import bundle
    lo, hi = _period(start, end)
    ctx.open()
    with db.connection():
        try:
            made = bundle.write_bundle(ctx.settings, out, ctx.actor(), lo, hi)
        except bundle.BundleError as exc:
            raise click.ClickException(str(exc))
    span = f"records {made.first_seq}..{made.last_seq}" if made.count else "no records"
    click.echo(f"wrote {made.count} access records ({span}) to {out}, signed by key {made.key_id}")
    click.echo(f"public key: {bundle.public_key_file(ctx.settings)}")


@audit_group.command("key")
@pass_ctx
def audit_key(ctx):
    """Print the post's public key (PEM) and its key id; the key is made on first use."""
    from appliance import bundle
    try:
        key = bundle.post_key(ctx.settings).public_key()
    except bundle.BundleError as exc:
        raise click.ClickException(str(exc))
    click.echo(bundle.public_pem(key).decode(), nl=False)
    click.echo(f"key id {bundle.key_id(key)}  ({bundle.public_key_file(ctx.settings)})")


# --- reports --------------------------------------------------------------------------------

@main.group(name="report")
def report_group():
    """The quarterly audit and the annual report (the same figures as the web pages)."""


def _report(ctx, kind, label, fmt, out):
    from appliance import reports
    ctx.open()
    with db.connection():
        try:
            report = reports.quarterly(ctx.settings, label) if kind == "quarterly" else reports.annual(ctx.settings, label)
        except reports.ReportError as exc:
            raise click.BadParameter(str(exc), param_hint="PERIOD")
        with db.write():
            reports.record_viewed(ctx.actor(), report, "cli")
    text = json.dumps(reports.as_dict(report), indent=2, ensure_ascii=False) if fmt == "json" else reports.as_text(report)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote the {kind} report for {report.period.label} to {out}")
    else:
        click.echo(text)
    if not report.chain.ok:
        sys.exit(1)


@report_group.command("quarterly")
@click.argument("period", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@pass_ctx
def report_quarterly(ctx, period, fmt, out):
    """The quarterly audit for PERIOD (YEAR-QN, e.g. 2025-Q1; default: the last full quarter).
    Exits 1 when the access log's chain is broken."""
    from appliance import reports
    _report(ctx, "quarterly", period or reports.previous_quarter(ctx.settings.post.timezone), fmt, out)


@report_group.command("annual")
@click.argument("year", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@pass_ctx
def report_annual(ctx, year, fmt, out):
    """The annual report to the chief for YEAR (default: last year)."""
    _report(ctx, "annual", year or str(dt.date.today().year - 1), fmt, out)


# --- hotlists -------------------------------------------------------------------------------

@main.group(name="hotlist")
def hotlist_group():
    """Import and maintain hotlists."""


@hotlist_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--list", "name", required=True, help="The list this file replaces, e.g. SVS or NCIC.")
@pass_ctx
def hotlist_import(ctx, file, name):
    """Replace a state list with FILE (CSV). Any malformed line stops the import; nothing changes."""
    from appliance import hotlist
    ctx.open()
    with db.connection():
        try:
            result = hotlist.import_csv(ctx.settings, file, name, ctx.actor())
        except hotlist.HotlistError as exc:
            raise click.ClickException(f"nothing imported:\n{exc}")
    click.echo(f"{result.hotlist}: {entries(result.entries)} imported, {result.replaced} replaced")


@hotlist_group.command("list")
@pass_ctx
def hotlist_list(ctx):
    """Lists with their size and, for state lists, when they were refreshed and whether they are
    fresh (custom entries are added by hand, not refreshed from a source)."""
    from appliance import hotlist
    ctx.open()
    with db.connection():
        rows = hotlist.status(ctx.settings)
    for h in rows:
        if h["kind"] != "state":
            state = "custom: not refreshed from a source"
        else:
            when = local_time(h["refreshed_at"], ctx.settings) if h["refreshed_at"] else "never"
            state = f"refreshed {when}  " + ("STALE: produces no alerts" if h["stale"] else "fresh")
        click.echo(f"{h['name']:<12} {h['kind']:<7} {entries(h['entries']):>14}  {state}")


@hotlist_group.command("add")
@click.argument("plate")
@click.option("--reason", required=True)
@click.option("--approved-by", required=True, help="The commander who approved the entry.")
@click.option("--narrative", required=True, help="Case and reason for the entry.")
@click.option("--state", default="")
@pass_ctx
def hotlist_add(ctx, plate, reason, approved_by, narrative, state):
    """Add a custom entry; PLATE may be partial with * and ?."""
    from appliance import hotlist
    entry = ctx.run(hotlist.add_custom, ctx.actor(), plate, reason, approved_by, narrative, state)
    click.echo(f"custom entry {entry.id} added: {entry.plate}")


@hotlist_group.command("remove")
@click.argument("entry_id", type=ROW_ID)
@click.option("--reason", required=True, help="Why, e.g. 'vehicle recovered'.")
@pass_ctx
def hotlist_remove(ctx, entry_id, reason):
    """Remove an entry (kept on record with who, when and why)."""
    from appliance import hotlist
    ctx.run(hotlist.remove_entry, ctx.actor(), entry_id, reason)
    click.echo(f"entry {entry_id} removed")


# --- database -------------------------------------------------------------------------------

@main.group(name="db")
def db_group():
    """Database maintenance."""


@db_group.command("migrate")
@pass_ctx
def db_migrate(ctx):
    """Apply pending migrations (the database file is backed up first)."""
    s = ctx.settings
    db.open_database(s)
    try:
        done = db.migrate(s)
    except db.MigrationError as exc:
        raise click.ClickException(str(exc))
    for line in done or ["the database is up to date"]:
        click.echo(line)


@db_group.command("check")
@pass_ctx
def db_check(ctx):
    """SQLite integrity check plus database-versus-evidence-files consistency."""
    from appliance import store
    ctx.open()
    with db.connection():
        integrity = db.integrity_check()
        problems = store.check(ctx.settings, store.EvidenceStore(ctx.settings))
    if integrity != "ok":
        problems.insert(0, f"sqlite integrity_check: {integrity}")
    for p in problems:
        click.echo(p)
    click.echo("database and evidence store consistent" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


# --- benchmarks -----------------------------------------------------------------------------

@main.group()
def bench():
    """Measure throughput on this machine (prints figures; changes only a scratch directory)."""


@bench.command("store")
@click.option("-n", "count", default=2000, show_default=True, help="Reads to store.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch directory (default: a temporary one).")
def bench_store(count, where):
    """Reads stored per second: one transaction per read, 5 KB crop and 60 KB frame, fsynced."""
    from appliance import bench as benchmarks
    click.echo(json.dumps(benchmarks.store(count, where)))


@bench.command("audit")
@click.option("-n", "count", default=1_000_000, show_default=True, help="Access records to append.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_audit(count, where):
    """Access-log appends per second and `audit verify` records per second."""
    from appliance import bench as benchmarks
    click.echo(json.dumps(benchmarks.audit_chain(count, where)))


@bench.command("report")
@click.option("-n", "count", default=1_000_000, show_default=True, help="Access records in the scratch log.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch directory; reuse it to skip the fill next time.")
def bench_report(count, where):
    """Seconds for the quarterly audit (with and without the chain verification) over a quarter of
    COUNT access records."""
    from appliance import bench as benchmarks
    click.echo(json.dumps(benchmarks.report(count, where)))


@bench.command("pipeline")
@click.option("--seconds", default=60.0, show_default=True, help="Length of the synthetic clip.")
@click.option("--size", default="1920x1080", show_default=True, help="Frame size WIDTHxHEIGHT.")
@click.option("--fps", default=10.0, show_default=True)
@click.option("--vehicles-per-min", default=20.0, show_default=True)
@click.option("--empty", is_flag=True, help="An empty road: what motion gating saves.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_pipeline(seconds, size, fps, vehicles_per_min, empty, where):
    """Frames/s through the whole pipeline, reads per vehicle pass and alert correctness on a demo clip."""
    from appliance import bench as benchmarks
    width, height = (int(v) for v in size.lower().split("x"))
    click.echo(json.dumps(benchmarks.pipeline(seconds, width, height, fps, vehicles_per_min, where, empty)))


@bench.command("search")
@click.option("-n", "count", default=10_000_000, show_default=True, help="Reads in the scratch database.")
@click.option("--queries", default=100, show_default=True, help="Searches of each kind to time.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch directory; reuse it to skip the fill next time.")
def bench_search(count, queries, where):
    """First-page latency of exact, wildcard, partial and similar plate searches, and database
    bytes per read, on a scratch database filled with synthetic reads."""
    from appliance import bench as benchmarks

    def progress(done, total, seconds):
        if done % 500_000 < 20_000 or done == total:
            click.echo(f"filled {done:,}/{total:,} reads in {seconds:.0f} s", err=True)
    click.echo(json.dumps(benchmarks.search_at_scale(count, where, queries, progress=progress)))


@bench.command("live-page")
@click.option("--loads", default=30, show_default=True, help="Reloads to time.")
@click.option("--no-capture", is_flag=True, help="Without the demo capture running beside the web UI.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_live_page(loads, no_capture, where):
    """Load time of the live view in chromium with a warm cache (needs the dev requirements)."""
    from appliance import bench as benchmarks
    try:
        click.echo(json.dumps(benchmarks.live_page(loads, where, capture=not no_capture)))
    except RuntimeError as exc:
        raise click.ClickException(str(exc))


# Command groups that live beside their domain (each module defines `register(main)`).
COMMAND_MODULES = ("appliance.cli.holds", "appliance.cli.sharing", "appliance.cli.sync")


def _register_domain_commands():
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(main)


_register_domain_commands()
