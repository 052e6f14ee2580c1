"""`waypost bench sync`: reads per second pushed over loopback from a backlog, and the post's peak
memory while it catches up.

A scratch post is filled with `count` reads (appliance.benchmarks.fill), each given its own
5 KB plate crop file (random bytes: like a JPEG, they do not compress); headquarters is served by
waitress in this process over a fresh SQLite file (or the PostgreSQL database a URL names, emptied);
the post runs in a child process (`waypost sync push`, or its web app answering `hq pull`), so
the peak resident memory measured is the post's alone.
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


def serve_post() -> None:
    """The post's web app in this (child) process until SIGTERM: the pull benchmark's post."""
    import signal
    import threading
    from web import create_app
    settings = config.load(None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = WebServer(create_app(settings), "127.0.0.1", settings.web.port).start()
    stop.wait()
    server.stop()


def _wait_port(port: int, proc, timeout_s: float = 30) -> None:
    import socket
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the post did not start: {proc.stdout.read()}")
            time.sleep(0.1)
    raise RuntimeError("the post did not start in time")


def run(count: int = 20_000, where: Path | None = None, batch_max_reads: int = 1000, crop_bytes: int = 5000,
        hq_database: str | None = None, mode: str = "push", progress=None) -> dict:
    """Fill (or reuse) a scratch post, empty headquarters, and time one catch-up by push or pull."""
    import base64
    import socket

    from sync import hq
    from sync.web import create_hq_app
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-sync-"))
    post_dir, hq_path = root / "post", root / "hq" / "hq.sqlite"
    env = {"WAYPOST_STORAGE__DATA_DIR": str(post_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    settings = config.load(None, environ=env)
    bootstrap(settings, create_admin=False)
    t0 = time.perf_counter()
    _fill(settings, count, crop_bytes, progress)
    fill_s = time.perf_counter() - t0
    target = hq_database or str(hq_path)
    if hq_database is None:
        for suffix in ("", "-wal", "-shm"):
            hq_path.with_name(hq_path.name + suffix).unlink(missing_ok=True)
    with db.connection():
        db.database.execute_sql("UPDATE outbox SET sent_at = NULL, batch_id = NULL")
    (post_dir / "sync" / "unacked.batch").unlink(missing_ok=True)
    hq.open_hq(target)
    with hq.hq_database.connection_context():
        for model in (hq.HQRead, hq.HQImage, hq.HQAccessRecord, hq.HQAlert, hq.HQBatch, hq.HQPost):
            model.delete().execute()       # a fresh headquarters (the URL's database is reused)
        hq.enroll(settings.post.id, "bench", bundle.public_pem(bundle.post_key(settings).public_key()))
    server = WebServer(create_hq_app(target), "127.0.0.1", 0, threads=2).start()
    child_env = dict(os.environ, **env, WAYPOST_SYNC__HQ_URL=f"http://127.0.0.1:{server.port}",
                     WAYPOST_SYNC__BATCH_MAX_READS=str(batch_max_reads), WAYPOST_SYNC__INCLUDE_FRAMES="false",
                     WAYPOST_CONFIG="")
    output = []
    try:
        if mode == "push":
            t1 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "appliance", "sync", "push"], env=child_env,
                                  capture_output=True, text=True)
            sync_s = time.perf_counter() - t1
            if proc.returncode != 0:
                raise RuntimeError(f"push failed: {proc.stdout}{proc.stderr}")
            output = proc.stdout.strip().splitlines()
        else:
            key = hq.hq_key(target, root / "hq")
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            child_env.update(WAYPOST_WEB__PORT=str(port), WAYPOST_SYNC__HQ_PUBLIC_KEY=base64.b64encode(
                bundle.raw_public(key.public_key())).decode())
            proc = subprocess.Popen([sys.executable, "-c", "from sync.bench import serve_post; serve_post()"],
                                    env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                _wait_port(port, proc)
                with hq.hq_database.connection_context():
                    hq.HQPost.update(pull_url=f"http://127.0.0.1:{port}").execute()
                t1 = time.perf_counter()
                pulled = hq.pull(settings.post.id, key)
                sync_s = time.perf_counter() - t1
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            if pulled.problem:
                raise RuntimeError(f"pull failed: {pulled.problem}")
            output = [pulled.line()]
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with hq.hq_database.connection_context():
            held = hq.HQRead.select().count()
            ok, _, _ = hq.verify_chain(settings.post.id)
    finally:
        server.stop()
    return {"mode": mode, "hq_database": "postgresql" if "://" in target else "sqlite", "reads": count,
            "held_at_hq": held, "chain_verified": ok, "crop_bytes": crop_bytes, "batch_max_reads": batch_max_reads,
            "fill_s": round(fill_s, 1), "sync_s": round(sync_s, 1), "reads_per_s": round(held / sync_s),
            "post_peak_rss_mib": round(peak_kib / 1024, 1), "dir": str(root), "output": output}
