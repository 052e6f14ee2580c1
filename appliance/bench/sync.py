"""`waypost bench sync`: reads per second sent over loopback from a backlog, by push and by pull,
into a SQLite or a PostgreSQL headquarters, with the peak memory of the post and of headquarters.

A scratch post is filled with `count` reads (appliance.bench.data.fill), each given its own
5 KB plate crop file (a noise JPEG made unique per read: noise, like a photo, does not compress;
headquarters refuses an image that is not a JPEG). For each combination,
headquarters' tables are emptied (a fresh SQLite file, or the PostgreSQL database a URL names) and
the post's outbox is unmarked, then the whole backlog is sent:

- push: headquarters' sync API in one child process, `waypost sync push` in another;
- pull: the post's web app in one child process, `waypost hq pull --post ID` in another.

So each peak resident memory measured (getrusage of that child alone) is one side's own. The
headquarters child serves the sync API only: the search indexer that `waypost hq serve` also runs
works on what ingest stored, beside it, and is not timed here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from appliance import bundle, config, db
from appliance.bench.data import fill, jpeg_of_size, unique
from appliance.bootstrap import bootstrap
from appliance.memory import limit_malloc_arenas
from appliance.store import EvidenceStore
from sync import hq
from web import create_app
from web.hq import create_hq_app
from web.server import WebServer

MODES = ("push", "pull")


def _fill(settings, count: int, crop_bytes: int, progress=None) -> None:
    with db.connection():
        have = db.database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
        if have >= count:
            return
        fill(settings, count, progress=progress)
        store = EvidenceStore(settings)
        crop = jpeg_of_size(crop_bytes, np.random.default_rng(0))
        with Image.open(io.BytesIO(crop)) as img:
            width, height = img.size
        db.database.execute_sql("DELETE FROM evidence WHERE kind = 'frame'")
        rows = db.database.execute_sql("SELECT id FROM evidence WHERE kind = 'crop' ORDER BY id").fetchall()
        for start in range(0, len(rows), 5000):
            updates = []
            for (eid,) in rows[start : start + 5000]:
                data = unique(crop, eid)
                sha = hashlib.sha256(data).hexdigest()
                path = store.path_for(sha)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                updates.append((sha, len(data), width, height, eid))
            with db.write():
                db.database.cursor().executemany(
                    "UPDATE evidence SET sha256 = ?, bytes = ?, width = ?, height = ? WHERE id = ?", updates
                )


def _serve_until_sigterm(app, port: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = WebServer(app, "127.0.0.1", port).start()
    stop.wait()
    server.stop()


def serve_post() -> None:
    """The post's web app in this (child) process until SIGTERM: the pull benchmark's post."""
    limit_malloc_arenas()  # as `waypost run` does
    settings = config.load(None)
    _serve_until_sigterm(create_app(settings), settings.web.port)


def serve_hq(target: str, port: int) -> None:
    """Headquarters' sync API in this (child) process until SIGTERM: the push benchmark's HQ."""
    _serve_until_sigterm(create_hq_app(target), port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"a benchmark server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    raise RuntimeError(f"a benchmark server did not listen on port {port} within {timeout_s:.0f} s")


class _Child:
    """A child process whose peak resident memory is its own (os.wait4, not RUSAGE_CHILDREN)."""

    def __init__(self, name: str, args: list[str], env: dict, logs: Path):
        self.log = logs / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.peak_kib = 0
        self.cpu_s = 0.0

    def wait(self, terminate: bool = False) -> int:
        if terminate and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.peak_kib = usage.ru_maxrss
        self.cpu_s = usage.ru_utime + usage.ru_stime
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _timed_pair(server: tuple, client: tuple, server_env: dict, logs) -> tuple:
    """Start the server child (name, command, port), wait for its port, time the client child
    (name, command, env) to the end, then stop the server. Returns (client, server, seconds)."""
    name, cmd, port = server
    child = _Child(name, cmd, server_env, logs)
    try:
        _wait_port(port, child.proc, child.log)
        t1 = time.perf_counter()
        other = _Child(client[0], client[1], client[2], logs)
        other.wait()
        seconds = time.perf_counter() - t1
        child.wait(terminate=True)
    finally:
        child.kill()
    return other, child, seconds


def run(
    count: int = 20_000,
    where: Path | None = None,
    batch_max_reads: int = 1000,
    crop_bytes: int = 5000,
    hq_database: str | None = None,
    mode: str = "push",
    progress=None,
) -> dict:
    """Fill (or reuse) a scratch post, empty headquarters, and time one catch-up by push or pull
    into `hq_database` (a postgresql:// URL; None: a SQLite file in the scratch directory)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-sync-"))
    post_dir, hq_dir = root / "post", root / "hq"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {"WAYPOST_STORAGE__DATA_DIR": str(post_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    settings = config.load(None, environ=env)
    bootstrap(settings, create_admin=False)
    t0 = time.perf_counter()
    _fill(settings, count, crop_bytes, progress)
    fill_s = time.perf_counter() - t0
    target = hq_database or str(hq_dir / "hq.sqlite")
    if hq_database is None:
        for suffix in ("", "-wal", "-shm"):
            Path(target + suffix).unlink(missing_ok=True)
    with db.connection():
        backlog = db.database.execute_sql("SELECT count(*) FROM outbox WHERE kind = 'read'").fetchone()[0]
        db.database.execute_sql("UPDATE outbox SET sent_at = NULL, batch_id = NULL")
    for name in ("unacked.batch", "unacked.batch.part", "next.batch.part"):
        (post_dir / "sync" / name).unlink(missing_ok=True)
    post_port, hq_port = _free_port(), _free_port()
    hq.open_hq(target)
    with hq.hq_database.connection_context():
        for model in reversed(hq.MODELS):
            if model is not hq.HQHotlist:
                model.delete().execute()  # a fresh headquarters (the URL's database is reused)
        hq.enroll(
            settings.post.id,
            "bench",
            bundle.public_pem(bundle.post_key(settings).public_key()),
            pull_url=f"http://127.0.0.1:{post_port}",
        )
    hq.hq_database.close()
    child_env = dict(
        os.environ,
        **env,
        WAYPOST_SYNC__HQ_URL=f"http://127.0.0.1:{hq_port}",
        WAYPOST_SYNC__BATCH_MAX_READS=str(batch_max_reads),
        WAYPOST_SYNC__INCLUDE_FRAMES="false",
        WAYPOST_CONFIG="",
        WAYPOST_WEB__PORT=str(post_port),
    )
    python = sys.executable
    load_before = _load()
    if mode == "push":
        client, server, sync_s = _timed_pair(
            (
                "hq",
                [python, "-c", f"from appliance.bench.sync import serve_hq; serve_hq({target!r}, {hq_port})"],
                hq_port,
            ),
            ("post", [python, "-m", "appliance", "sync", "push"], child_env),
            child_env,
            logs,
        )
        post_child, hq_child = client, server
    else:
        key = hq.hq_key(target, hq_dir)
        child_env["WAYPOST_SYNC__HQ_PUBLIC_KEY"] = base64.b64encode(bundle.raw_public(key.public_key())).decode()
        hq_env = dict(child_env, WAYPOST_STORAGE__DATA_DIR=str(hq_dir))
        client, server, sync_s = _timed_pair(
            ("post", [python, "-c", "from appliance.bench.sync import serve_post; serve_post()"], post_port),
            ("hq", [python, "-m", "appliance", "hq", "pull", "--database", target, "--post", settings.post.id], hq_env),
            child_env,
            logs,
        )
        post_child, hq_child = server, client
    code = client.proc.returncode
    load_after = _load()
    if code != 0:
        raise RuntimeError(f"{mode} failed ({code}): {client.output()[-3000:]}")
    hq.open_hq(target)
    with hq.hq_database.connection_context():
        held = hq.HQRead.select().count()
        ok, _, _ = hq.verify_chain(settings.post.id)
    hq.hq_database.close()
    output = [
        line
        for line in client.output().splitlines()
        if line.startswith(("sent ", "headquarters holds ", f"{settings.post.id}: "))
    ]
    return {
        "mode": mode,
        "hq_database": "postgresql" if "://" in target else "sqlite",
        "reads": backlog,
        "held_at_hq": held,
        "chain_verified": ok,
        "crop_bytes": crop_bytes,
        "batch_max_reads": batch_max_reads,
        "fill_s": round(fill_s, 1),
        "sync_s": round(sync_s, 1),
        "reads_per_s": round(held / sync_s),
        "post_peak_rss_mib": round(post_child.peak_kib / 1024, 1),
        "hq_peak_rss_mib": round(hq_child.peak_kib / 1024, 1),
        "post_cpu_s": round(post_child.cpu_s, 1),
        "hq_cpu_s": round(hq_child.cpu_s, 1),
        "load_before": load_before,
        "load_after": load_after,
        "dir": str(root),
        "output": output,
    }


def line(figures: dict) -> str:
    """One printed line per combination."""
    f = figures
    return (
        f"{f['mode']:4} -> {f['hq_database']:10}  {f['held_at_hq']:>7} of {f['reads']} reads in {f['sync_s']:7.1f} s: "
        f"{f['reads_per_s']:>5} reads/s;  post peak RSS {f['post_peak_rss_mib']:6.1f} MiB;  "
        f"HQ peak RSS {f['hq_peak_rss_mib']:6.1f} MiB;  CPU s post {f['post_cpu_s']}, HQ {f['hq_cpu_s']};  "
        f"chain {'verified' if f['chain_verified'] else 'BROKEN'};  "
        f"load {f['load_before']} -> {f['load_after']}"
    )
