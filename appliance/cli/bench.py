"""`waypost bench ...`: measure this machine (prints figures; changes only a scratch directory).
Each command runs a script of appliance/bench/; `waypost retention bench` is with retention."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from appliance.bench import audit as audit_bench
from appliance.bench import forged_batch as forged_batch_bench
from appliance.bench import hotlist_import as hotlist_import_bench
from appliance.bench import hq_search as hq_search_bench
from appliance.bench import live_page as live_page_bench
from appliance.bench import pipeline as pipeline_bench
from appliance.bench import search as search_bench
from appliance.bench import search_lock as search_lock_bench
from appliance.bench import store as store_bench
from appliance.bench import sync as sync_bench
from appliance.cli.context import unattended
from sync.hq import HQError


@click.group(name="bench")
def bench_group():
    """Measure throughput on this machine (prints figures; changes only a scratch directory)."""


@unattended("a benchmark in a scratch directory")
@bench_group.command("store")
@click.option("-n", "count", default=2000, show_default=True, help="Reads to store.")
@click.option(
    "--dir",
    "where",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Scratch directory (default: a temporary one).",
)
def bench_store(count, where):
    """Reads stored per second: one transaction per read, a noisy 720p frame and its crop at the
    configured JPEG quality, fsynced; and the disk a year of reads needs."""
    click.echo(json.dumps(store_bench.store(count, where)))


@unattended("a benchmark in a scratch directory")
@bench_group.command("audit")
@click.option("-n", "count", default=1_000_000, show_default=True, help="Access records to append.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_audit(count, where):
    """Access-log appends per second and `audit verify` records per second."""
    click.echo(json.dumps(audit_bench.audit_chain(count, where)))


@unattended("a benchmark in a scratch directory")
@bench_group.command("report")
@click.option("-n", "count", default=1_000_000, show_default=True, help="Access records in the scratch log.")
@click.option(
    "--dir",
    "where",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Scratch directory; reuse it to skip the fill next time.",
)
def bench_report(count, where):
    """Seconds for the quarterly audit (with and without the chain verification) over a quarter of
    COUNT access records."""
    click.echo(json.dumps(audit_bench.report(count, where)))


@unattended("a benchmark in a scratch directory")
@bench_group.command("pipeline")
@click.option("--seconds", default=60.0, show_default=True, help="Length of the synthetic clip.")
@click.option("--size", default="1920x1080", show_default=True, help="Frame size WIDTHxHEIGHT.")
@click.option("--fps", default=10.0, show_default=True)
@click.option("--vehicles-per-min", default=20.0, show_default=True)
@click.option("--empty", is_flag=True, help="An empty road: what motion gating saves.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_pipeline(seconds, size, fps, vehicles_per_min, empty, where):
    """Frames/s through the whole pipeline, reads per vehicle pass and alert correctness on a demo clip."""
    width, height = (int(v) for v in size.lower().split("x"))
    click.echo(json.dumps(pipeline_bench.pipeline(seconds, width, height, fps, vehicles_per_min, where, empty)))


@unattended("a benchmark in a scratch directory")
@bench_group.command("search")
@click.option("-n", "count", default=10_000_000, show_default=True, help="Reads in the scratch database.")
@click.option("--queries", default=100, show_default=True, help="Searches of each kind to time.")
@click.option(
    "--dir",
    "where",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Scratch directory; reuse it to skip the fill next time.",
)
def bench_search(count, queries, where):
    """First-page latency of exact, wildcard, partial and similar plate searches, and database
    bytes per read, on a scratch database filled with synthetic reads."""

    def progress(done, total, seconds):
        if done % 500_000 < 20_000 or done == total:
            click.echo(f"filled {done:,}/{total:,} reads in {seconds:.0f} s", err=True)

    click.echo(json.dumps(search_bench.search_at_scale(count, where, queries, progress=progress)))


@unattended("a benchmark in a scratch directory")
@bench_group.command("search-lock")
@click.option("-n", "count", default=10_000_000, show_default=True, help="Reads in the scratch database.")
@click.option("--seconds", default=30.0, show_default=True, help="Length of the baseline and of each phase.")
@click.option("--searchers", default=2, show_default=True, help="Officers' search loops running at once.")
@click.option("--pace", "pace_s", default=0.2, show_default=True, help="Seconds between two reads the pipeline stores.")
@click.option(
    "--phase",
    "phases",
    type=click.Choice(search_lock_bench.PHASES),
    multiple=True,
    help="Run only these phases (repeat the option; default: all).",
)
@click.option(
    "--dir",
    "where",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Scratch directory; reuse it (or `bench search`'s) to skip the fill next time.",
)
def bench_search_lock(count, seconds, searchers, pace_s, phases, where):
    """Milliseconds the pipeline's writes wait (save_read, and the write lock alone) while
    officers' loops run the heaviest searches the post allows (the wildcard 1?1?1?1 over the
    window of just under search.MAX_SCAN reads, over a year, and from one account), beside a
    baseline without searches. The last line is JSON; the goal is a maximum of 250 ms."""

    def progress(done, total, seconds):
        if done % 500_000 < 20_000 or done == total:
            click.echo(f"filled {done:,}/{total:,} reads in {seconds:.0f} s", err=True)

    figures = search_lock_bench.run(
        count, where, seconds, searchers, pace_s, tuple(phases) or search_lock_bench.PHASES, progress=progress
    )
    click.echo(json.dumps(figures))


@unattended("a benchmark in a scratch directory")
@bench_group.command("live-page")
@click.option("--loads", default=30, show_default=True, help="Reloads to time.")
@click.option("--no-capture", is_flag=True, help="Without the demo capture running beside the web UI.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_live_page(loads, no_capture, where):
    """Load time of the live view in chromium with a warm cache (needs the dev requirements)."""
    try:
        click.echo(json.dumps(live_page_bench.live_page(loads, where, capture=not no_capture)))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


@unattended("a benchmark in a scratch directory")
@bench_group.command("sync")
@click.option("-n", "count", default=20_000, show_default=True, help="Reads in the backlog.")
@click.option("--batch-max-reads", default=1000, show_default=True)
@click.option("--mode", type=click.Choice(["push", "pull", "all"]), default="all", show_default=True)
@click.option(
    "--hq",
    "hq_kind",
    type=click.Choice(["sqlite", "postgresql", "all"]),
    default=None,
    help="Headquarters' database (default: all with --hq-database, else sqlite).",
)
@click.option(
    "--hq-database",
    default=None,
    help="The postgresql:// URL of the PostgreSQL runs (its hq tables "
    "are emptied first); SQLite runs use a file in the scratch directory.",
)
@click.option(
    "--dir",
    "where",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Scratch directory; reuse it to skip the fill next time.",
)
@click.option(
    "--frame-kb",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2000),
    help="Give each read a context frame of about this many KB, sent in the second lane (0: crops only).",
)
@click.option(
    "--link-mbit",
    default=None,
    type=click.FloatRange(0.1, 10_000),
    help="Send through a relay that paces each direction to this many Mbit/s (default: loopback unthrottled).",
)
@click.option(
    "--until",
    type=click.Choice(["all", "main"]),
    default="all",
    show_default=True,
    help="main: stop the post once every read and crop is at headquarters (frames over a slow link take hours).",
)
@click.option("--max-kbps", default=0, show_default=True, type=click.IntRange(0), help="The post's sync.max_kbps.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run instead of one line.")
def bench_sync(
    count, batch_max_reads, mode, hq_kind, hq_database, where, frame_kb, link_mbit, until, max_kbps, as_json
):
    """Reads per second sent over loopback to headquarters from a backlog with 5 KB crops, by push
    and by pull, into SQLite and PostgreSQL, with the peak resident memory of the post and of
    headquarters (each in its own process) and the load average before and after each run. With
    --frame-kb and --link-mbit: when every read and crop, and when every frame, was at headquarters
    over a slow link. The last line is every run's figures as JSON."""
    hq_kind = hq_kind or ("all" if hq_database else "sqlite")
    kinds = ["sqlite", "postgresql"] if hq_kind == "all" else [hq_kind]
    if "postgresql" in kinds and not (hq_database or "").startswith(("postgresql://", "postgres://")):
        raise click.UsageError("the PostgreSQL runs need --hq-database postgresql://user@host:port/database")
    modes = list(sync_bench.MODES) if mode == "all" else [mode]
    where = where or Path(tempfile.mkdtemp(prefix="waypost-bench-sync-"))  # one fill for every run
    runs: list[dict] = []
    for one_mode in modes:
        for kind in kinds:
            try:
                figures = sync_bench.run(
                    count,
                    where,
                    batch_max_reads,
                    hq_database=hq_database if kind == "postgresql" else None,
                    mode=one_mode,
                    frame_bytes=frame_kb * 1000,
                    link_mbit=link_mbit,
                    until=until,
                    max_kbps=max_kbps,
                )
            except RuntimeError as exc:
                raise click.ClickException(str(exc)) from exc
            runs.append(figures)
            click.echo(json.dumps(figures) if as_json else sync_bench.line(figures))
    if not as_json:
        click.echo(json.dumps(runs))


@unattended("a benchmark in a scratch directory")
@bench_group.command("hq-search")
@click.option("-n", "count", default=300_000, show_default=True, help="Synthetic reads at headquarters.")
@click.option(
    "--hq-database",
    default=None,
    help="An EMPTY postgresql:// database; default: a SQLite file in a scratch directory.",
)
@click.option("--repeat", default=5, show_default=True, help="Runs of each search (the median is printed).")
def bench_hq_search(count, hq_database, repeat):
    """Milliseconds per search page at headquarters (exact, wildcard, contains, similar) over a
    database of N reads, and the time to index them for the search."""
    target = hq_database or str(Path(tempfile.mkdtemp(prefix="waypost-bench-hq-search-")) / "hq.sqlite")
    try:
        click.echo(json.dumps(hq_search_bench.run(target, count, repeat)))
    except HQError as exc:
        raise click.ClickException(str(exc)) from exc


@unattended("a benchmark in a scratch directory")
@bench_group.command("hotlist-import")
@click.option("-n", "count", default=1_000_000, show_default=True, help="Lines in the generated state extract.")
@click.option(
    "--dir",
    "where",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Scratch directory; reuse it to skip generating the file next time.",
)
def bench_hotlist_import(count, where):
    """Seconds and peak resident memory of a state list import of COUNT lines, each import in a
    process of its own: a first import, then one that replaces it."""
    try:
        click.echo(json.dumps(hotlist_import_bench.run(count, where)))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


@unattended("a benchmark in a scratch directory")
@bench_group.command("forged-batch")
@click.option("--forged", default=30, show_default=True, help="Forged pushes to send.")
@click.option("--parallel", default=3, show_default=True, help="Forged pushes at a time.")
@click.option("--unpacked-mb", default=250, show_default=True, help="MiB the forged batch unpacks to.")
@click.option("--reads", default=100, show_default=True, help="Reads in each genuine batch.")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_forged_batch(forged, parallel, unpacked_mb, reads, where):
    """What a forged batch (a bomb, signed by a random key) costs a real headquarters process:
    its answer, headquarters' CPU and memory for it, whether it waited for the write lock, and how
    long a genuine post's batch takes alone and while forged pushes go on. The last line is JSON."""
    try:
        figures = forged_batch_bench.run(where, forged, parallel, unpacked_mb, reads)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in forged_batch_bench.lines(figures):
        click.echo(line)
    click.echo(json.dumps(figures))
