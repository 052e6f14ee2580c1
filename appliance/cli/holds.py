"""`waypost hold ...` (legal holds) and `waypost retention ...` (the purge and its benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliance import db, holds, retention, search
from appliance.bench import retention as purge_bench
from appliance.cli.context import (
    SYNC_OFF,
    WINDOW_HELP,
    filed_under,
    local_time,
    parse_when,
    runs_as,
    stated_purpose,
    sync_off,
    unattended,
)
from appliance.cli.types import BATCH, MAX_ROW_ID, ROW_ID
from appliance.models import Read


@click.group(name="hold")
def hold_group():
    """Legal holds: reads kept out of the automatic purge."""


@runs_as("holds.request")
@hold_group.command("place")
@click.option("--read", "read_ref", default=None, help="One read, by its id or uuid.")
@click.option("--plate", default=None, help="Or every read a plate search finds in the period.")
@click.option(
    "--mode", type=click.Choice(["exact", "wildcard", "partial", "similar"]), default="exact", show_default=True
)
@click.option("--from", "since", default=None, help=f"Start of the period, with --plate: {WINDOW_HELP}.")
@click.option(
    "--to", "until", default=None, help=f"End of the period, with --plate (a date: the whole day): {WINDOW_HELP}."
)
@filed_under
@click.pass_obj
def hold_place(ctx, read_ref, plate, mode, since, until, purpose_code, case_number, reason):
    """Place a hold on one read (--read) or on the reads a search finds in a period (--plate)."""
    if bool(read_ref) == bool(plate):
        raise click.UsageError("give either --read or --plate (with --from and --to)")
    ctx.open()
    with db.connection():
        try:
            if read_ref:
                read = (
                    Read.get_or_none(Read.id == int(read_ref))
                    if read_ref.isdigit() and int(read_ref) <= MAX_ROW_ID
                    else Read.get_or_none(Read.uuid == read_ref)
                )
                if read is None:
                    raise click.ClickException(f"no read {read_ref!r} (give its id or uuid)")
                hold = holds.place_on_read(ctx.settings, ctx.actor(), read.id, purpose_code, case_number, reason)
            else:
                query = search.Query(
                    plate, mode, since=parse_when(since, "--from"), until=parse_when(until, "--to", end=True)
                )
                hold = holds.place_on_query(ctx.settings, ctx.actor(), query, purpose_code, case_number, reason)
        except holds.HoldError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(
        f"hold {hold.id} placed under case {hold.case_number}: {hold.read_count} read(s); "
        + (SYNC_OFF if sync_off(ctx.settings) else "headquarters gets it with the next sync batch")
    )


@runs_as("holds.request")
@hold_group.command("list")
@click.option("--active", is_flag=True, help="Only holds not released.")
@stated_purpose("AUDIT")
@click.pass_obj
def hold_list(ctx, active, purpose_code, case_number):
    """Holds with their case, reads and state (the listing is recorded, with its purpose)."""
    purpose = ctx.purpose(purpose_code, case_number)
    ctx.open()
    with db.connection():
        rows = holds.listing(ctx.actor(), purpose, active_only=active)
    day = "%Y-%m-%d %Z"  # the day in post.timezone, as the pages show it
    for h in rows:
        state = "ACTIVE" if h.active else f"released {local_time(h.released_at, ctx.settings, day)} by {h.released_by}"
        click.echo(
            f"{h.id:>5} {h.case_number:<16} {h.kind:<5} {h.read_count:>7} read(s)  placed "
            f"{local_time(h.placed_at, ctx.settings, day)} by {h.placed_by}  {state}  {h.reason}"
        )


@runs_as("holds.release")
@hold_group.command("release")
@click.argument("hold_id", type=ROW_ID)
@click.option("--reason", required=True, help="Why the data no longer needs to be kept.")
@click.pass_obj
def hold_release(ctx, hold_id, reason):
    """Release a hold (its reads become subject to retention again)."""
    ctx.open()
    with db.connection():
        try:
            hold = holds.release(ctx.actor(), hold_id, reason)
        except holds.HoldError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(
        f"hold {hold.id} (case {hold.case_number}) released; "
        + (SYNC_OFF if sync_off(ctx.settings) else "headquarters gets the release with the next sync batch")
    )


@click.group(name="retention")
def retention_group():
    """Purge reads past their retention period."""


@unattended("the daily purge, which its timer runs; recorded as the system")
@retention_group.command("run")
@click.option("--dry-run", is_flag=True, help="Print what would be purged; delete nothing.")
@click.option(
    "--batch",
    type=BATCH,
    default=10_000,
    show_default=True,
    help="The most reads in one transaction (each is sized to hold the lock about half a second).",
)
@click.pass_obj
def retention_run(ctx, dry_run, batch):
    """Purge now what the daily run would purge (reads, their images, outbox rows and alerts),
    except reads under legal hold; one access record for the run, as the system (the daily timer
    runs this unattended)."""
    ctx.open()
    with db.connection():
        result = retention.run(ctx.settings, ctx.actor(), dry_run=dry_run, batch=batch)
    for line in result.lines():
        click.echo(line)
    if not dry_run:
        click.echo("recorded as the system (an unattended job, as the daily timer runs it)")


@unattended("a benchmark on a copy in a scratch directory")
@retention_group.command("bench")
@click.option(
    "--source",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory holding a filled waypost.db (`waypost bench search --dir DIR` leaves one); only read.",
)
@click.option(
    "--dir",
    "where",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Scratch directory the database is copied to and purged in.",
)
@click.option("--fraction", default=0.25, show_default=True, help="Share of the reads (the oldest) to purge.")
@click.option("--sample", default=5000, show_default=True, help="Purged reads given real image files.")
@click.option("--batch", type=BATCH, default=2000, show_default=True)
@click.option("--no-copy", is_flag=True, help="Reuse the copy already in --dir.")
def retention_bench(source, where, fraction, sample, batch, no_copy):
    """Time a purge of the oldest quarter of a large database while searches run beside it."""
    if where.resolve() == source.resolve():
        raise click.BadParameter(
            "the scratch directory must not be the source: the source is never modified", param_hint="--dir"
        )

    def progress(batches, seconds):
        if batches % 100 == 0:
            click.echo(f"{batches} batches in {seconds:.0f} s", err=True)

    click.echo(json.dumps(purge_bench.run(source, where, fraction, sample, batch, copy=not no_copy, progress=progress)))
