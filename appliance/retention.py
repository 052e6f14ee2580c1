"""Retention: the daily purge of reads past their retention period, and their images.

A read is purged when it is older than `retention.read_days` (a read with a hotlist alert: older
than `retention.hit_read_days`), unless an active legal hold covers it (appliance/holds.py), and,
when the post syncs (sync.enabled, or sync.hq_public_key set so that headquarters pulls from it),
unless headquarters has not received it yet (its outbox row is not marked sent) and
`retention.purge_unsent` is off.

A purge works in batches of at most `batch` reads, one write transaction each, sized as it goes
(appliance.db.Paced) to hold the lock about half a second on this machine and leaving it free
between batches, so that searches (which write their access record) and new reads wait at most
about one batch, never the whole purge. Each batch removes, together, the
reads' search index entries (search.unindex_read), their outbox rows, the reads themselves and by
ON DELETE CASCADE their evidence rows, alerts, alert confirmations and hold_read rows of released
holds, and it updates the run's counts in `retention_run`.

Image files are content-addressed (evidence/ab/cd/<sha256>.jpg), so two reads may share one. A
batch notes the sha256 of each image no remaining evidence row references in `retention_file`,
in its own transaction; the files are unlinked after the commit, their directories fsynced, and
the notes removed. A crash in between leaves notes that the next run settles first (and
`waypost db check` reports the files as orphans meanwhile), so a purged image never stays on disk
for good. A note is checked again before its file goes: a read stored since then with identical
bytes keeps it. (A write racing the unlink with byte-identical image bytes - save_read found the
file present before our unlink and commits after it - would lose its file; a JPEG identical to
one a year old does not happen in practice, and `db check` would name the read.)

Each run writes ONE access record, `retention.purge`, with the counts and the oldest and newest
purged capture times, in the transaction that closes the run. A run that was interrupted is
recorded by the next run (details.interrupted), so no purge goes unrecorded.

Access records are NOT purged, whatever `retention.audit_days` says: deleting the oldest records
would break the hash chain at its start (verify() requires seq 1 and the genesis link), and a
verifiable chain is worth more than the space. They will be purged once the chain has checkpoints
(a signed (seq, hash) from which verification can start); until then each run reports how many
records are past `audit_days`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import overload
from zoneinfo import ZoneInfo

from appliance import audit, search
from appliance.config import Settings
from appliance.db import Paced, write
from appliance.holds import HELD_SQL
from appliance.models import database, utcnow
from appliance.store import EvidenceStore

BATCH = 10_000  # the most reads in one transaction (the pace keeps each to about half a second)
FIRST_BATCH = 500
LEAST_BATCH = 50
FILES = 5000  # the most image notes settled in one transaction
# WAL pages a purge lets accumulate before a checkpoint (~200 MB at 4 KiB pages). A purge rewrites
# the same index pages batch after batch; checkpointing every 1,000 pages (SQLite's default) wrote
# each of them back again and again and doubled the time of a large purge (bench: 4,500 -> 6,800
# reads/s at 10 M reads). Set on the purging connection only, for the run, and restored after.
WAL_PAGES = 50_000

audit.register_action("retention.purge", False)


@dataclass
class Result:
    dry_run: bool
    read_cutoff: str
    hit_cutoff: str
    reads: int = 0
    hit_reads: int = 0
    evidence_rows: int = 0
    alerts: int = 0
    outbox_rows: int = 0
    files: int = 0
    oldest_at: str | None = None
    newest_at: str | None = None
    held_kept: int = 0
    unsent_kept: int = 0
    audit_past_retention: int = 0
    batches: int = 0
    seconds: float = 0.0
    interrupted_runs: list[dict] = field(default_factory=list)
    stopped: bool = False

    def lines(self) -> list[str]:
        verb = "would purge" if self.dry_run else "purged"
        out = [
            f"{verb} {self.reads} read(s) ({self.hit_reads} with hotlist alerts): captured before "
            f"{self.read_cutoff} UTC (reads with alerts before {self.hit_cutoff} UTC)"
        ]
        if self.reads:
            out.append(f"  captured from {self.oldest_at} to {self.newest_at} UTC")
        out.append(
            f"  {self.evidence_rows} evidence row(s), {self.files} image file(s), {self.alerts} alert(s), "
            f"{self.outbox_rows} outbox row(s)"
        )
        out.append(f"kept under legal hold: {self.held_kept} read(s) past their retention period")
        if self.unsent_kept:
            out.append(
                f"kept until headquarters acknowledges them: {self.unsent_kept} read(s) (retention.purge_unsent is off)"
            )
        if self.audit_past_retention:
            out.append(
                f"access records older than retention.audit_days: {self.audit_past_retention} (kept: the "
                "chain has no checkpoints yet, and deleting its start would make it unverifiable)"
            )
        for run in self.interrupted_runs:
            out.append(f"recorded interrupted run {run['id']}: {run['reads']} read(s) purged before it stopped")
        if not self.dry_run:
            out.append(
                f"{self.batches} batch(es) in {self.seconds:.1f} s"
                + (" (stopped early: the rest goes in the next run)" if self.stopped else "")
            )
        return out


def cutoffs(settings: Settings, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    now = now or utcnow()
    r = settings.retention
    return now - dt.timedelta(days=r.read_days), now - dt.timedelta(days=r.hit_read_days)


def _where(settings: Settings) -> str:
    """Reads past retention that may go: parameters (read_cutoff, hit_cutoff)."""
    has_alert = "EXISTS (SELECT 1 FROM alert a WHERE a.read_id = r.id)"
    clauses = [f"((r.captured_at < ? AND NOT {has_alert}) OR (r.captured_at < ? AND {has_alert}))", f"NOT {HELD_SQL}"]
    if _keep_unsent(settings):
        clauses.append(_UNSENT_SQL.replace("EXISTS", "NOT EXISTS", 1))
    return " AND ".join(clauses)


_UNSENT_SQL = "EXISTS (SELECT 1 FROM outbox o WHERE o.object_id = r.uuid AND o.kind = 'read' AND o.sent_at IS NULL)"


def _keep_unsent(settings: Settings) -> bool:
    """Reads headquarters has not received are kept while the post sends them (sync.enabled, push)
    or headquarters fetches them (sync.hq_public_key set, pull: sync.enabled may be off without
    an hq_url), unless retention.purge_unsent says otherwise."""
    syncs = settings.sync.enabled or bool(settings.sync.hq_public_key)
    return syncs and not settings.retention.purge_unsent


@overload
def _stamp(value: dt.datetime | str) -> str: ...
@overload
def _stamp(value: None) -> None: ...
def _stamp(value: dt.datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _kept(settings: Settings, read_cut: dt.datetime, hit_cut: dt.datetime) -> tuple[int, int]:
    """Reads past their period kept by a hold, and kept for headquarters."""
    has_alert = "EXISTS (SELECT 1 FROM alert a WHERE a.read_id = r.id)"
    # the first term lets SQLite walk the captured_at index instead of the whole table
    past = f"r.captured_at < ? AND ((r.captured_at < ? AND NOT {has_alert}) OR (r.captured_at < ? AND {has_alert}))"
    args = [max(read_cut, hit_cut), read_cut, hit_cut]
    held = database.execute_sql(f"SELECT count(*) FROM read r WHERE {past} AND {HELD_SQL}", args).fetchone()[0]
    unsent = 0
    if _keep_unsent(settings):
        unsent = database.execute_sql(
            f"SELECT count(*) FROM read r WHERE {past} AND NOT {HELD_SQL} AND {_UNSENT_SQL}", args
        ).fetchone()[0]
    return held, unsent


def _audit_past(settings: Settings, now: dt.datetime) -> int:
    edge = (now - dt.timedelta(days=settings.retention.audit_days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return database.execute_sql("SELECT count(*) FROM access_record WHERE at < ?", [edge]).fetchone()[0]


def plan(settings: Settings, now: dt.datetime | None = None) -> Result:
    """What a run would purge now, deleting nothing (the dry run)."""
    now = now or utcnow()
    read_cut, hit_cut = cutoffs(settings, now)
    result = Result(True, _stamp(read_cut), _stamp(hit_cut))
    with database.atomic():  # one snapshot for every count
        database.execute_sql("CREATE TEMP TABLE IF NOT EXISTS retention_plan (id INTEGER PRIMARY KEY)")
        database.execute_sql("DELETE FROM temp.retention_plan")
        database.execute_sql(
            f"INSERT INTO temp.retention_plan SELECT r.id FROM read r WHERE r.captured_at < ? AND {_where(settings)}",
            [max(read_cut, hit_cut), read_cut, hit_cut],
        )
        (result.reads, result.oldest_at, result.newest_at, result.hit_reads) = database.execute_sql(
            "SELECT count(*), min(r.captured_at), max(r.captured_at), "
            "coalesce(sum(EXISTS (SELECT 1 FROM alert a WHERE a.read_id = r.id)), 0) "
            "FROM read r JOIN temp.retention_plan p ON p.id = r.id"
        ).fetchone()
        result.oldest_at, result.newest_at = _stamp(result.oldest_at), _stamp(result.newest_at)
        result.evidence_rows = database.execute_sql(
            "SELECT count(*) FROM evidence e JOIN temp.retention_plan p ON p.id = e.read_id"
        ).fetchone()[0]
        result.alerts = database.execute_sql(
            "SELECT count(*) FROM alert a JOIN temp.retention_plan p ON p.id = a.read_id"
        ).fetchone()[0]
        result.outbox_rows = database.execute_sql(
            "SELECT count(*) FROM outbox o JOIN read r ON r.uuid = o.object_id "
            "JOIN temp.retention_plan p ON p.id = r.id WHERE o.kind = 'read'"
        ).fetchone()[0]
        # files: images of purged reads that no remaining read shares, and that are on disk
        shas = [
            row[0]
            for row in database.execute_sql(
                "SELECT DISTINCT e.sha256 FROM evidence e JOIN temp.retention_plan p ON p.id = e.read_id "
                "WHERE NOT EXISTS (SELECT 1 FROM evidence x WHERE x.sha256 = e.sha256 "
                "AND x.read_id NOT IN (SELECT id FROM temp.retention_plan))"
            )
        ]
        root = str(EvidenceStore(settings).root)
        result.files = sum(os.path.exists(_file(root, s)) for s in shas)
        result.held_kept, result.unsent_kept = _kept(settings, read_cut, hit_cut)
        result.audit_past_retention = _audit_past(settings, now)
        database.execute_sql("DROP TABLE temp.retention_plan")
    return result


def _record(actor: audit.Actor, run_id: int, interrupted: bool = False, stopped: bool = False) -> dict:
    """The one access record of a run, in the caller's write transaction, and the run closed."""
    cols = (
        "id",
        "started_at",
        "read_cutoff",
        "hit_cutoff",
        "reads",
        "hit_reads",
        "evidence_rows",
        "alerts",
        "outbox_rows",
        "files",
        "oldest_at",
        "newest_at",
    )
    row = dict(
        zip(
            cols, database.execute_sql(f"SELECT {', '.join(cols)} FROM retention_run WHERE id = ?", [run_id]).fetchone()
        )
    )
    for key in ("started_at", "read_cutoff", "hit_cutoff", "oldest_at", "newest_at"):
        row[key] = _stamp(row[key])
    details = {k: row[k] for k in cols if k != "id"}
    if interrupted:
        details["interrupted"] = True
    if stopped:
        details["stopped"] = True  # the service was stopping; the rest is purged by the next run
    audit.record(
        "retention.purge",
        actor,
        query={"read_cutoff": row["read_cutoff"], "hit_cutoff": row["hit_cutoff"]},
        objects=[f"retention_run:{run_id}"],
        result_count=row["reads"],
        details=details,
    )
    database.execute_sql("UPDATE retention_run SET finished_at = ? WHERE id = ?", [utcnow(), run_id])
    return row


def _settle_files(store: EvidenceStore) -> int:
    """Unlink the image files purges noted, unless a read references them again. Returns how many
    files were removed. Runs under the write lock so that no read referencing one commits meanwhile,
    in chunks paced like the purge's batches (an unlink and a directory fsync cost a card a lot)."""
    pace = Paced(min(500, FILES), most=FILES, least=LEAST_BATCH)
    removed = 0
    # looked at first without the lock: most batches of a purge leave no file to settle
    while database.execute_sql("SELECT 1 FROM retention_file LIMIT 1").fetchone():
        with pace.write() as chunk:
            rows = database.execute_sql("SELECT sha256, run_id FROM retention_file LIMIT ?", [chunk]).fetchall()
            if not rows:
                return removed
            shas = [r[0] for r in rows]
            still = {
                r[0]
                for r in database.execute_sql(
                    f"SELECT DISTINCT sha256 FROM evidence WHERE sha256 IN ({_marks(len(shas))})", shas
                )
            }
            dirs: set[str] = set()
            per_run: dict[int, int] = {}
            root = str(store.root)
            for sha, run_id in rows:
                if sha in still:
                    continue
                path = _file(root, sha)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                dirs.add(os.path.dirname(path))
                per_run[run_id] = per_run.get(run_id, 0) + 1
            for d in dirs:  # the unlinks are durable before their notes go
                _fsync_dir(d)
            for run_id, n in per_run.items():
                database.execute_sql("UPDATE retention_run SET files = files + ? WHERE id = ?", [n, run_id])
            database.execute_sql(f"DELETE FROM retention_file WHERE sha256 IN ({_marks(len(shas))})", shas)
            removed += sum(per_run.values())
    return removed


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file(root: str, sha256: str) -> str:
    """EvidenceStore.path_for() without its checks (the names come from our own evidence rows),
    as a string: it is called for every image of every purged read."""
    return f"{root}/{sha256[:2]}/{sha256[2:4]}/{sha256}.jpg"


def _purge_batch(root: str, run_id: int, where: str, params: list, after: tuple | None, pace: Paced) -> tuple | None:
    """One transaction: pick up to a paced batch of reads after the keyset `after`, delete them
    with everything that hangs on them. Returns the new keyset, or None when nothing was left."""
    with pace.write() as batch:
        keyset = ""
        args = [params[0]]
        if after is not None:
            keyset = " AND r.captured_at >= ? AND NOT (r.captured_at = ? AND r.id <= ?)"
            args += [after[0], after[0], after[1]]
        rows = database.execute_sql(
            f"SELECT r.id, r.uuid, r.plate, r.alternatives, r.captured_at, "
            f"EXISTS (SELECT 1 FROM alert a WHERE a.read_id = r.id) FROM read r "
            f"WHERE r.captured_at < ?{keyset} AND {where} ORDER BY r.captured_at, r.id LIMIT ?",
            args + params[1:] + [batch],
        ).fetchall()
        if not rows:
            return None
        ids = [r[0] for r in rows]
        uuids = [r[1] for r in rows]
        for read_id, _, plate, alternatives, _, _ in rows:
            search.unindex_read(read_id, plate, json.loads(alternatives or "[]"))
        marks = _marks(len(ids))
        referenced = {
            r[0] for r in database.execute_sql(f"SELECT sha256 FROM evidence WHERE read_id IN ({marks})", ids)
        }
        n_evidence = database.execute_sql(f"SELECT count(*) FROM evidence WHERE read_id IN ({marks})", ids).fetchone()[
            0
        ]
        n_alerts = database.execute_sql(f"SELECT count(*) FROM alert WHERE read_id IN ({marks})", ids).fetchone()[0]
        n_outbox = database.execute_sql(
            f"DELETE FROM outbox WHERE kind = 'read' AND object_id IN ({marks})", uuids
        ).rowcount
        database.execute_sql(f"DELETE FROM read WHERE id IN ({marks})", ids)  # cascades evidence, alerts
        shas = sorted(s for s in referenced if os.path.exists(_file(root, s)))  # only files there are to delete
        if shas:
            still = {
                r[0]
                for r in database.execute_sql(
                    f"SELECT DISTINCT sha256 FROM evidence WHERE sha256 IN ({_marks(len(shas))})", shas
                )
            }
            gone = [(s, run_id) for s in shas if s not in still]
            if gone:
                database.cursor().executemany(
                    "INSERT OR IGNORE INTO retention_file (sha256, run_id) VALUES (?, ?)", gone
                )
        captured = [r[4] for r in rows]
        database.execute_sql(
            "UPDATE retention_run SET reads = reads + ?, hit_reads = hit_reads + ?, evidence_rows = evidence_rows + ?, "
            "alerts = alerts + ?, outbox_rows = outbox_rows + ?, oldest_at = min(coalesce(oldest_at, ?), ?), "
            "newest_at = max(coalesce(newest_at, ?), ?) WHERE id = ?",
            [
                len(rows),
                sum(bool(r[5]) for r in rows),
                n_evidence,
                n_alerts,
                n_outbox,
                min(captured),
                min(captured),
                max(captured),
                max(captured),
                run_id,
            ],
        )
    return rows[-1][4], rows[-1][0]


def run(
    settings: Settings,
    actor: audit.Actor,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    batch: int = BATCH,
    progress=None,
    pause_s: float = 0.0,
    stop=None,
) -> Result:
    """Purge what is past retention (see the module docstring). `batch` is the most reads in one
    transaction; `progress(batches)` is called after each batch; `pause_s` is slept between batches
    (besides the lock's own pause, see appliance.db.Paced); a set `stop` event ends the run after the
    current batch (recorded as stopped; the rest goes next time)."""
    if dry_run:
        return plan(settings, now)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    store = EvidenceStore(settings)
    now = now or utcnow()
    read_cut, hit_cut = cutoffs(settings, now)
    started = time.perf_counter()
    interrupted = []
    # first what an interrupted run left: its files, then its record
    _settle_files(store)
    with write():
        for (run_id,) in database.execute_sql(
            "SELECT id FROM retention_run WHERE finished_at IS NULL ORDER BY id"
        ).fetchall():
            interrupted.append(_record(actor, run_id, interrupted=True))
        cursor = database.execute_sql(
            "INSERT INTO retention_run (started_at, read_cutoff, hit_cutoff) VALUES (?, ?, ?)",
            [utcnow(), read_cut, hit_cut],
        )
        run_id = cursor.lastrowid
    where = _where(settings)
    params = [max(read_cut, hit_cut), read_cut, hit_cut]
    pace = Paced(min(FIRST_BATCH, batch), most=batch, least=LEAST_BATCH)
    after, batches, stopped = None, 0, False
    autocheckpoint = database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0]
    database.execute_sql(f"PRAGMA wal_autocheckpoint = {max(WAL_PAGES, autocheckpoint)}")
    try:
        while True:
            after = _purge_batch(str(store.root), run_id, where, params, after, pace)
            if after is None:
                break
            batches += 1
            _settle_files(store)
            if progress:
                progress(batches)
            if stop is not None and stop.is_set():
                stopped = True
                break
            if pause_s:
                time.sleep(pause_s)
    finally:
        database.execute_sql(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
    _settle_files(store)
    held, unsent = _kept(settings, read_cut, hit_cut)
    past = _audit_past(settings, now)
    with write():
        row = _record(actor, run_id, stopped=stopped)
    result = Result(
        False,
        _stamp(read_cut),
        _stamp(hit_cut),
        row["reads"],
        row["hit_reads"],
        row["evidence_rows"],
        row["alerts"],
        row["outbox_rows"],
        row["files"],
        row["oldest_at"],
        row["newest_at"],
        held,
        unsent,
        past,
        batches,
        round(time.perf_counter() - started, 2),
        interrupted,
        stopped,
    )
    return result


# -- the daily run ---------------------------------------------------------------------------------


def due(settings: Settings, now: dt.datetime | None = None) -> bool:
    """Is today's run due? Today (in the post's time zone) at retention.run_at or later, and no
    run started today yet: a post that was off at run_at purges when it comes back that day."""
    return due_after(
        settings, lambda: database.execute_sql("SELECT max(started_at) FROM retention_run").fetchone()[0], now
    )


def due_after(settings: Settings, last_started, now: dt.datetime | None = None) -> bool:
    """The daily rule of `due` for any run table: `last_started()` gives the latest run's start
    (UTC, a datetime or its ISO text; None when there was none). Asked only once run_at has come."""
    zone = ZoneInfo(settings.post.timezone)
    now = now or utcnow()
    local = now.replace(tzinfo=dt.UTC).astimezone(zone)
    hour, minute = (int(p) for p in settings.retention.run_at.split(":"))
    if (local.hour, local.minute) < (hour, minute):
        return False
    last = last_started()
    if last is None:
        return True
    if isinstance(last, str):
        last = dt.datetime.fromisoformat(last)
    return last.replace(tzinfo=dt.UTC).astimezone(zone).date() < local.date()


def as_dict(result: Result) -> dict:
    return asdict(result)
