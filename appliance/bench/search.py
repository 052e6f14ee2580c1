"""`waypost bench search`: plate search latency on a scratch database of synthetic reads."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from appliance import db, search
from appliance.bench.data import fill, misread, scratch_settings
from appliance.bootstrap import bootstrap


def search_at_scale(
    count: int = 10_000_000, where: Path | None = None, queries: int = 100, seed: int = 7, progress=None
) -> dict:
    """Fill a scratch database to `count` reads (kept in `where` for the next run), then time the
    first page of each kind of search on plates that are there (and misread ones for similar)."""

    settings = scratch_settings(where)
    bootstrap(settings, create_admin=False)
    with db.connection():
        filled = fill(settings, count, progress=progress)
        database = db.database
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        n_reads = database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
        max_id = database.execute_sql("SELECT max(id) FROM read").fetchone()[0]
        rng = np.random.default_rng(seed)
        samples: list[str] = []
        while len(samples) < queries:
            row = database.execute_sql(
                "SELECT plate FROM read WHERE id = ?", [int(rng.integers(1, max_id + 1))]
            ).fetchone()
            if row and len(row[0]) >= 6:
                samples.append(row[0])
        cases = {
            "exact": [search.Query(p) for p in samples],
            "wildcard": [
                search.Query(p[:3] + "*", "wildcard")
                if i % 2
                else search.Query(p[:1] + "?" + p[2:-1] + "?", "wildcard")
                for i, p in enumerate(samples)
            ],
            "partial": [search.Query(p[1:5], "partial") for p in samples],
            "similar": [search.Query(misread(p, rng), "similar") for p in samples],
        }
        out = {"benchmark": "search", "reads": n_reads, "filled": filled}
        for mode, qs in cases.items():
            times, found = [], 0
            for q in qs:
                t = time.perf_counter()
                page = search.search(q, limit=25)
                times.append((time.perf_counter() - t) * 1000)
                found += bool(page.hits)
            out[mode] = {
                "p50_ms": round(float(np.percentile(times, 50)), 1),
                "p95_ms": round(float(np.percentile(times, 95)), 1),
                "max_ms": round(max(times), 1),
                "queries": len(qs),
                "with_results": found,
            }
        db_bytes = sum(
            p.stat().st_size
            for p in (settings.db_path, settings.db_path.with_name(settings.db_path.name + "-wal"))
            if p.exists()
        )  # not the backups a migration leaves beside it
        out["db_bytes"] = db_bytes
        out["db_bytes_per_read"] = round(db_bytes / max(n_reads, 1), 1)
        out["data_dir"] = str(settings.data_dir)
    return out
