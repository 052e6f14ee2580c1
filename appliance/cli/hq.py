"""`waypost hq ...`: headquarters (serve, enrol posts, pull, hotlists, status, holds, retention)."""

from __future__ import annotations

import base64
import getpass
import json
import os
import threading
from pathlib import Path

import click

from appliance import audit, bundle, db
from appliance.cli.context import (
    bootstrap_or_fail,
    filed_under,
    parse_when,
    report_bootstrap,
    runs_as,
    stated_purpose,
    unattended,
)
from appliance.cli.types import ROW_ID
from appliance.db import write
from appliance.memory import limit_malloc_arenas
from sync import hq
from sync.hq import holds as hq_holds
from sync.hq import posts as hq_posts
from sync.hq import retention as hq_purge
from sync.hq import search as hq_search
from web.hq import create_hq_app
from web.server import ListenError, WebServer, listen

HQ_DB_ENV = "WAYPOST_HQ_DATABASE"


def _hq_target(ctx, database) -> str:
    return database or os.environ.get(HQ_DB_ENV) or str(ctx.settings.data_dir / "hq.sqlite")


def _key_dir(ctx, target: str):
    """Headquarters' key lives beside its SQLite file, or in data_dir with a database URL."""
    return ctx.settings.data_dir if "://" in target else None


database_option = click.option(
    "--database",
    default=None,
    help=f"Headquarters database: a SQLite file or a postgresql:// URL "
    f"(default: ${HQ_DB_ENV}, else hq.sqlite in data_dir).",
)


@click.group(name="hq")
def hq_group():
    """Headquarters: receive batches from posts, enrol posts, show their status, and serve the
    officers' search across every post.

    Headquarters keeps two databases: the posts' data (--database: a SQLite file or a
    postgresql:// URL) and its own accounts and access log (the configuration's data_dir, as on a
    post). Accounts are managed with the same commands as on a post, run with headquarters'
    configuration: `waypost user add`, `waypost user set-training`, `waypost audit verify`."""


@unattended("the headquarters service itself")
@hq_group.command("serve")
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8090, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--max-batch-mb",
    type=click.IntRange(1, 1024),
    default=64,
    show_default=True,
    help="Largest batch body accepted (compressed).",
)
@click.pass_obj
def hq_serve(ctx, database, host, port, threads, max_batch_mb):
    """Serve headquarters (waitress) until interrupted: the sync API for the posts (signed, no
    session) and, for people signed in, the posts page and the search across every post
    (/hq/reads/search; a purpose and case number, and an access record, for every search, read
    and image). On first start it creates the accounts database in data_dir and an administrator,
    whose password it prints once (or takes from WAYPOST_ADMIN_PASSWORD), as `waypost init` does.
    It purges reads past retention daily at retention.run_at (see `waypost hq retention`)."""

    limit_malloc_arenas()  # before any thread starts: each waitress thread kept a batch's memory (issue 18)
    s = ctx.settings
    target = _hq_target(ctx, database)
    try:  # the port first: a port in use stops the start before anything is recorded
        sock = listen(host, port)
    except ListenError as exc:
        raise click.ClickException(f"{str(exc).split(';')[0]}; give `waypost hq serve` a free --port") from None
    report_bootstrap(bootstrap_or_fail(s))
    app = create_hq_app(target, max_batch_mb * 1024 * 1024, settings=s)
    stop = threading.Event()
    hq_search.Indexer(stop).start()
    hq_purge.Daily(s, stop).start()  # the daily purge at retention.run_at (post.timezone)
    click.echo(f"headquarters on http://{host}:{port}/ (reads in {target}; accounts and access log in {s.db_path})")
    try:
        # a body over the limit is refused unread and answered by the sync API (JSON, logged)
        WebServer(app, host, port, threads, sock, max_request_body_size=max_batch_mb * 1024 * 1024 + 1).serve()
    finally:
        stop.set()


def _hq_run(ctx, database, action, *args):
    """Open headquarters' database, run one action, and turn its refusal into a clean CLI error
    (as appliance.cli.Context.run does for the post)."""
    hq.open_hq(_hq_target(ctx, database))
    with hq.hq_database.connection_context():
        try:
            return action(*args)
        except hq.HQError as exc:
            raise click.ClickException(str(exc)) from exc


_POST_OPTIONS = (
    click.option("--post", "post_id", required=True, help="The post's id (post.id in its config)."),
    click.option("--name", default="", help="A name for people (default: the id)."),
    click.option(
        "--public-key",
        "public_key",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The post's public key file (<key_file>.pub from `waypost sync keygen`).",
    ),
    click.option(
        "--pull-url", default=None, help="The post's web address, for `waypost hq pull` (e.g. http://post-1:8080)."
    ),
)


def _post_options(command):
    for option in reversed(_POST_OPTIONS):
        command = option(command)
    return command


def _enrol(ctx, database, post_id, name, public_key, pull_url, replace_reason, **details) -> None:
    """Enrol through hq.enroll with its access record in headquarters' log (the accounts
    database), written inside the enrolment's transaction: no enrolment without its record."""
    actor = ctx.actor()
    _hq_open_both(ctx, database)

    def record(action: str, post, what: dict) -> None:
        with write():
            audit.record(
                action, actor, query={"post": post.id}, objects=[f"hq_post:{post.id}"], details={**what, **details}
            )

    with db.connection(), hq.hq_database.connection_context():
        try:
            post = hq.enroll(
                post_id, name, public_key.read_bytes(), pull_url, replace_reason=replace_reason, record=record
            )
        except hq.HQError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"enrolled post {post.id} ({post.name}), key id {post.key_id}")


@runs_as("settings.manage")
@hq_group.command("enroll")
@database_option
@_post_options
@click.option("--replace", is_flag=True, help="Replace the key of a post enrolled with another key.")
@click.option("--reason", default=None, help="With --replace: why the post's key changed (recorded).")
@click.pass_obj
def hq_enroll(ctx, database, post_id, name, public_key, pull_url, replace, reason):
    """Enrol a post's public key. An enrolled post's key is replaced only with --replace and a
    --reason; a key another post holds is refused. Each enrolment is in headquarters' access log."""
    if replace and not (reason or "").strip():
        raise click.UsageError("--replace needs --reason: why the post's key changed", ctx=click.get_current_context())
    _enrol(ctx, database, post_id, name, public_key, pull_url, reason if replace else None)


@unattended(
    "run by the provisioning (Ansible) from the inventory's list of posts, which is kept and reviewed in "
    "version control; recorded as the system, with the operating-system user"
)
@hq_group.command("provision")
@database_option
@_post_options
@click.pass_obj
def hq_provision(ctx, database, post_id, name, public_key, pull_url):
    """Enrol a post as the inventory lists it (the provisioning's own command): a new post is
    enrolled, a key the inventory changed replaces the post's key, a key another post holds is
    refused. Recorded as the system, with the provisioning and the OS user in the record."""
    reason = f"provisioning: the inventory's key for post {post_id} changed (group_vars/hq.yml)"
    # Ansible enrols before the service has ever started: make the accounts database (where the
    # enrolment is recorded) if it is missing, but no administrator: the service's first start
    # creates that and prints its password once, where the technician reads it.
    report_bootstrap(bootstrap_or_fail(ctx.settings, create_admin=False))
    _enrol(ctx, database, post_id, name, public_key, pull_url, reason, via="provisioning", os_user=getpass.getuser())


def _recorder(actor):
    """record(action, post, details) for sync.hq.posts: headquarters' access log (the accounts
    database), written inside the change's transaction: no change without its record."""

    def record(action: str, post, what: dict) -> None:
        with write():
            audit.record(action, actor, query={"post": post.id}, objects=[f"hq_post:{post.id}"], details=what)

    return record


@runs_as("settings.manage")
@hq_group.command("rename")
@database_option
@click.argument("old")
@click.argument("new")
@click.option("--reason", required=True, help="Why the post's id changes (recorded).")
@click.pass_obj
def hq_rename(ctx, database, old, new, reason):
    """Move post OLD's whole history at headquarters to the id NEW, in one transaction: its
    enrolment (key, position, access-log chain), reads, access records, alerts, holds, batch log,
    cameras and search texts. Nothing is copied or sent again; OLD stays an old id of NEW, so the
    reads the post signed under OLD still verify. Then set post.id = NEW on the post (until then
    its pushes are refused, saying so). Recorded in headquarters' access log."""
    if not reason.strip():
        raise click.UsageError("--reason must say why the post's id changes", ctx=click.get_current_context())
    actor = ctx.actor()
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        try:
            post, moved = hq_posts.rename(old, new, reason, record=_recorder(actor))
        except hq.HQError as exc:
            raise click.ClickException(str(exc)) from exc
    counts = ", ".join(f"{n} {table.removeprefix('hq_')}" for table, n in moved.items() if n) or "no rows"
    click.echo(f"renamed post {old} to {post.id}: moved {counts}")
    click.echo(f"now set post.id = {post.id} on the post and restart it; it continues where it was")


@runs_as("settings.manage")
@hq_group.command("rebase")
@database_option
@click.argument("post_id", metavar="POST")
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The re-imaged post's new public key file (<key_file>.pub from `waypost sync keygen`).",
)
@click.option("--reason", required=True, help="Why the post has a new key and log, e.g. its SD card was replaced.")
@click.pass_obj
def hq_rebase(ctx, database, post_id, public_key, reason):
    """Let a re-imaged post (a fresh data directory and a new key, the same post.id) rejoin:
    headquarters closes the post's current copy of its chain as a segment (its key, outbox seq,
    access log and whether it verifies) and opens a new segment for the new key, whose outbox
    seqs and access log start again. The closed segment's reads and records stay, searchable and
    verifiable. Recorded in headquarters' access log."""
    if not reason.strip():
        raise click.UsageError("--reason must say why the post has a new key and log", ctx=click.get_current_context())
    actor = ctx.actor()
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        try:
            post, closed, never_sent = hq_posts.rebase(
                post_id, public_key.read_bytes(), reason, record=_recorder(actor)
            )
        except hq.HQError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(
        f"post {post.id}: closed segment {closed.segment} (key id {closed.key_id}, outbox seq {closed.last_seq}, "
        f"access log up to {closed.chain_seq}, {closed.chain_status}); segment {post.segment} opened for key id "
        f"{post.key_id}"
    )
    click.echo("the post's next push starts the new segment; nothing of the closed one is sent again or lost")
    if never_sent:
        click.echo(
            f"{never_sent} frame(s) the old post never sent will not come (they were on its wiped data directory; "
            "their reads and crops are here)"
        )


@unattended("makes and prints headquarters key")
@hq_group.command("keygen")
@database_option
@click.pass_obj
def hq_keygen(ctx, database):
    """Make headquarters' key (if missing) and print the value of sync.hq_public_key for the posts."""
    target = _hq_target(ctx, database)
    key = hq.hq_key(target, _key_dir(ctx, target)).public_key()
    click.echo(f"key id: {bundle.key_id(key)}")
    click.echo(
        f"set on each post that headquarters may pull from: sync.hq_public_key = "
        f'"{base64.b64encode(bundle.raw_public(key)).decode()}"'
    )


@unattended("the nightly pull its timer runs")
@hq_group.command("pull")
@database_option
@click.option("--post", "post_id", default=None, help="The post to pull from.")
@click.option("--all", "pull_all", is_flag=True, help="Every enrolled post with a pull URL.")
@click.option("--max-batches", type=click.IntRange(min=1), default=None, help="Per post.")
@click.pass_obj
def hq_pull(ctx, database, post_id, pull_all, max_batches):
    """Fetch what posts hold and headquarters does not (signed requests to each post's /sync/batch)."""
    if bool(post_id) == bool(pull_all):
        raise click.UsageError("give --post ID or --all")
    target = _hq_target(ctx, database)
    hq.open_hq(target)
    key = hq.hq_key(target, _key_dir(ctx, target))
    trust = hq.pull_trust(ctx.settings.sync)
    with hq.hq_database.connection_context():
        ids = [post_id] if post_id else [p.id for p in hq.HQPost.select().where(hq.HQPost.pull_url != "")]
    failed = False
    for pid in ids:
        result = hq.pull(pid, key, max_batches=max_batches, trust=trust)
        click.echo(result.line())
        failed = failed or bool(result.problem)
    if failed:
        raise click.ClickException("some posts could not be pulled from completely (see above)")


@hq_group.group("hotlist")
def hq_hotlist():
    """State lists published to the posts (each post fetches new or changed lists on contact)."""


@runs_as("hotlists.manage")
@hq_hotlist.command("add")
@database_option
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def hq_hotlist_add(ctx, database, name, path):
    """Publish the CSV at PATH as list NAME (replacing the list of that name)."""
    published = _hq_run(ctx, database, hq.publish_hotlist, name, path.read_bytes())
    click.echo(f"published hotlist {published.name}: {published.size} bytes, sha256 {published.sha256[:16]}...")


@unattended("names and sizes of the published lists")
@hq_hotlist.command("list")
@database_option
@click.pass_obj
def hq_hotlist_list(ctx, database):
    """The lists published to the posts."""
    hq.open_hq(_hq_target(ctx, database))
    with hq.hq_database.connection_context():
        rows = list(
            hq.HQHotlist.select(
                hq.HQHotlist.name, hq.HQHotlist.size, hq.HQHotlist.sha256, hq.HQHotlist.published_at
            ).order_by(hq.HQHotlist.name)
        )
    if not rows:
        click.echo("no hotlist published")
    for h in rows:
        click.echo(
            f"{h.name}: {h.size} bytes, published {h.published_at:%Y-%m-%d %H:%M} UTC, sha256 {h.sha256[:16]}..."
        )


@unattended("each post position and chain status, no read shown")
@hq_group.command("status")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def hq_status(ctx, database, as_json):
    """Each post: last contact, what is held, backlog, access log chain status."""
    hq.open_hq(_hq_target(ctx, database))
    with hq.hq_database.connection_context():
        rows = hq.status(ctx.settings.sync.late_after_minutes, ctx.settings.sync.clock_warn_s)
        for row in rows:
            ok, bad, message = hq.verify_chain(row["post"])
            row["chain_verified"] = ok
            row["chain_message"] = message
            row["segments"] = hq_posts.segments(row["post"])
            row["segment"] = hq.HQPost.get_by_id(row["post"]).segment
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        click.echo("no post enrolled")
    for r in rows:
        chain = (
            "verified"
            if r["chain_status"] == "verified" and r["chain_verified"]
            else f"BROKEN (first bad record {r['first_bad_seq']}): {r['chain_problem'] or r['chain_message']}"
        )
        click.echo(
            f"{r['post']} ({r['name']}): last contact {r['last_contact_at'] or 'never'}, {r['reads']} read(s), "
            f"outbox seq {r['last_seq']}, backlog {r['backlog']}, access log up to {r['chain_seq']} {chain}"
        )
        click.echo(f"  frames to come: {r['frames_to_come']}")  # the second lane (README 'Sync')
        if r["last_refusal"]:
            click.echo(f"  last refusal: {r['last_refusal']['problem']}: {r['last_refusal']['message']}")
        if r["clock_offset_s"] is not None:
            measured = f"{r['clock_checked_at']:%Y-%m-%d %H:%M} UTC" if r["clock_checked_at"] else "?"
            click.echo(f"  clock offset: {r['clock_offset_s']:+d} s (measured {measured})")
        for warning in r["warnings"]:
            click.echo(f"  WARNING {warning}")
        for seg in r["segments"]:
            click.echo(
                f"  segment {seg['segment']} (closed {seg['closed_at']:%Y-%m-%d %H:%M} UTC: {seg['reason']}): key id "
                f"{seg['key_id']}, {seg['reads']} read(s), outbox seq {seg['last_seq']}, access log up to "
                f"{seg['chain_seq']} {seg['chain_status']}"
            )
        if r["segments"]:
            click.echo(f"  segment {r['segment']} (current): {r['chain_message']}")


def _hq_open_both(ctx, database):
    """Headquarters' database, and its accounts database (data_dir) for the access record."""
    ctx.open()
    hq.open_hq(_hq_target(ctx, database))


@hq_group.group("hold")
def hq_hold():
    """Legal holds at headquarters: reads kept out of headquarters' purge (`waypost hq retention`).
    Each place, release and listing is recorded in headquarters' access log."""


@runs_as("holds.request")
@hq_hold.command("place")
@database_option
@click.option("--post", "post_id", default=None, help="The post whose reads are held.")
@click.option("--all-posts", is_flag=True, help="Or the reads of every post.")
@click.option("--plate", required=True, help="The plate; with --mode wildcard, * is any run and ? one character.")
@click.option("--mode", type=click.Choice(["exact", "wildcard"]), default="exact", show_default=True)
@click.option("--from", "since", required=True, help="Start of the capture period (UTC).")
@click.option("--to", "until", required=True, help="End of the capture period (UTC; a date: the whole day).")
@filed_under
@click.pass_obj
def hq_hold_place(ctx, database, post_id, all_posts, plate, mode, since, until, purpose_code, case_number, reason):
    """Hold the reads of one post (--post) or every post (--all-posts) whose plate or an alternative
    reading matches, captured in the period; reads arriving later that match are held too."""
    if bool(post_id) == bool(all_posts):
        raise click.UsageError("give either --post ID or --all-posts")
    since_at, until_at = parse_when(since, "--from"), parse_when(until, "--to", end=True)
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        try:
            hold, covered = hq_holds.place(
                ctx.settings,
                ctx.actor(),
                post_id=post_id,
                plate=plate,
                mode=mode,
                since=since_at,
                until=until_at,
                purpose_code=purpose_code,
                case_number=case_number,
                reason=reason,
            )
        except hq_holds.HoldError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(
        f"hold {hold.id} placed under case {hold.case_number}: {hold.describe()}; covers {covered} read(s) held now"
    )


@runs_as("holds.release")
@hq_hold.command("release")
@database_option
@click.argument("hold_id", type=ROW_ID)
@click.option("--reason", required=True, help="Why the data no longer needs to be kept.")
@click.pass_obj
def hq_hold_release(ctx, database, hold_id, reason):
    """Release a hold (its reads become subject to retention again unless another hold covers them)."""
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        try:
            hold = hq_holds.release(ctx.actor(), hold_id, reason)
        except hq_holds.HoldError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"hold {hold.id} (case {hold.case_number}) released")


@runs_as("holds.request")
@hq_hold.command("list")
@database_option
@click.option("--active", is_flag=True, help="Only holds not released.")
@stated_purpose("AUDIT")
@click.pass_obj
def hq_hold_list(ctx, database, active, purpose_code, case_number):
    """Holds with their case, what they cover and their state (the listing is recorded)."""
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        rows = hq_holds.listing(ctx.actor(), ctx.purpose(purpose_code, case_number), active_only=active)
    if not rows:
        click.echo("no hold" + (" active" if active else "") + " at headquarters")
    for h in rows:
        state = "ACTIVE" if h.active else f"released {h.released_at:%Y-%m-%d} by {h.released_by}"
        click.echo(
            f"{h.id:>5} {h.case_number:<16} {h.describe()}  placed {h.placed_at:%Y-%m-%d} by "
            f"{h.placed_by}  {state}  {h.reason}"
        )


@runs_as("retention.manage")
@hq_group.command("retention")
@database_option
@click.option("--dry-run", is_flag=True, help="Print what would be purged; change nothing.")
@click.option("--batch", type=click.IntRange(min=1), default=2000, show_default=True, help="Reads per transaction.")
@click.pass_obj
def hq_retention(ctx, database, dry_run, batch):
    """Purge now what headquarters' daily run (in `waypost hq serve`) would: reads past
    retention.read_days (with an alert: retention.hit_read_days), their alerts, images and search
    rows, except reads under a headquarters legal hold; one access record for the run."""
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        result = hq_purge.run(ctx.settings, ctx.actor(), dry_run=dry_run, batch=batch)
    for line in result.lines():
        click.echo(line)
