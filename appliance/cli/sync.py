"""`waypost sync ...`: this post's side of sync (its key, a push now, what waits)."""

from __future__ import annotations

import click

from appliance import bundle, db
from appliance.cli.context import sync_off, unattended
from sync import post


@click.group(name="sync")
def sync_group():
    """Send this post's reads, images and access records to headquarters."""


@unattended("makes and prints the post key")
@sync_group.command("keygen")
@click.pass_obj
def sync_keygen(ctx):
    """Make this post's signing key (if missing) and print what headquarters needs to enrol it."""
    s = ctx.settings
    try:
        key = bundle.post_key(s)
    except bundle.BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    public = key.public_key()
    click.echo(f"post id:     {s.post.id}")
    click.echo(f"key id:      {bundle.key_id(public)}")
    click.echo(f"public key:  {bundle.public_key_file(s)}")
    click.echo(bundle.public_pem(public).decode().rstrip())
    click.echo(
        f"enrol it at headquarters: waypost --as ADMIN hq enroll --post {s.post.id} --name NAME "
        f"--public-key {bundle.public_key_file(s).name}"
    )


def _need_hq_url(s) -> None:
    if not s.sync.hq_url:
        raise click.ClickException(
            "sync.hq_url is not set: set it in the config file (or WAYPOST_SYNC__HQ_URL) to headquarters' base URL"
        )


@unattended("the push its timer runs; recorded as the system")
@sync_group.command("push")
@click.option("--max-batches", type=click.IntRange(min=1), default=None, help="Stop after this many batches.")
@click.pass_obj
def sync_push(ctx, max_batches):
    """Send what headquarters does not hold yet, oldest first; a range is marked sent only once acknowledged."""
    s = ctx.settings
    _need_hq_url(s)
    ctx.open()
    with db.connection():
        try:
            result = post.push(s, max_batches=max_batches)
        except post.SyncError as exc:
            raise click.ClickException(str(exc)) from exc
    for line in result.lines():
        click.echo(line)


@unattended("counts and positions, no read shown")
@sync_group.command("status")
@click.option("--offline", is_flag=True, help="Do not ask headquarters for its position.")
@click.pass_obj
def sync_status(ctx, offline):
    """What waits to be sent, and (unless --offline) what headquarters holds."""
    s = ctx.settings
    ctx.open()
    with db.connection():
        local = post.local_status(s)
        health = post.health(s)
    if sync_off(s):
        click.echo(
            "sync is off on this post (sync.enabled is false, no sync.hq_url, no sync.hq_public_key): "
            "reads waiting are kept until sync is set up or retention removes them"
        )
    click.echo(
        f"reads waiting: {local['pending_reads']}"
        + (f", legal hold events waiting: {local['pending_holds']}" if local["pending_holds"] else "")
        + (f" (outbox seq {local['pending_from']}..{local['pending_to']})" if local["pending"] else "")
    )
    click.echo(
        f"acknowledged up to outbox seq {local['acked_seq']}"
        + (f", last at {local['last_acked_at']} UTC" if local["last_acked_at"] else "")
    )
    click.echo(f"access log head: record {local['chain_head']}")
    if local["unacked_batch"]:
        click.echo("a built batch waits for headquarters' answer (sent again on the next push)")
    click.echo(f"last success: {health['last_success_at'] or 'never'}")
    if health["oldest_unsent_read_at"]:
        click.echo(
            f"oldest read waiting: stored {health['oldest_unsent_read_at']} "
            f"({health['oldest_unsent_read_minutes']} minutes ago)"
        )
    if health["last_error"]:
        click.echo(
            f"last error at {health['last_error_at']} ({health['failures']} attempt(s) in a row): "
            f"{health['last_error']}"
        )
    if health["clock_offset_s"] is not None:
        click.echo(
            f"clock: {post.clock_text(health['clock_offset_s'])} (measured {health['clock_checked_at']})"
            if health["clock_offset_s"]
            else f"clock: agrees with headquarters' (measured {health['clock_checked_at']})"
        )
    for problem in health["problems"]:
        click.echo(f"WARNING {problem}")
    if offline or not s.sync.hq_url:
        return
    try:
        pos = post.fetch_position(s)
    except post.SyncError as exc:
        raise click.ClickException(str(exc)) from exc
    offset = post.measured_clock(s)
    if offset is not None and abs(offset) > s.sync.clock_warn_s:
        click.echo(f"WARNING this post's clock is {post.clock_text(offset)}: check its time source (NTP)")
    click.echo(f"headquarters holds outbox seq up to {pos.last_seq} and access records up to {pos.chain_seq}")
    with db.connection():
        problem = post.divergence(pos)
    if problem:
        raise click.ClickException(problem)
