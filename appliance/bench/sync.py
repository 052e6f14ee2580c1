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

With `frame_bytes`, each read also gets its own context frame of about that size (a noise JPEG made
unique per read), which the post sends in its second lane (sync/post.py). With `link_mbit`, the post
and headquarters talk through a relay in this process that paces each direction to that many
megabits per second (appliance/bench/relay.py): a slow link on loopback. The figures then say when
every read and crop was at headquarters (`main_s`, from the batch log's times) and when every frame
was (`all_s`); `until="main"` stops the post once the reads and crops are there (a month's frames
over a slow link take hours) and says how many frames had come by then.
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
from peewee import fn
from PIL import Image

from appliance import bundle, config, db
from appliance.bench.data import fill, jpeg_of_size, unique
from appliance.bench.relay import Relay
from appliance.bootstrap import bootstrap
from appliance.memory import limit_malloc_arenas
from appliance.models import utcnow
from appliance.store import EvidenceStore
from sync import hq
from web import create_app
from web.hq import create_hq_app
from web.server import WebServer

MODES = ("push", "pull")


def _fill(settings, count: int, crop_bytes: int, frame_bytes: int = 0, progress=None) -> None:
    with db.connection():
        have = db.database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
        if have >= count:
            _frames(settings, frame_bytes)
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
        _frames(settings, frame_bytes)


def _frames(settings, frame_bytes: int) -> None:
    """Give every read a frame file of about `frame_bytes` (unique per read), or none with 0. A fill
    reused with the same size keeps its frames."""
    if not frame_bytes:
        db.database.execute_sql("DELETE FROM evidence WHERE kind = 'frame'")
        return
    size = db.database.execute_sql("SELECT max(bytes) FROM evidence WHERE kind = 'frame'").fetchone()[0]
    base = jpeg_of_size(frame_bytes, np.random.default_rng(1))
    if size is not None and abs(size - len(base)) < 64:
        return
    db.database.execute_sql("DELETE FROM evidence WHERE kind = 'frame'")
    store = EvidenceStore(settings)
    with Image.open(io.BytesIO(base)) as img:
        width, height = img.size
    ids = [r[0] for r in db.database.execute_sql("SELECT id FROM read ORDER BY id").fetchall()]
    for start in range(0, len(ids), 2000):
        rows = []
        for rid in ids[start : start + 2000]:
            data = unique(base, 10**9 + rid)
            sha = hashlib.sha256(data).hexdigest()
            path = store.path_for(sha)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            rows.append((rid, "frame", sha, len(data), width, height, "image/jpeg"))
        with db.write():
            db.database.cursor().executemany(
                "INSERT INTO evidence (read_id, kind, sha256, bytes, width, height, content_type) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
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
    limit_malloc_arenas()  # as `waypost hq serve` does
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


def _timed_pair(server: tuple, client: tuple, server_env: dict, logs, stop_when=None) -> tuple:
    """Start the server child (name, command, port), wait for its port, time the client child
    (name, command, env) to the end (or until `stop_when()` says so: then it is terminated), then
    stop the server. Returns (client, server, seconds, when the client started: naive UTC)."""
    name, cmd, port = server
    child = _Child(name, cmd, server_env, logs)
    try:
        _wait_port(port, child.proc, child.log)
        t1, started_at = time.perf_counter(), utcnow()
        other = _Child(client[0], client[1], client[2], logs)
        if stop_when is not None:
            while other.proc.poll() is None and not stop_when():
                time.sleep(0.5)
            if other.proc.poll() is None:
                other.proc.send_signal(signal.SIGTERM)
        other.wait()
        seconds = time.perf_counter() - t1
        child.wait(terminate=True)
    finally:
        child.kill()
    return other, child, seconds, started_at


def run(
    count: int = 20_000,
    where: Path | None = None,
    batch_max_reads: int = 1000,
    crop_bytes: int = 5000,
    hq_database: str | None = None,
    mode: str = "push",
    progress=None,
    frame_bytes: int = 0,
    link_mbit: float | None = None,
    until: str = "all",
    max_kbps: int = 0,
) -> dict:
    """Fill (or reuse) a scratch post, empty headquarters, and time one catch-up by push or pull
    into `hq_database` (a postgresql:// URL; None: a SQLite file in the scratch directory); see the
    module's docstring for frames, the throttled link and `until`."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    if until not in ("all", "main"):
        raise ValueError(f"until {until!r}: use all or main")
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-sync-"))
    post_dir, hq_dir = root / "post", root / "hq"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {"WAYPOST_STORAGE__DATA_DIR": str(post_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    settings = config.load(None, environ=env)
    bootstrap(settings, create_admin=False)
    t0 = time.perf_counter()
    _fill(settings, count, crop_bytes, frame_bytes, progress)
    fill_s = time.perf_counter() - t0
    target = hq_database or str(hq_dir / "hq.sqlite")
    if hq_database is None:
        for suffix in ("", "-wal", "-shm"):
            Path(target + suffix).unlink(missing_ok=True)
    with db.connection():
        backlog = db.database.execute_sql("SELECT count(*) FROM outbox WHERE kind = 'read'").fetchone()[0]
        last_seq = db.database.execute_sql("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
        frames = db.database.execute_sql("SELECT count(*) FROM evidence WHERE kind = 'frame'").fetchone()[0]
        db.database.execute_sql("UPDATE outbox SET sent_at = NULL, batch_id = NULL")
    for name in ("unacked.batch", "unacked.batch.part", "next.batch.part"):
        (post_dir / "sync" / name).unlink(missing_ok=True)
    post_port, hq_port = _free_port(), _free_port()
    relay_port = _free_port() if link_mbit else None
    # the post reaches headquarters (push), or headquarters the post (pull), through the relay
    hq_url_port = relay_port if relay_port and mode == "push" else hq_port
    pull_port = relay_port if relay_port and mode == "pull" else post_port
    hq.open_hq(target)
    with hq.hq_database.connection_context():
        for model in reversed(hq.MODELS):
            if model is not hq.HQHotlist:
                model.delete().execute()  # a fresh headquarters (the URL's database is reused)
        for table in ("hq_frame_due", "hq_read_image"):
            hq.hq_database.execute_sql(f"DELETE FROM {table}")
        hq.enroll(
            settings.post.id,
            "bench",
            bundle.public_pem(bundle.post_key(settings).public_key()),
            pull_url=f"http://127.0.0.1:{pull_port}",
        )
    hq.hq_database.close()
    child_env = dict(
        os.environ,
        **env,
        WAYPOST_SYNC__HQ_URL=f"http://127.0.0.1:{hq_url_port}",
        WAYPOST_SYNC__BATCH_MAX_READS=str(batch_max_reads),
        WAYPOST_SYNC__INCLUDE_FRAMES="true" if frame_bytes else "false",
        WAYPOST_SYNC__MAX_KBPS=str(max_kbps),
        WAYPOST_CONFIG="",
        WAYPOST_WEB__PORT=str(post_port),
    )
    load_before = _load()
    relay = Relay(relay_port, hq_port if mode == "push" else post_port, link_mbit) if relay_port else None
    if relay is not None:
        relay.__enter__()
    watch = _MainLane(target, settings.post.id, last_seq) if until == "main" else None
    try:
        client, server, sync_s, started_at, post_child, hq_child = _catch_up(
            mode, target, hq_port, post_port, hq_dir, settings, child_env, logs, watch
        )
    finally:
        if relay is not None:
            relay.close()
    code = client.proc.returncode
    load_after = _load()
    if code != 0 and not (watch is not None and watch.done):
        raise RuntimeError(f"{mode} failed ({code}): {client.output()[-3000:]}")
    hq.open_hq(target)
    with hq.hq_database.connection_context():
        held = hq.HQRead.select().count()
        ok, _, _ = hq.verify_chain(settings.post.id)
        main_at = (
            hq.HQBatch.select(fn.max(hq.HQBatch.received_at))
            .where((hq.HQBatch.status == "stored") & (hq.HQBatch.reads > 0))
            .scalar()
        )
        all_at = hq.HQBatch.select(fn.max(hq.HQBatch.received_at)).where(hq.HQBatch.status == "stored").scalar()
        to_come = hq.posts.frames_to_come(settings.post.id)
    hq.hq_database.close()
    output = [
        line
        for line in client.output().splitlines()
        if line.startswith(("sent ", "headquarters holds ", f"{settings.post.id}: "))
    ]
    main_s = (main_at - started_at).total_seconds() if main_at else None
    all_s = (all_at - started_at).total_seconds() if all_at and not to_come else None
    return {
        "mode": mode,
        "hq_database": "postgresql" if "://" in target else "sqlite",
        "reads": backlog,
        "held_at_hq": held,
        "chain_verified": ok,
        "crop_bytes": crop_bytes,
        "frame_bytes": frame_bytes,
        "frames": frames,
        "frames_to_come": to_come,
        "link_mbit": link_mbit,
        "max_kbps": max_kbps,
        "until": until,
        "batch_max_reads": batch_max_reads,
        "fill_s": round(fill_s, 1),
        "sync_s": round(sync_s, 1),
        "main_s": None if main_s is None else round(main_s, 1),
        "all_s": None if all_s is None else round(all_s, 1),
        "reads_per_s": round(held / (main_s or sync_s)),
        "sent_mib": round(relay.up_bytes / 2**20, 1) if relay is not None and mode == "push" else None,
        "post_peak_rss_mib": round(post_child.peak_kib / 1024, 1),
        "hq_peak_rss_mib": round(hq_child.peak_kib / 1024, 1),
        "post_cpu_s": round(post_child.cpu_s, 1),
        "hq_cpu_s": round(hq_child.cpu_s, 1),
        "load_before": load_before,
        "load_after": load_after,
        "dir": str(root),
        "output": output,
    }


class _MainLane:
    """Whether headquarters holds every read and crop of the backlog (its position has reached the
    post's last outbox seq): polled from this process, in a connection of its own."""

    def __init__(self, target: str, post_id: str, last_seq: int):
        self.target, self.post_id, self.last_seq = target, post_id, last_seq
        self.done = False
        self.checked = 0.0

    def __call__(self) -> bool:
        if time.monotonic() - self.checked < 1.0:
            return False
        self.checked = time.monotonic()
        with hq.hq_database.connection_context():
            row = hq.HQPost.get_or_none(hq.HQPost.id == self.post_id)
            self.done = row is not None and row.last_seq >= self.last_seq
        return self.done


def _catch_up(mode, target, hq_port, post_port, hq_dir, settings, child_env, logs, watch) -> tuple:
    """The timed catch-up: (client, server, seconds, started at, post child, headquarters child)."""
    python = sys.executable
    if mode == "push":
        client, server, sync_s, started_at = _timed_pair(
            (
                "hq",
                [python, "-c", f"from appliance.bench.sync import serve_hq; serve_hq({target!r}, {hq_port})"],
                hq_port,
            ),
            ("post", [python, "-m", "appliance", "sync", "push"], child_env),
            child_env,
            logs,
            watch,
        )
        return client, server, sync_s, started_at, client, server
    else:
        key = hq.hq_key(target, hq_dir)
        child_env["WAYPOST_SYNC__HQ_PUBLIC_KEY"] = base64.b64encode(bundle.raw_public(key.public_key())).decode()
        hq_env = dict(child_env, WAYPOST_STORAGE__DATA_DIR=str(hq_dir))
        client, server, sync_s, started_at = _timed_pair(
            ("post", [python, "-c", "from appliance.bench.sync import serve_post; serve_post()"], post_port),
            ("hq", [python, "-m", "appliance", "hq", "pull", "--database", target, "--post", settings.post.id], hq_env),
            child_env,
            logs,
            watch,
        )
        return client, server, sync_s, started_at, server, client


def line(figures: dict) -> str:
    """One printed line per combination."""
    f = figures
    return (
        f"{f['mode']:4} -> {f['hq_database']:10}  {f['held_at_hq']:>7} of {f['reads']} reads in {f['sync_s']:7.1f} s: "
        f"{f['reads_per_s']:>5} reads/s;  post peak RSS {f['post_peak_rss_mib']:6.1f} MiB;  "
        f"HQ peak RSS {f['hq_peak_rss_mib']:6.1f} MiB;  CPU s post {f['post_cpu_s']}, HQ {f['hq_cpu_s']};  "
        f"chain {'verified' if f['chain_verified'] else 'BROKEN'};  "
        f"load {f['load_before']} -> {f['load_after']}"
        + (
            f";  link {f['link_mbit']} Mbit/s: reads and crops in {f['main_s']} s, every frame in {f['all_s']} s "
            f"({f['frames_to_come']} of {f['frames']} frames still to come)"
            if f.get("link_mbit") or f.get("frame_bytes")
            else ""
        )
    )
