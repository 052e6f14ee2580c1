"""`waypost user ...`: accounts and their training."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys

import click

from appliance import audit, db, users
from appliance.cli.context import local_time, parse_date, pass_ctx, runs_as, unattended
from appliance.models import User
from appliance.roles import ROLES


@click.group()
def user():
    """Manage accounts."""


@runs_as("accounts.manage")
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
            users.add(
                ctx.actor(),
                username=username,
                display_name=display_name,
                organization=organization or s.post.agency,
                role=role,
                password=password,
                job_title=job_title,
                min_password_length=s.web.min_password_length,
            )
        except users.UserError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"created {role} account {username}")
    if not password_stdin:
        click.echo(f"temporary password (shown once): {password}")


@runs_as("accounts.manage")
@user.command("list")
@pass_ctx
def user_list(ctx):
    """List accounts with role, state and training."""
    ctx.open()
    with db.connection():
        rows = list(User.select().order_by(User.username))
    click.echo(f"{'username':<20} {'role':<11} {'active':<7} {'training':<24} last sign-in")
    for u in rows:
        training = "current" if u.training_current() else "NOT CURRENT"
        if u.training_expires_on:
            training += f" (to {u.training_expires_on})"
        last = local_time(u.last_login_at, ctx.settings) if u.last_login_at else "never"
        click.echo(f"{u.username:<20} {u.role:<11} {'yes' if u.active else 'no':<7} {training:<24} {last}")


@runs_as("accounts.manage")
@user.command("disable")
@click.argument("username")
@pass_ctx
def user_disable(ctx, username):
    """Deactivate an account (it can no longer sign in)."""
    ctx.run(users.set_active, ctx.actor(), username, False)
    click.echo(f"disabled {username}")


@runs_as("accounts.manage")
@user.command("enable")
@click.argument("username")
@pass_ctx
def user_enable(ctx, username):
    """Reactivate an account."""
    ctx.run(users.set_active, ctx.actor(), username, True)
    click.echo(f"enabled {username}")


@runs_as("accounts.manage")
@user.command("set-training")
@click.argument("username")
@click.option("--completed", required=True, help="Date the ALPR training was completed (YYYY-MM-DD).")
@click.option(
    "--course",
    required=True,
    help="Name of the course, as in the training record (5 characters or more, not only digits).",
)
@click.option(
    "--expires", default=None, help="Date the training expires (default: one year after completion; two years at most)."
)
@pass_ctx
def user_set_training(ctx, username, completed, course, expires):
    """Record an account's ALPR training. Accounts without current training cannot reach plate data."""
    done = parse_date(completed, "--completed")
    until = parse_date(expires, "--expires")
    if until is None:
        try:
            until = done.replace(year=done.year + 1)
        except ValueError:  # 29 February
            until = done + dt.timedelta(days=365)
    course = course.strip()
    refused = users.training_problem(done, course, until)  # a usage error naming the option, as a bad date
    if refused:
        option = {"course": "--course", "completed_on": "--completed"}.get(refused.field or "", "--expires")
        raise click.BadParameter(str(refused), param_hint=option)
    ctx.run(users.set_training, ctx.actor(), username, done, course, until)
    click.echo(f"training recorded for {username}: {course}, completed {done}, expires {until}")


@runs_as("accounts.manage")
@user.command("reset-password")
@click.argument("username")
@pass_ctx
def user_reset_password(ctx, username):
    """Give an account a new temporary password (shown once) and unlock it."""
    password = users.generate_password()
    ctx.run(users.set_password, ctx.actor(), username, password, ctx.settings.web.min_password_length, must_change=True)
    click.echo(f"temporary password for {username} (shown once): {password}")


@unattended(
    "run by root on the post's own console (sudo -u waypost ...): the operating-system account is its "
    "accountability, so it works when every administrator is locked out"
)
@user.command("unlock")
@click.argument("username")
@pass_ctx
def user_unlock(ctx, username):
    """End an account's lock-out after failed sign-ins; the password stays. For when no administrator
    can sign in to reset it (`user reset-password`, which unlocks too). Recorded as the system, with
    the operating-system user who ran it (the one behind sudo)."""
    # Whoever may run this as the service account may change the database file itself: the command
    # gives no power beyond that, only a record of who used it.
    os_user = os.environ.get("SUDO_USER") or getpass.getuser()
    actor = audit.Actor(audit.SYSTEM, ctx.settings.post.agency, f"cli:{os_user}")
    ctx.run(users.unlock, actor, username)
    click.echo(f"unlocked {username}: it signs in again with its own password")
