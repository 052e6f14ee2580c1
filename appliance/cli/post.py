"""`waypost init`, `waypost run`, `waypost config ...` and `waypost db ...`: the post itself."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance import config, db, store
from appliance.cli.context import bootstrap_or_fail, pass_ctx, report_bootstrap, unattended
from appliance.service import serve
from web.server import ListenError, listen


@unattended("makes the database and the first administrator, as the service does at start")
@click.command()
@pass_ctx
def init(ctx):
    """Create the data directory and database, apply migrations, create a first administrator."""
    report_bootstrap(bootstrap_or_fail(ctx.settings))
    click.echo(f"database ready at {ctx.settings.db_path}")


@unattended("the service itself")
@click.command()
@pass_ctx
def run(ctx):
    """Start the post: everything `init` does, then the web UI (and, later, capture and sync)."""
    s = ctx.settings
    try:  # before bootstrap: a port in use must stop the start before anything is recorded
        sock = listen(s.web.host, s.web.port)
    except ListenError as exc:
        raise click.ClickException(str(exc)) from None
    report_bootstrap(bootstrap_or_fail(s))
    click.echo(f"Waypost post {s.post.id} on http://{s.web.host}:{sock.getsockname()[1]}  (Ctrl-C stops)")
    serve(s, sock=sock)


@click.group(name="config")
def config_group():
    """Check and document the configuration."""


@unattended("reads a configuration file")
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


@unattended("prints the configuration table")
@config_group.command("docs")
def config_docs():
    """Print the table of every configuration key (the README's table)."""
    click.echo(config.docs_markdown(), nl=False)


@click.group(name="db")
def db_group():
    """Database maintenance."""


@unattended("database maintenance, no record shown")
@db_group.command("migrate")
@pass_ctx
def db_migrate(ctx):
    """Apply pending migrations (the database file is backed up first)."""
    s = ctx.settings
    db.open_database(s)
    try:
        done = db.migrate(s)
    except db.MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in done or ["the database is up to date"]:
        click.echo(line)


@unattended("integrity check, no record shown")
@db_group.command("check")
@pass_ctx
def db_check(ctx):
    """SQLite integrity check, database-versus-evidence-files consistency, and files other users
    may read."""
    ctx.open()
    with db.connection():
        integrity = db.integrity_check()
        problems = db.exposed(ctx.settings) + store.check(ctx.settings, store.EvidenceStore(ctx.settings))
    if integrity != "ok":
        problems.insert(0, f"sqlite integrity_check: {integrity}")
    for p in problems:
        click.echo(p)
    click.echo("database and evidence store consistent" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)
