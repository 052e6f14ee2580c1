"""`waypost hotlist ...`: state lists imported from a file, custom entries added by hand."""

from __future__ import annotations

from pathlib import Path

import click

from appliance import db, hotlist
from appliance.cli.context import entries, local_time, pass_ctx
from appliance.cli.types import ROW_ID


@click.group(name="hotlist")
def hotlist_group():
    """Import and maintain hotlists."""


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


@hotlist_group.command("list")
@pass_ctx
def hotlist_list(ctx):
    """Lists with their size and, for state lists, when they were refreshed and whether they are
    fresh (custom entries are added by hand, not refreshed from a source)."""
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
    entry = ctx.run(hotlist.add_custom, ctx.actor(), plate, reason, approved_by, narrative, state)
    click.echo(f"custom entry {entry.id} added: {entry.plate}")


@hotlist_group.command("remove")
@click.argument("entry_id", type=ROW_ID)
@click.option("--reason", required=True, help="Why, e.g. 'vehicle recovered'.")
@pass_ctx
def hotlist_remove(ctx, entry_id, reason):
    """Remove an entry (kept on record with who, when and why)."""
    ctx.run(hotlist.remove_entry, ctx.actor(), entry_id, reason)
    click.echo(f"entry {entry_id} removed")
