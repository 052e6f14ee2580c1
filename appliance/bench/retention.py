"""`waypost retention bench`: a purge of the oldest quarter of a large database, timed, while a
thread keeps searching the way the web UI does and records how long each search took.

It works on a COPY of a filled database (e.g. the one `waypost bench search` leaves), never on the
original. The synthetic reads have evidence rows with random sha256 and no files, so real image
files are written for a sample (some of them shared between a purged read and one that stays),
a few reads get alerts and a query hold, and afterwards the bench checks that the purged sample's
files are gone, the shared and kept ones are still there, held reads survived, and the chain verifies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from appliance import audit, config, db, holds, retention, search
from appliance.bench.data import jpeg_of_size, misread, unique
from appliance.store import EvidenceStore

ACTOR = audit.Actor("bench", "Benchmark", "local")


def copy_database(source: Path, target: Path) -> Path:
    """Copy waypost.db and its WAL into target (the source must not be open for writing)."""
    target.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        src = source / f"waypost.db{suffix}"
        dst = target / f"waypost.db{suffix}"
        dst.unlink(missing_ok=True)
        if src.exists():
            shutil.copyfile(src, dst)
    return target


def _jpeg(seed: int, size: int) -> bytes:
    return jpeg_of_size(size, np.random.default_rng(seed))


def _set_up_sample(settings: config.Settings, cutoff: dt.datetime, sample: int, rng) -> dict:
    """Real files for `sample` reads before the cutoff and sample/10 after it; sample/50 images
    shared by a purged and a kept read; 1,000 alerts; a query hold inside the purged range."""
    store = EvidenceStore(settings)
    database = db.database
    lo, hi = database.execute_sql("SELECT min(id), max(id) FROM read").fetchone()
    cut_id = database.execute_sql("SELECT max(id) FROM read WHERE captured_at < ?", [cutoff]).fetchone()[0]
    crop, frame = _jpeg(1, 5_000), _jpeg(2, 60_000)
    purged_ids = sorted({int(i) for i in rng.integers(lo, cut_id + 1, sample)})
    kept_ids = sorted({int(i) for i in rng.integers(cut_id + 1, hi + 1, max(sample // 10, 1))})
    shared = list(zip(purged_ids[: sample // 50], kept_ids[: sample // 50]))
    n = 0
    files: dict[str, list[tuple[int, Path]]] = {"purged": [], "kept": [], "shared": []}
    with db.write():
        for group, ids in (("purged", purged_ids), ("kept", kept_ids)):
            for rid in ids:
                for kind, base in (("crop", crop), ("frame", frame)):
                    data = unique(base, n)
                    n += 1
                    sha = hashlib.sha256(data).hexdigest()
                    path = store.path_for(sha)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                    database.execute_sql(
                        "UPDATE evidence SET sha256 = ?, bytes = ? WHERE read_id = ? AND kind = ?",
                        [sha, len(data), rid, kind],
                    )
                    files[group].append((rid, path))
        for purged, kept in shared:  # the kept read's crop becomes the purged read's crop
            sha = database.execute_sql(
                "SELECT sha256 FROM evidence WHERE read_id = ? AND kind = 'crop'", [purged]
            ).fetchone()[0]
            database.execute_sql("UPDATE evidence SET sha256 = ? WHERE read_id = ? AND kind = 'crop'", [sha, kept])
            files["shared"].append((kept, store.path_for(sha)))
        alert_ids = [int(i) for i in rng.integers(lo, hi + 1, 1000)]
        database.cursor().executemany(
            "INSERT INTO alert (read_id, hotlist_name, entry_plate, entry_state, entry_reason, entry_source_ref, "
            "matched_text, match_kind, score, status, created_at) "
            "SELECT id, 'SVS', plate, 'CA', 'stolen', '', plate, 'exact', 1.0, 'unconfirmed', captured_at "
            "FROM read WHERE id = ?",
            [(i,) for i in alert_ids],
        )
    shared_paths = {p for _, p in files["shared"]}
    files["purged"] = [(rid, p) for rid, p in files["purged"] if p not in shared_paths]
    # a query hold on a plate seen in the purged range
    plate, at = database.execute_sql("SELECT plate, captured_at FROM read WHERE id = ?", [purged_ids[-1]]).fetchone()
    at = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    q = search.Query(plate, "exact", since=at - dt.timedelta(days=30), until=at + dt.timedelta(days=1))
    hold = holds.place_on_query(settings, ACTOR, q, "CRIME-INV", "26-000417", "Benchmark: reads kept as evidence")
    return {
        "files": files,
        "hold": hold,
        "samples": [
            r[0]
            for r in database.execute_sql(
                "SELECT plate FROM read WHERE id IN (SELECT abs(random()) % ? + ? FROM read LIMIT 200)",
                [hi - lo + 1, lo],
            )
        ],
    }


def _searcher(settings: config.Settings, plates: list[str], stop: threading.Event, latencies: list, errors: list):
    rng = np.random.default_rng(11)
    with db.connection():
        i = 0
        while not stop.is_set():
            p = plates[i % len(plates)]
            q = [
                search.Query(p),
                search.Query(p[:3] + "*", "wildcard"),
                search.Query(p[1:5], "partial"),
                search.Query(misread(p, rng), "similar"),
            ][i % 4]
            i += 1
            t = time.perf_counter()
            try:
                search.search(q, limit=25)
            except search.SearchError:
                continue
            except Exception as exc:  # a "database is locked" here is exactly what the bench looks for
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append((q.mode, (time.perf_counter() - t) * 1000))
            stop.wait(0.05)  # an officer does not search 100 times a second


def run(
    source: Path,
    where: Path,
    fraction: float = 0.25,
    sample: int = 5000,
    batch: int = retention.BATCH,
    copy: bool = True,
    progress=None,
) -> dict:
    """Copy `source`'s database to `where`, purge its oldest `fraction` under search load, report."""
    if copy:
        if not (source / "waypost.db").exists():
            raise FileNotFoundError(f"no waypost.db in {source}: fill one with `waypost bench search --dir {source}`")
        t = time.perf_counter()
        copy_database(source, where)
        copied_s = time.perf_counter() - t
    else:
        copied_s = 0.0
    settings = config.load(None, environ={"WAYPOST_STORAGE__DATA_DIR": str(where), "WAYPOST_STORAGE__MIN_FREE_MB": "0"})
    database = db.open_database(settings)
    t = time.perf_counter()
    migrated = db.migrate(settings)
    migrate_s = time.perf_counter() - t
    out: dict = {
        "benchmark": "retention",
        "data_dir": str(where),
        "copy_s": round(copied_s, 1),
        "migrate_s": round(migrate_s, 1),
        "migrations": migrated,
    }
    rng = np.random.default_rng(5)
    with db.connection():
        n_reads = database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
        cutoff = database.execute_sql(
            "SELECT captured_at FROM read ORDER BY captured_at LIMIT 1 OFFSET ?", [int(n_reads * fraction)]
        ).fetchone()[0]
        cutoff = dt.datetime.fromisoformat(cutoff) if isinstance(cutoff, str) else cutoff
        t = time.perf_counter()
        setup = _set_up_sample(settings, cutoff, sample, rng)
        out["sample_setup_s"] = round(time.perf_counter() - t, 1)
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        now = cutoff + dt.timedelta(days=settings.retention.read_days)  # so that the cutoff falls there
        latencies: list = []
        errors: list = []
        stop = threading.Event()
        searcher = threading.Thread(target=_searcher, args=(settings, setup["samples"], stop, latencies, errors))
        searcher.start()
        try:
            t = time.perf_counter()
            result = retention.run(
                settings,
                ACTOR,
                now=now,
                batch=batch,
                progress=(lambda n: progress(n, time.perf_counter() - t)) if progress else None,
            )
            purge_s = time.perf_counter() - t
        finally:
            stop.set()
            searcher.join()
        left = database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
        held_left = database.execute_sql(
            "SELECT count(*) FROM hold_read hr JOIN read r ON r.id = hr.read_id WHERE hr.hold_id = ?",
            [setup["hold"].id],
        ).fetchone()[0]
        files = setup["files"]
        held = {r[0] for r in database.execute_sql("SELECT read_id FROM hold_read")}
        should_go = [p for rid, p in files["purged"] if rid not in held]
        verify = audit.verify()
        ms = np.array([m for _, m in latencies]) if latencies else np.array([0.0])
        out.update(
            {
                "reads_before": n_reads,
                "reads_purged": result.reads,
                "reads_left": left,
                "hit_reads_purged": result.hit_reads,
                "evidence_rows": result.evidence_rows,
                "outbox_rows": result.outbox_rows,
                "alerts": result.alerts,
                "files_deleted": result.files,
                "held_kept": result.held_kept,
                "hold_reads_survived": held_left == setup["hold"].read_count,
                "batches": result.batches,
                "batch_size": batch,
                "purge_s": round(purge_s, 1),
                "reads_per_s": round(result.reads / purge_s) if purge_s else None,
                "sample_files_gone": sum(not p.exists() for p in should_go),
                "sample_files": len(should_go),
                "kept_files_present": all(p.exists() for _, p in files["kept"]),
                "shared_files_present": all(p.exists() for _, p in files["shared"]),
                "searches": len(latencies),
                "search_errors": errors[:5],
                "search_error_count": len(errors),
                "search_p50_ms": round(float(np.percentile(ms, 50)), 1),
                "search_p95_ms": round(float(np.percentile(ms, 95)), 1),
                "search_p99_ms": round(float(np.percentile(ms, 99)), 1),
                "search_max_ms": round(float(ms.max()), 1),
                "searches_over_1s": int((ms > 1000).sum()),
                "search_max_ms_by_mode": {
                    m: round(max(v for k, v in latencies if k == m), 1) for m in sorted({k for k, _ in latencies})
                },
                "audit_verify_ok": verify.ok,
            }
        )
    return out


def quick_check(path: Path) -> str:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        conn.close()
