"""`waypost sync ...` (the post's side) and `waypost hq ...` (headquarters)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from appliance import bundle, db
from appliance.cli.types import ROW_ID
from appliance.cli.holds import _when, filed_under, sync_off

HQ_DB_ENV = "WAYPOST_HQ_DATABASE"


@click.group(name="sync")
def sync_group():
    """Send this post's reads, images and access records to headquarters."""


@sync_group.command("keygen")
@click.pass_obj
def sync_keygen(ctx):
    """Make this post's signing key (if missing) and print what headquarters needs to enrol it."""
    s = ctx.settings
    try:
        key = bundle.post_key(s)
    except bundle.BundleError as exc:
        raise click.ClickException(str(exc))
    public = key.public_key()
    click.echo(f"post id:     {s.post.id}")
    click.echo(f"key id:      {bundle.key_id(public)}")
    click.echo(f"public key:  {bundle.public_key_file(s)}")
    click.echo(bundle.public_pem(public).decode().rstrip())
    click.echo(f"enrol it at headquarters: waypost hq enroll --post {s.post.id} --name NAME "
               f"--public-key {bundle.public_key_file(s).name}")


def _need_hq_url(s) -> None:
    if not s.sync.hq_url:
        raise click.ClickException("sync.hq_url is not set: set it in the config file "
                                   "(or WAYPOST_SYNC__HQ_URL) to headquarters' base URL")


@sync_group.command("push")
@click.option("--max-batches", type=click.IntRange(min=1), default=None, help="Stop after this many batches.")
@click.pass_obj
def sync_push(ctx, max_batches):
    """Send what headquarters does not hold yet, oldest first; a range is marked sent only once acknowledged."""
    from sync import post
    s = ctx.settings
    _need_hq_url(s)
    ctx.open()
    with db.connection():
        try:
            result = post.push(s, max_batches=max_batches)
        except post.SyncError as exc:
            raise click.ClickException(str(exc))
    for line in result.lines():
        click.echo(line)


@sync_group.command("status")
@click.option("--offline", is_flag=True, help="Do not ask headquarters for its position.")
@click.pass_obj
def sync_status(ctx, offline):
    """What waits to be sent, and (unless --offline) what headquarters holds."""
    from sync import post
    s = ctx.settings
    ctx.open()
    with db.connection():
        local = post.local_status(s)
    if sync_off(s):
        click.echo("sync is off on this post (sync.enabled is false, no sync.hq_url, no sync.hq_public_key): "
                   "reads waiting are kept until sync is set up or retention removes them")
    click.echo(f"reads waiting: {local['pending_reads']}"
               + (f", legal hold events waiting: {local['pending_holds']}" if local["pending_holds"] else "")
               + (f" (outbox seq {local['pending_from']}..{local['pending_to']})" if local["pending"] else ""))
    click.echo(f"acknowledged up to outbox seq {local['acked_seq']}"
               + (f", last at {local['last_acked_at']} UTC" if local["last_acked_at"] else ""))
    click.echo(f"access log head: record {local['chain_head']}")
    if local["unacked_batch"]:
        click.echo("a built batch waits for headquarters' answer (sent again on the next push)")
    if offline or not s.sync.hq_url:
        return
    try:
        pos = post.fetch_position(s)
    except post.SyncError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"headquarters holds outbox seq up to {pos.last_seq} and access records up to {pos.chain_seq}")
    with db.connection():
        problem = post.divergence(pos)
    if problem:
        raise click.ClickException(problem)


# --- headquarters ------------------------------------------------------------------------------

def _hq_target(ctx, database) -> str:
    return database or os.environ.get(HQ_DB_ENV) or str(ctx.settings.data_dir / "hq.sqlite")


def _key_dir(ctx, target: str):
    """Headquarters' key lives beside its SQLite file, or in data_dir with a database URL."""
    return ctx.settings.data_dir if "://" in target else None


database_option = click.option("--database", default=None,
                               help=f"Headquarters database: a SQLite file or a postgresql:// URL "
                                    f"(default: ${HQ_DB_ENV}, else hq.sqlite in data_dir).")


@click.group(name="hq")
def hq_group():
    """Headquarters: receive batches from posts, enrol posts, show their status, and serve the
    officers' search across every post.

    Headquarters keeps two databases: the posts' data (--database: a SQLite file or a
    postgresql:// URL) and its own accounts and access log (the configuration's data_dir, as on a
    post). Accounts are managed with the same commands as on a post, run with headquarters'
    configuration: `waypost user add`, `waypost user set-training`, `waypost audit verify`."""


@hq_group.command("serve")
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8090, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--max-batch-mb", type=click.IntRange(1, 1024), default=64, show_default=True,
              help="Largest batch body accepted (compressed).")
@click.pass_obj
def hq_serve(ctx, database, host, port, threads, max_batch_mb):
    """Serve headquarters (waitress) until interrupted: the sync API for the posts (signed, no
    session) and, for people signed in, the posts page and the search across every post
    (/hq/reads/search; a purpose and case number, and an access record, for every search, read
    and image). On first start it creates the accounts database in data_dir and an administrator,
    whose password it prints once (or takes from WAYPOST_ADMIN_PASSWORD), as `waypost init` does.
    It purges reads past retention daily at retention.run_at (see `waypost hq retention`)."""
    import threading

    import waitress

    from appliance.cli import _bootstrap, _report_bootstrap
    from appliance.service import ListenError, listen
    from sync.hq import retention as hq_retention, search as hq_search
    from web.hq import create_hq_app
    s = ctx.settings
    target = _hq_target(ctx, database)
    try:        # the port first: a port in use stops the start before anything is recorded
        sock = listen(host, port)
    except ListenError as exc:
        raise click.ClickException(f"{str(exc).split(';')[0]}; give `waypost hq serve` a free --port") from None
    _report_bootstrap(_bootstrap(s))
    app = create_hq_app(target, max_batch_mb * 1024 * 1024, settings=s)
    stop = threading.Event()
    hq_search.Indexer(stop).start()
    hq_retention.Daily(s, stop).start()     # the daily purge at retention.run_at (post.timezone)
    click.echo(f"headquarters on http://{host}:{port}/ (reads in {target}; accounts and access log in {s.db_path})")
    try:
        waitress.serve(app, sockets=[sock], threads=threads, max_request_body_size=max_batch_mb * 1024 * 1024 + 1)
    finally:
        stop.set()


def _hq_run(ctx, database, action, *args):
    """Open headquarters' database, run one action, and turn its refusal into a clean CLI error
    (as appliance.cli.Context.run does for the post)."""
    from sync import hq
    hq.open_hq(_hq_target(ctx, database))
    with hq.hq_database.connection_context():
        try:
            return action(*args)
        except hq.HQError as exc:
            raise click.ClickException(str(exc))


@hq_group.command("enroll")
@database_option
@click.option("--post", "post_id", required=True, help="The post's id (post.id in its config).")
@click.option("--name", default="", help="A name for people (default: the id).")
@click.option("--public-key", "public_key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The post's public key file (<key_file>.pub from `waypost sync keygen`).")
@click.option("--pull-url", default=None, help="The post's web address, for `waypost hq pull` (e.g. http://post-1:8080).")
@click.pass_obj
def hq_enroll(ctx, database, post_id, name, public_key, pull_url):
    """Enrol a post's public key (again, to replace it)."""
    from sync import hq
    post = _hq_run(ctx, database, hq.enroll, post_id, name, public_key.read_bytes(), pull_url)
    click.echo(f"enrolled post {post.id} ({post.name}), key id {post.key_id}")


@hq_group.command("keygen")
@database_option
@click.pass_obj
def hq_keygen(ctx, database):
    """Make headquarters' key (if missing) and print the value of sync.hq_public_key for the posts."""
    import base64
    from sync import hq
    target = _hq_target(ctx, database)
    key = hq.hq_key(target, _key_dir(ctx, target)).public_key()
    click.echo(f"key id: {bundle.key_id(key)}")
    click.echo(f"set on each post that headquarters may pull from: sync.hq_public_key = "
               f"\"{base64.b64encode(bundle.raw_public(key)).decode()}\"")


@hq_group.command("pull")
@database_option
@click.option("--post", "post_id", default=None, help="The post to pull from.")
@click.option("--all", "pull_all", is_flag=True, help="Every enrolled post with a pull URL.")
@click.option("--max-batches", type=click.IntRange(min=1), default=None, help="Per post.")
@click.pass_obj
def hq_pull(ctx, database, post_id, pull_all, max_batches):
    """Fetch what posts hold and headquarters does not (signed requests to each post's /sync/batch)."""
    from sync import hq
    if bool(post_id) == bool(pull_all):
        raise click.UsageError("give --post ID or --all")
    target = _hq_target(ctx, database)
    hq.open_hq(target)
    key = hq.hq_key(target, _key_dir(ctx, target))
    with hq.hq_database.connection_context():
        ids = [post_id] if post_id else [p.id for p in hq.HQPost.select().where(hq.HQPost.pull_url != "")]
    failed = False
    for pid in ids:
        result = hq.pull(pid, key, max_batches=max_batches)
        click.echo(result.line())
        failed = failed or bool(result.problem)
    if failed:
        raise click.ClickException("some posts could not be pulled from completely (see above)")


@hq_group.group("hotlist")
def hq_hotlist():
    """State lists published to the posts (each post fetches new or changed lists on contact)."""


@hq_hotlist.command("add")
@database_option
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def hq_hotlist_add(ctx, database, name, path):
    """Publish the CSV at PATH as list NAME (replacing the list of that name)."""
    from sync import hq
    published = _hq_run(ctx, database, hq.publish_hotlist, name, path.read_bytes())
    click.echo(f"published hotlist {published.name}: {published.size} bytes, sha256 {published.sha256[:16]}...")


@hq_hotlist.command("list")
@database_option
@click.pass_obj
def hq_hotlist_list(ctx, database):
    """The lists published to the posts."""
    from sync import hq
    hq.open_hq(_hq_target(ctx, database))
    with hq.hq_database.connection_context():
        rows = list(hq.HQHotlist.select(hq.HQHotlist.name, hq.HQHotlist.size, hq.HQHotlist.sha256,
                                        hq.HQHotlist.published_at).order_by(hq.HQHotlist.name))
    if not rows:
        click.echo("no hotlist published")
    for h in rows:
        click.echo(f"{h.name}: {h.size} bytes, published {h.published_at:%Y-%m-%d %H:%M} UTC, sha256 {h.sha256[:16]}...")


@hq_group.command("status")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def hq_status(ctx, database, as_json):
    """Each post: last contact, what is held, backlog, access log chain status."""
    from sync import hq
    hq.open_hq(_hq_target(ctx, database))
    with hq.hq_database.connection_context():
        rows = hq.status()
        for row in rows:
            ok, bad, message = hq.verify_chain(row["post"])
            row["chain_verified"] = ok
            row["chain_message"] = message
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        click.echo("no post enrolled")
    for r in rows:
        chain = ("verified" if r["chain_status"] == "verified" and r["chain_verified"]
                 else f"BROKEN (first bad record {r['first_bad_seq']}): {r['chain_problem'] or r['chain_message']}")
        click.echo(f"{r['post']} ({r['name']}): last contact {r['last_contact_at'] or 'never'}, {r['reads']} read(s), "
                   f"outbox seq {r['last_seq']}, backlog {r['backlog']}, access log up to {r['chain_seq']} {chain}")
        if r["last_refusal"]:
            click.echo(f"  last refusal: {r['last_refusal']['problem']}: {r['last_refusal']['message']}")


def _hq_open_both(ctx, database):
    """Headquarters' database, and its accounts database (data_dir) for the access record."""
    from sync import hq
    ctx.open()
    hq.open_hq(_hq_target(ctx, database))


@hq_group.group("hold")
def hq_hold():
    """Legal holds at headquarters: reads kept out of headquarters' purge (`waypost hq retention`).
    Each place, release and listing is recorded in headquarters' access log."""


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
    from sync import hq
    from sync.hq import holds as hq_holds
    if bool(post_id) == bool(all_posts):
        raise click.UsageError("give either --post ID or --all-posts")
    since_at, until_at = _when(since, "--from"), _when(until, "--to", end=True)
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        try:
            hold, covered = hq_holds.place(ctx.settings, ctx.actor(), post_id=post_id, plate=plate, mode=mode,
                                           since=since_at, until=until_at, purpose_code=purpose_code,
                                           case_number=case_number, reason=reason)
        except hq_holds.HoldError as exc:
            raise click.ClickException(str(exc))
    click.echo(f"hold {hold.id} placed under case {hold.case_number}: {hold.describe()}; "
               f"covers {covered} read(s) held now")


@hq_hold.command("release")
@database_option
@click.argument("hold_id", type=ROW_ID)
@click.option("--reason", required=True, help="Why the data no longer needs to be kept.")
@click.pass_obj
def hq_hold_release(ctx, database, hold_id, reason):
    """Release a hold (its reads become subject to retention again unless another hold covers them)."""
    from sync import hq
    from sync.hq import holds as hq_holds
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        try:
            hold = hq_holds.release(ctx.actor(), hold_id, reason)
        except hq_holds.HoldError as exc:
            raise click.ClickException(str(exc))
    click.echo(f"hold {hold.id} (case {hold.case_number}) released")


@hq_hold.command("list")
@database_option
@click.option("--active", is_flag=True, help="Only holds not released.")
@click.pass_obj
def hq_hold_list(ctx, database, active):
    """Holds with their case, what they cover and their state (the listing is recorded)."""
    from sync import hq
    from sync.hq import holds as hq_holds
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        rows = hq_holds.listing(ctx.actor(), active_only=active)
    if not rows:
        click.echo("no hold" + (" active" if active else "") + " at headquarters")
    for h in rows:
        state = "ACTIVE" if h.active else f"released {h.released_at:%Y-%m-%d} by {h.released_by}"
        click.echo(f"{h.id:>5} {h.case_number:<16} {h.describe()}  placed {h.placed_at:%Y-%m-%d} by "
                   f"{h.placed_by}  {state}  {h.reason}")


@hq_group.command("retention")
@database_option
@click.option("--dry-run", is_flag=True, help="Print what would be purged; change nothing.")
@click.option("--batch", type=click.IntRange(min=1), default=2000, show_default=True, help="Reads per transaction.")
@click.pass_obj
def hq_retention(ctx, database, dry_run, batch):
    """Purge now what headquarters' daily run (in `waypost hq serve`) would: reads past
    retention.read_days (with an alert: retention.hit_read_days), their alerts, images and search
    rows, except reads under a headquarters legal hold; one access record for the run."""
    from sync import hq
    from sync.hq import retention
    _hq_open_both(ctx, database)
    with db.connection(), hq.hq_database.connection_context():
        result = retention.run(ctx.settings, ctx.actor(), dry_run=dry_run, batch=batch)
    for line in result.lines():
        click.echo(line)


@click.command("sync")
@click.option("-n", "count", default=20_000, show_default=True, help="Reads in the backlog.")
@click.option("--batch-max-reads", default=1000, show_default=True)
@click.option("--mode", type=click.Choice(["push", "pull", "all"]), default="all", show_default=True)
@click.option("--hq", "hq_kind", type=click.Choice(["sqlite", "postgresql", "all"]), default=None,
              help="Headquarters' database (default: all with --hq-database, else sqlite).")
@click.option("--hq-database", default=None, help="The postgresql:// URL of the PostgreSQL runs (its hq tables "
                                                  "are emptied first); SQLite runs use a file in the scratch directory.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch directory; reuse it to skip the fill next time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run instead of one line.")
def bench_sync(count, batch_max_reads, mode, hq_kind, hq_database, where, as_json):
    """Reads per second sent over loopback to headquarters from a backlog with 5 KB crops, by push
    and by pull, into SQLite and PostgreSQL, with the peak resident memory of the post and of
    headquarters (each in its own process) and the load average before and after each run."""
    import tempfile

    from appliance.bench import sync as bench
    hq_kind = hq_kind or ("all" if hq_database else "sqlite")
    kinds = ["sqlite", "postgresql"] if hq_kind == "all" else [hq_kind]
    if "postgresql" in kinds and not (hq_database or "").startswith(("postgresql://", "postgres://")):
        raise click.UsageError("the PostgreSQL runs need --hq-database postgresql://user@host:port/database")
    modes = list(bench.MODES) if mode == "all" else [mode]
    where = where or Path(tempfile.mkdtemp(prefix="waypost-bench-sync-"))     # one fill for every run
    for one_mode in modes:
        for kind in kinds:
            try:
                figures = bench.run(count, where, batch_max_reads, hq_database=hq_database if kind == "postgresql"
                                    else None, mode=one_mode)
            except RuntimeError as exc:
                raise click.ClickException(str(exc))
            click.echo(json.dumps(figures) if as_json else bench.line(figures))


@click.command("hq-search")
@click.option("-n", "count", default=300_000, show_default=True, help="Synthetic reads at headquarters.")
@click.option("--hq-database", default=None, help="An EMPTY postgresql:// database; default: a SQLite file in "
                                                  "a scratch directory.")
@click.option("--repeat", default=5, show_default=True, help="Runs of each search (the median is printed).")
def bench_hq_search(count, hq_database, repeat):
    """Milliseconds per search page at headquarters (exact, wildcard, contains, similar) over a
    database of N reads, and the time to index them for the search."""
    import tempfile

    from sync import hq
    from sync.hq import search as hq_search
    target = hq_database or str(Path(tempfile.mkdtemp(prefix="waypost-bench-hq-search-")) / "hq.sqlite")
    try:
        click.echo(json.dumps(hq_search.bench(target, count, repeat)))
    except hq.HQError as exc:
        raise click.ClickException(str(exc))


def register(main) -> None:
    main.add_command(sync_group)
    main.add_command(hq_group)
    bench = main.commands.get("bench")
    if isinstance(bench, click.Group):
        bench.add_command(bench_sync)
        bench.add_command(bench_hq_search)
