"""`waypost bench sync`: reads per second pushed over loopback from a backlog, and the post's peak
memory while it catches up.

A scratch post is filled with `count` reads (appliance.benchmarks.fill), each given its own
5 KB plate crop file (random bytes: like a JPEG, they do not compress); headquarters is served by
waitress in this process over a fresh SQLite file; the push runs as `waypost sync push` in a child
process, so its peak resident memory is the post's alone.
"""
from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance import benchmarks, bundle, config, db
from appliance.service import WebServer, bootstrap
from appliance.store import EvidenceStore


def _fill(settings, count: int, crop_bytes: int, progress=None) -> None:
    with db.connection():
        have = db.database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
        if have >= count:
            return
        benchmarks.fill(settings, count, progress=progress)
        store = EvidenceStore(settings)
        db.database.execute_sql("DELETE FROM evidence WHERE kind = 'frame'")
        rows = db.database.execute_sql("SELECT id FROM evidence WHERE kind = 'crop' ORDER BY id").fetchall()
        for start in range(0, len(rows), 5000):
            updates = []
            for (eid,) in rows[start:start + 5000]:
                data = os.urandom(crop_bytes)
                sha = hashlib.sha256(data).hexdigest()
                path = store.path_for(sha)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                updates.append((sha, len(data), eid))
            with db.write():
                db.database.cursor().executemany("UPDATE evidence SET sha256 = ?, bytes = ? WHERE id = ?", updates)


def run(count: int = 20_000, where: Path | None = None, batch_max_reads: int = 1000, crop_bytes: int = 5000,
        progress=None) -> dict:
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-sync-"))
    post_dir, hq_path = root / "post", root / "hq" / "hq.sqlite"
    env = {"WAYPOST_STORAGE__DATA_DIR": str(post_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    settings = config.load(None, environ=env)
    bootstrap(settings, create_admin=False)
    t0 = time.perf_counter()
    _fill(settings, count, crop_bytes, progress)
    fill_s = time.perf_counter() - t0
    for suffix in ("", "-wal", "-shm"):
        hq_path.with_name(hq_path.name + suffix).unlink(missing_ok=True)
    with db.connection():
        db.database.execute_sql("UPDATE outbox SET sent_at = NULL, batch_id = NULL")
    (post_dir / "sync" / "unacked.batch").unlink(missing_ok=True)

    from sync import hq
    from sync.web import create_hq_app
    server = WebServer(create_hq_app(str(hq_path)), "127.0.0.1", 0, threads=2).start()
    try:
        with hq.hq_database.connection_context():
            hq.enroll(settings.post.id, "bench", bundle.public_pem(bundle.post_key(settings).public_key()))
        child_env = dict(os.environ, **env, WAYPOST_SYNC__HQ_URL=f"http://127.0.0.1:{server.port}",
                         WAYPOST_SYNC__BATCH_MAX_READS=str(batch_max_reads), WAYPOST_SYNC__INCLUDE_FRAMES="false",
                         WAYPOST_CONFIG="")
        t1 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "appliance", "sync", "push"], env=child_env,
                              capture_output=True, text=True)
        push_s = time.perf_counter() - t1
        if proc.returncode != 0:
            raise RuntimeError(f"push failed: {proc.stdout}{proc.stderr}")
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with hq.hq_database.connection_context():
            held = hq.HQRead.select().count()
            ok, _, _ = hq.verify_chain(settings.post.id)
    finally:
        server.stop()
    return {"reads": count, "held_at_hq": held, "chain_verified": ok, "crop_bytes": crop_bytes,
            "batch_max_reads": batch_max_reads, "fill_s": round(fill_s, 1), "push_s": round(push_s, 1),
            "reads_per_s": round(held / push_s), "post_peak_rss_mib": round(peak_kib / 1024, 1),
            "hq_db_mib": round(hq_path.stat().st_size / 2**20, 1), "dir": str(root),
            "output": proc.stdout.strip().splitlines()}
