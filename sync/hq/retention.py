"""Retention at headquarters: the daily purge of every post's reads past their retention period.

Headquarters keeps its copy for the period the post keeps its own (the same `retention` settings,
from headquarters' configuration): a read is purged when it was captured before now -
`retention.read_days` (a read with an alert in hq_alert: before now - `retention.hit_read_days`),
unless an active legal hold covers it (sync/hq/holds.py: placed at headquarters, or placed at a
post and arrived with its batches; both are honoured alike). A read is purged with its
alerts, its rows in the search index (hq_read_text) and the images no remaining read uses.

What the purge never touches: the posts' access logs (hq_access_record: a post's chain must still
verify from its first record), the batch log (hq_batch) and each post's position (hq_post): a post
resumes after what headquarters acknowledged, purged or not, so nothing purged is sent again.

As on the post (appliance/retention.py): a run works in batches of `batch` reads, oldest first by
(captured_at, id) keyset, one write transaction each, so ingest and searches go on between
batches; its counts are kept in `hq_retention_run` as it goes; it writes ONE access record,
`retention.purge` with "at": "headquarters", with the counts, the cutoffs and the oldest and
newest purged capture times, when it closes the run; a run that was interrupted is recorded by
the next. The access log is headquarters' own (the accounts database under data_dir), so the
record is committed inside the transaction that closes the run, just before it.

Before purging, a run brings the search index up to date (hq_search.catch_up), and only indexed
reads are purged: a hold matches a read's alternatives through the index, so a read whose texts
are not indexed yet waits for the next run. Each batch holds the indexer's lock, so the indexer
of the same process (`waypost hq serve`) cannot add texts for a read being purged; index rows
left by an indexer in another process are swept at the end of each run.

Images are content-addressed: one image may serve many reads (two plates in one picture, and a
frozen camera or a looping source sending byte-identical crops and frames for hours). Which reads
use which image is in hq_read_image (written by ingest with each read), so an image goes when no
remaining read names it, counted exactly. A post sends every image with its read, so a read
arriving later with an image purged meanwhile stores it again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field

from appliance import audit
from appliance import db as accounts
from appliance.audit import system_actor
from appliance.config import Settings
from appliance.models import utcnow
from appliance.retention import due_after
from sync.hq import search as hq_search
from sync.hq.holds import HELD_SQL
from sync.hq.models import HQRetentionRun, hq_database, lock_images
from sync.hq.models import write as hq_write

log = logging.getLogger(__name__)

BATCH = 2000

audit.register_action("retention.purge", False)

HAS_ALERT = "EXISTS (SELECT 1 FROM hq_alert a WHERE a.post_id = r.post_id AND a.read_uuid = r.uuid)"
INDEXED = "EXISTS (SELECT 1 FROM hq_read_text t WHERE t.read_id = r.id)"


@dataclass
class Result:
    dry_run: bool
    read_cutoff: str
    hit_cutoff: str
    reads: int = 0
    hit_reads: int = 0
    alerts: int = 0
    images: int = 0
    texts: int = 0
    oldest_at: str | None = None
    newest_at: str | None = None
    held_kept: int = 0
    unindexed_kept: int = 0
    batches: int = 0
    seconds: float = 0.0
    run_id: int | None = None
    interrupted_runs: list[dict] = field(default_factory=list)
    stopped: bool = False

    def lines(self) -> list[str]:
        verb = "would purge" if self.dry_run else "purged"
        out = [
            (
                f"{verb} {self.reads} read(s) at headquarters ({self.hit_reads} with alerts): captured before "
                f"{self.read_cutoff} UTC (reads with alerts before {self.hit_cutoff} UTC)"
            )
        ]
        if self.reads:
            out.append(f"  captured from {self.oldest_at} to {self.newest_at} UTC")
        images = f"up to {self.images}" if self.dry_run else str(self.images)
        out.append(f"  {self.alerts} alert(s), {images} image(s), {self.texts} search index row(s)")
        out.append(f"kept under legal hold: {self.held_kept} read(s) past their retention period")
        if self.unindexed_kept:
            out.append(f"kept until indexed for the search (next run): {self.unindexed_kept} read(s)")
        for run in self.interrupted_runs:
            out.append(f"recorded interrupted run {run['id']}: {run['reads']} read(s) purged before it stopped")
        if not self.dry_run:
            out.append(
                f"{self.batches} batch(es) in {self.seconds:.1f} s"
                f"{' (stopped early: the rest goes in the next run)' if self.stopped else ''}"
            )
        return out


def _text(value: dt.datetime) -> str:
    """A time as hq_read.captured_at is written (the post's isoformat), for string comparison."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def cutoffs(settings: Settings, now: dt.datetime | None = None) -> tuple[str, str]:
    now = now or utcnow()
    r = settings.retention
    return _text(now - dt.timedelta(days=r.read_days)), _text(now - dt.timedelta(days=r.hit_read_days))


def _past(p: str) -> str:
    """Reads past their period: parameters (max cutoff, read cutoff, hit cutoff). The first term
    lets the database walk the capture-time index instead of the table."""
    return (
        f"r.captured_at < {p} AND ((r.captured_at < {p} AND NOT {HAS_ALERT}) OR (r.captured_at < {p} AND {HAS_ALERT}))"
    )


def _params(read_cut: str, hit_cut: str) -> list[str]:
    return [max(read_cut, hit_cut), read_cut, hit_cut]


def _count(sql: str, args) -> int:
    return hq_database.execute_sql(sql, args).fetchone()[0]


def _kept(read_cut: str, hit_cut: str) -> tuple[int, int]:
    """Reads past their period kept by a hold, and kept until the search index has them."""
    p = hq_database.param
    args = _params(read_cut, hit_cut)
    held = _count(f"SELECT count(*) FROM hq_read r WHERE {_past(p)} AND {HELD_SQL}", args)
    unindexed = _count(f"SELECT count(*) FROM hq_read r WHERE {_past(p)} AND NOT {INDEXED} AND NOT {HELD_SQL}", args)
    return held, unindexed


def plan(settings: Settings, now: dt.datetime | None = None) -> Result:
    """What a run would purge now, changing nothing (the dry run). Reads the search index does not
    hold yet are counted as their plate alone decides (the run indexes them first)."""
    db = hq_database
    p = db.param
    read_cut, hit_cut = cutoffs(settings, now)
    result = Result(True, read_cut, hit_cut)
    where = f"{_past(p)} AND NOT {HELD_SQL}"
    args = _params(read_cut, hit_cut)
    with db.atomic():  # one snapshot for every count (SQLite; PostgreSQL's read committed is close)
        result.reads, result.oldest_at, result.newest_at = db.execute_sql(
            f"SELECT count(*), min(r.captured_at), max(r.captured_at) FROM hq_read r WHERE {where}", args
        ).fetchone()
        result.hit_reads = _count(f"SELECT count(*) FROM hq_read r WHERE {where} AND {HAS_ALERT}", args)
        result.alerts = _count(
            f"SELECT count(*) FROM hq_alert a JOIN hq_read r ON r.post_id = a.post_id "
            f"AND r.uuid = a.read_uuid WHERE {where}",
            args,
        )
        result.texts = _count(
            f"SELECT count(*) FROM hq_read_text t JOIN hq_read r ON r.id = t.read_id WHERE {where}", args
        )
        result.images = _count(
            f"SELECT count(DISTINCT i.sha256) FROM hq_read_image i JOIN hq_read r ON r.id = i.read_id WHERE {where}",
            args,
        )
        result.held_kept, _ = _kept(read_cut, hit_cut)
    return result


def _record(actor: audit.Actor, run_id: int, interrupted: bool = False, stopped: bool = False) -> dict:
    """Close a run and write its one access record; in the caller's headquarters write transaction."""
    run = HQRetentionRun.get_by_id(run_id)
    row = {
        "id": run.id,
        "started_at": run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        "read_cutoff": run.read_cutoff,
        "hit_cutoff": run.hit_cutoff,
        "reads": run.reads,
        "hit_reads": run.hit_reads,
        "alerts": run.alerts,
        "images": run.images,
        "texts": run.texts,
        "oldest_at": run.oldest_at,
        "newest_at": run.newest_at,
    }
    details = {k: v for k, v in row.items() if k != "id"}
    if interrupted:
        details["interrupted"] = True
    if stopped:
        details["stopped"] = True  # the server was stopping; the rest is purged by the next run
    run.finished_at = utcnow()
    run.save()
    with accounts.write():
        audit.record(
            "retention.purge",
            actor,
            query={"at": "headquarters", "read_cutoff": run.read_cutoff, "hit_cutoff": run.hit_cutoff},
            objects=[f"hq_retention_run:{run.id}"],
            result_count=run.reads,
            details=details,
        )
    return row


def _purge_batch(run: HQRetentionRun, after: tuple | None, args: list[str], batch: int) -> tuple | None:
    """One transaction: up to `batch` reads after the keyset `after`, deleted with their alerts,
    index rows and unshared images. Returns the new keyset, or None when nothing was left."""
    db = hq_database
    p = db.param
    with hq_search._lock, hq_write():
        keyset, keyset_args = "", []
        if after is not None:
            keyset = f" AND r.captured_at >= {p} AND NOT (r.captured_at = {p} AND r.id <= {p})"
            keyset_args = [after[0], after[0], after[1]]
        rows = db.execute_sql(
            f"SELECT r.id, r.post_id, r.uuid, r.captured_at, {HAS_ALERT} FROM hq_read r "
            f"WHERE r.captured_at < {p}{keyset} AND {_past(p)} AND {INDEXED} AND NOT {HELD_SQL} "
            f"ORDER BY r.captured_at, r.id LIMIT {p}",
            [args[0], *keyset_args, *args, batch],
        ).fetchall()
        if not rows:
            return None
        ids = [r[0] for r in rows]
        marks = ", ".join([p] * len(ids))
        texts = db.execute_sql(f"DELETE FROM hq_read_text WHERE read_id IN ({marks})", ids).rowcount
        by_post: dict[str, list[str]] = {}
        for r in rows:
            by_post.setdefault(r[1], []).append(r[2])
        alerts = 0
        for post_id, uuids in by_post.items():
            alerts += db.execute_sql(
                f"DELETE FROM hq_alert WHERE post_id = {p} AND read_uuid IN ({', '.join([p] * len(uuids))})",
                [post_id, *uuids],
            ).rowcount
        # the images only these reads use: their references go first, then each image no
        # remaining read names (counted exactly: a frozen camera sends the same bytes for hours)
        shas = [
            row[0]
            for row in db.execute_sql(f"SELECT DISTINCT sha256 FROM hq_read_image WHERE read_id IN ({marks})", ids)
        ]
        db.execute_sql(f"DELETE FROM hq_read_image WHERE read_id IN ({marks})", ids)
        db.execute_sql(f"DELETE FROM hq_read WHERE id IN ({marks})", ids)
        images = 0
        lock_images(shas, exclusive=True)  # a batch naming one of them commits first, or waits
        for start in range(0, len(shas), 500):
            page = shas[start : start + 500]
            images += db.execute_sql(
                f"DELETE FROM hq_image WHERE sha256 IN ({', '.join([p] * len(page))}) AND NOT EXISTS "
                "(SELECT 1 FROM hq_read_image ri WHERE ri.sha256 = hq_image.sha256)",
                page,
            ).rowcount
        captured = [str(r[3]) for r in rows]
        run.reads += len(rows)
        run.hit_reads += sum(bool(r[4]) for r in rows)
        run.alerts += alerts
        run.images += images
        run.texts += texts
        run.oldest_at = min(run.oldest_at or captured[0], min(captured))
        run.newest_at = max(run.newest_at or captured[-1], max(captured))
        run.save()
    return rows[-1][3], rows[-1][0]


def _sweep_texts(run: HQRetentionRun, before: str) -> None:
    """Index rows of reads no longer held (written by an indexer in another process meanwhile)."""
    db = hq_database
    p = db.param
    with hq_search._lock, hq_write():
        swept = db.execute_sql(
            f"DELETE FROM hq_read_text WHERE captured_at < {p} AND NOT EXISTS "
            f"(SELECT 1 FROM hq_read r WHERE r.id = hq_read_text.read_id)",
            [before],
        ).rowcount
        if swept:
            run.texts += swept
            run.save()


def run(
    settings: Settings,
    actor: audit.Actor,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    batch: int = BATCH,
    progress=None,
    stop: threading.Event | None = None,
) -> Result:
    """Purge what is past retention at headquarters (see the module docstring). Needs
    headquarters' database and its accounts database connected. `progress(batches)` is called
    after each batch; a set `stop` ends the run after the current batch (recorded as stopped)."""
    if dry_run:
        return plan(settings, now)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    read_cut, hit_cut = cutoffs(settings, now)
    started = time.perf_counter()
    hq_search.catch_up(full=True)
    interrupted = []
    with hq_write():
        for unfinished in (
            HQRetentionRun.select(HQRetentionRun.id)
            .where(HQRetentionRun.finished_at.is_null())
            .order_by(HQRetentionRun.id)
        ):
            interrupted.append(_record(actor, unfinished.id, interrupted=True))
        current = HQRetentionRun.create(read_cutoff=read_cut, hit_cutoff=hit_cut)
    args = _params(read_cut, hit_cut)
    after, batches, stopped = None, 0, False
    while True:
        after = _purge_batch(current, after, args, batch)
        if after is None:
            break
        batches += 1
        if progress:
            progress(batches)
        if stop is not None and stop.is_set():
            stopped = True
            break
    _sweep_texts(current, args[0])
    held, unindexed = _kept(read_cut, hit_cut)
    with hq_write():
        row = _record(actor, current.id, stopped=stopped)
    return Result(
        False,
        read_cut,
        hit_cut,
        row["reads"],
        row["hit_reads"],
        row["alerts"],
        row["images"],
        row["texts"],
        row["oldest_at"],
        row["newest_at"],
        held,
        unindexed,
        batches,
        round(time.perf_counter() - started, 2),
        current.id,
        interrupted,
        stopped,
    )


# -- the daily run ---------------------------------------------------------------------------------


def due(settings: Settings, now: dt.datetime | None = None) -> bool:
    """Today (in post.timezone) at retention.run_at or later, and no run started today yet: a
    headquarters that was down at run_at purges when it comes back that day (the post's rule)."""
    return due_after(
        settings, lambda: hq_database.execute_sql("SELECT max(started_at) FROM hq_retention_run").fetchone()[0], now
    )


class Daily(threading.Thread):
    """`waypost hq serve`'s daily purge: looks every `interval_s` whether today's run is due. A
    failure is logged and never ends the thread: a run that could not start is tried at the next
    look; one that started counts as today's, and the next day's run records what it purged."""

    def __init__(self, settings: Settings, stop: threading.Event, interval_s: float = 60.0):
        super().__init__(name="hq-retention", daemon=True)
        self.settings, self.stop, self.interval_s = settings, stop, interval_s

    def run(self) -> None:
        while not self.stop.is_set():
            self.tick()
            self.stop.wait(self.interval_s)

    def tick(self) -> Result | None:
        try:
            with accounts.connection(), hq_database.connection_context():
                if not due(self.settings):
                    return None
                result = run(self.settings, system_actor(self.settings), stop=self.stop)
            log.info("headquarters retention: %s", "; ".join(result.lines()))
            return result
        except Exception:  # a busy or unreachable database: the next look tries again
            log.exception("headquarters retention run failed")
            return None
