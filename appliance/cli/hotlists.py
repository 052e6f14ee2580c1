"""`waypost hotlist ...`: state lists imported from a file (or retired), custom entries added by
hand (and renewed past their review date)."""

from __future__ import annotations

from pathlib import Path

import click

from appliance import db, hotlist
from appliance.cli.context import entries, local_time, pass_ctx, runs_as
from appliance.cli.types import ROW_ID


@click.group(name="hotlist")
def hotlist_group():
    """Import and maintain hotlists."""


@runs_as("hotlists.manage")
@hotlist_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--list", "name", required=True, help="The list this file replaces, e.g. SVS or NCIC.")
@pass_ctx
def hotlist_import(ctx, file, name):
    """Replace a state list with FILE (CSV). Any malformed line stops the import; nothing changes."""
    ctx.open()
    with db.connection():
        try:
            result = hotlist.import_csv(ctx.settings, file, name, ctx.actor())
        except hotlist.HotlistError as exc:
            raise click.ClickException(f"nothing imported:\n{exc}") from exc
    click.echo(f"{result.hotlist}: {entries(result.entries)} imported, {result.replaced} replaced")
    if result.restarted:
        click.echo(f"{result.hotlist} was retired; this import started it again: it raises alerts from now on")


@runs_as("hotlists.manage")
@hotlist_group.command("list")
@pass_ctx
def hotlist_list(ctx):
    """Lists with their size and, for state lists, when they were refreshed and whether they are
    fresh or retired (custom entries are added by hand, not refreshed from a source; those past
    their review date are named)."""
    ctx.open()
    with db.connection():
        rows = hotlist.status(ctx.settings)
    for h in rows:
        if h["kind"] != "state":
            state = "custom: not refreshed from a source"
            if h["past_review"]:
                ids = ", ".join(str(i) for i in h["past_review"])
                state += (
                    f"; PAST REVIEW, no alerts: {entries(len(h['past_review']))} ({ids}): renew "
                    "(`waypost hotlist renew ID --reason ...`) or remove them"
                )
        elif h["retired"]:
            when = local_time(h["retired_at"], ctx.settings)
            state = f"RETIRED {when} by {h['retired_by']}: {h['retired_reason']}; produces no alerts"
        else:
            when = local_time(h["refreshed_at"], ctx.settings) if h["refreshed_at"] else "never"
            state = f"refreshed {when}  " + ("STALE: produces no alerts" if h["stale"] else "fresh")
        click.echo(f"{h['name']:<12} {h['kind']:<7} {entries(h['entries']):>14}  {state}")


@runs_as("hotlists.manage")
@hotlist_group.command("drop")
@click.argument("name")
@click.option("--reason", required=True, help="Why, e.g. 'replaced by the DOJ SVS extract'.")
@pass_ctx
def hotlist_drop(ctx, name, reason):
    """Retire the state list NAME: it raises no alerts from now on; its entries and alerts stay on
    file, and importing NAME again starts it afresh."""
    retired = ctx.run(hotlist.retire, ctx.actor(), name, reason)
    click.echo(
        f"{retired.name}: retired; it raises no alerts from now on (its {entries(retired.entry_count)} and "
        "their alerts stay on file)"
    )


@runs_as("hotlists.manage")
@hotlist_group.command("add")
@click.argument("plate")
@click.option("--reason", required=True)
@click.option("--approved-by", required=True, help="The commander who approved the entry.")
@click.option("--narrative", required=True, help="Case and reason for the entry.")
@click.option("--state", default="")
@pass_ctx
def hotlist_add(ctx, plate, reason, approved_by, narrative, state):
    """Add a custom entry; PLATE may be partial with * and ?. It raises alerts until its review
    date (hotlist.custom_review_days from today), then none unless renewed."""
    entry = ctx.run(hotlist.add_custom, ctx.settings, ctx.actor(), plate, reason, approved_by, narrative, state)
    click.echo(f"custom entry {entry.id} added: {entry.plate}; review by {entry.review_on:%Y-%m-%d}")


@runs_as("hotlists.manage")
@hotlist_group.command("remove")
@click.argument("entry_id", type=ROW_ID)
@click.option("--reason", required=True, help="Why, e.g. 'vehicle recovered'.")
@pass_ctx
def hotlist_remove(ctx, entry_id, reason):
    """Remove an entry (kept on record with who, when and why)."""
    ctx.run(hotlist.remove_entry, ctx.actor(), entry_id, reason)
    click.echo(f"entry {entry_id} removed")


@runs_as("hotlists.manage")
@hotlist_group.command("renew")
@click.argument("entry_id", type=ROW_ID)
@click.option("--reason", required=True, help="Why the entry is still needed, e.g. 'suspect still at large'.")
@pass_ctx
def hotlist_renew(ctx, entry_id, reason):
    """Keep a custom entry raising alerts for hotlist.custom_review_days more from today."""
    entry = ctx.run(hotlist.renew_entry, ctx.settings, ctx.actor(), entry_id, reason)
    click.echo(f"entry {entry.id} renewed: it raises alerts until the end of {entry.review_on:%Y-%m-%d}")
