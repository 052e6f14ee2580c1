"""`waypost bench forged-batch`: what a forged batch costs headquarters (issue 17, finding 1).

Headquarters' sync API runs in a child process (as `waypost bench sync` runs it) over a SQLite file
in a scratch directory, with one scratch post enrolled. The forged batch is the attacker's: a
header naming the enrolled post and `unpacked_mib` read lines of 1 MiB that headquarters would take
one by one (forged_body), packed by LZ to about a thousandth, pushed with an X-Waypost-Push header
signed by a random key. Measured from outside headquarters' process:

- each forged push's answer and wall time, `parallel` at a time, and headquarters' CPU time and
  resident memory over them (/proc/<pid>/stat and status; the peak is reset first, clear_refs);
- forged pushes sent while this process holds SQLite's write lock (BEGIN IMMEDIATE), as a batch
  being stored holds it: answered at once, they took no write lock (before, each waited for it);
- a genuine post's batches (`reads` reads, each a 5 KB crop and a 60 KB frame, pushed by
  sync/post.py) stored alone, sent at the same moment as `parallel` forged pushes (the reported
  attack), and while forged pushes go on back to back `parallel` at a time (which measures the
  CPU they take from headquarters and, on one machine, from their sender).

The old cost, for comparison (issue 17): each such push held the write lock 6-11 s and raised
headquarters from 190 to 773 MB; a genuine batch waited 8-10 s behind it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import audit, bundle, config, db
from appliance.bench.data import jpeg_of_size, unique
from appliance.bootstrap import bootstrap
from appliance.models import utcnow
from appliance.store import EvidenceStore, NewRead, save_read
from sync import hq, post, protocol

GOAL_MS = 50  # of headquarters' time per forged push
GOAL_MIB = 10  # more resident memory
LOCK_WAIT_S = 1.0  # an answer while the write lock is held elsewhere within this did not wait for it (10 s)


def forged_body(post_id: str, unpacked_mib: int) -> bytes:
    """The attacker's batch: the post's id in its header, then `unpacked_mib` read lines of 1 MiB,
    each a crop of zeros in base64 whose sha256 matches (a headquarters that reads before it
    authenticates parses and inserts every one), then an unsigned trailer; packed by LZ at level 9
    (a post packs Huffman-only) to about a thousandth."""
    data = "A" * (1 << 20)  # base64 of 768 KiB of zeros
    sha = hashlib.sha256(bytes(3 << 18)).hexdigest()
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    header = {
        "t": "header",
        "format": protocol.FORMAT,
        "post": post_id,
        "batch": "forged-1",
        "first_seq": 1,
        "last_seq": unpacked_mib,
        "chain": {"first_seq": 1, "last_seq": 0, "prev_hash": audit.GENESIS},
    }
    out = [z.compress(protocol.canonical_line(header))]
    for seq in range(1, unpacked_mib + 1):
        line = {
            "t": "read",
            "seq": seq,
            "read": {"uuid": f"forged-{seq}", "captured_at": "2026-01-01T00:00:00", "plate": "7ABC123"},
            "images": [{"kind": "crop", "sha256": sha, "content_type": "image/jpeg", "data": data}],
            "alerts": [],
        }
        out.append(z.compress(protocol.canonical_line(line)))
    out.append(z.compress(protocol.canonical_line({"t": "end", "sha256": "0" * 64, "signature": ""})))
    out.append(z.flush())
    return b"".join(out)


def forged_headers(post_id: str, body: bytes, last_seq: int) -> dict[str, str]:
    """The X-Waypost-Push header for `body` naming `post_id`, signed by a random key."""
    push = protocol.Push(
        post_id,
        "forged-1",
        1,
        last_seq,
        len(body),
        hashlib.sha256(body).hexdigest(),
        dt.datetime.now(dt.UTC).strftime(protocol.PUSH_DATE_FORMAT),
    )
    return protocol.push_headers(push, Ed25519PrivateKey.generate())


def _send(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
    """(status, seconds) of one POST to /hq/v1/batches."""
    started = time.perf_counter()
    conn = socket.create_connection(("127.0.0.1", port), timeout=120)
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        conn.sendall(
            (
                f"POST /hq/v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {protocol.CONTENT_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n{head}\r\n"
            ).encode()
            + body
        )
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    finally:
        conn.close()
    return int(answer.split(b" ", 2)[1]), time.perf_counter() - started


class _Proc:
    """A child process's CPU seconds and memory, read from /proc."""

    def __init__(self, pid: int):
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def memory_kib(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
        return out

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


def _flood(port: int, body: bytes, headers: dict[str, str], parallel: int, count: int | None, stop=None) -> list:
    """Send forged pushes `parallel` at a time: `count` of them, or until `stop` is set.
    Returns [(status, seconds)]."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    sent = [0]

    def worker():
        while True:
            with lock:
                if (count is not None and sent[0] >= count) or (stop is not None and stop.is_set()):
                    return
                sent[0] += 1
            result = _send(port, body, headers)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _genuine_post(root: Path, reads: int, batches: int, hq_url: str) -> tuple[config.Settings, list[Path]]:
    """A scratch post with `reads * batches` reads, and its batches built one after the other
    (each from the position the one before it leaves), spooled to files as the post spools them."""
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(root / "post"),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_SYNC__HQ_URL": hq_url,
    }
    settings = config.load(None, environ=env)
    bootstrap(settings, create_admin=False)
    rng = np.random.default_rng(0)
    crop, frame = jpeg_of_size(5_000, rng), jpeg_of_size(60_000, rng)
    evidence = EvidenceStore(settings)
    key = bundle.post_key(settings)
    files: list[Path] = []
    with db.connection():
        for i in range(reads * batches):
            new = NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.93, captured_at=utcnow())
            save_read(settings, evidence, new, unique(crop, i), unique(frame, i))
        pos = post.Position(0, 0, audit.GENESIS)
        for n in range(batches):
            path = root / f"genuine-{n}.batch"
            with open(path, "wb") as f:
                header = post.build_batch(settings, key, pos, f, max_reads=reads)
            assert header is not None  # reads * batches reads wait
            pos, files = header["next"], [*files, path]
    return settings, files


def _push(settings: config.Settings, path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    with db.connection():
        status, _ = post._send(settings, path)
    return status, time.perf_counter() - started


def _ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"median_ms": 0.0, "max_ms": 0.0}
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(
    where: Path | None = None, forged: int = 30, parallel: int = 3, unpacked_mib: int = 250, reads: int = 100
) -> dict:
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-forged-"))
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    settings, genuine = _genuine_post(root, reads, 6, f"http://127.0.0.1:{port}")
    target = str(root / "hq" / "hq.sqlite")
    for suffix in ("", "-wal", "-shm"):
        Path(target + suffix).unlink(missing_ok=True)
    hq.open_hq(target)
    with hq.hq_database.connection_context():
        hq.enroll(settings.post.id, "bench", bundle.public_pem(bundle.post_key(settings).public_key()))
    hq.hq_database.close()

    t0 = time.perf_counter()
    body = forged_body(settings.post.id, unpacked_mib)
    build_s = time.perf_counter() - t0
    headers = forged_headers(settings.post.id, body, unpacked_mib)

    log = root / "hq.log"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", f"from appliance.bench.sync import serve_hq; serve_hq({target!r}, {port})"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"headquarters did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        proc = _Proc(child.pid)
        _send(port, body, headers)  # the first request loads what every later one uses
        unsigned = _send(port, body, {})
        unknown = _send(port, body, forged_headers("post-unknown", body, unpacked_mib))

        # forged pushes, `parallel` at a time: headquarters' CPU and memory over them
        memory_before = proc.memory_kib()
        peak_reset = proc.reset_peak()
        cpu_before = proc.cpu_s()
        t1 = time.perf_counter()
        flood = _flood(port, body, headers, parallel, forged)
        flood_s = time.perf_counter() - t1
        cpu_s = proc.cpu_s() - cpu_before
        memory_after = proc.memory_kib()

        # while a writer holds SQLite's write lock, as a batch being stored does
        holder = sqlite3.connect(target, isolation_level=None, timeout=0)
        holder.execute("BEGIN IMMEDIATE")
        try:
            locked = _flood(port, body, headers, parallel, parallel * 2)
        finally:
            holder.rollback()
            holder.close()

        # a genuine post's batches: alone; sent with `parallel` forged pushes at the same moment (the
        # reported attack); and while forged pushes go on back to back (all the CPU they can take)
        alone: list[tuple[int, float]] = []
        burst: list[tuple[int, float]] = []
        during: list[tuple[int, float]] = []
        flood_during: list[tuple[int, float]] = []
        for n, path in enumerate(genuine):
            if n % 3 == 0:
                alone.append(_push(settings, path))
                continue
            stop = threading.Event()
            count = parallel if n % 3 == 1 else None
            flooder = threading.Thread(
                target=lambda stop=stop, count=count: flood_during.extend(
                    _flood(port, body, headers, parallel, count, stop)
                ),
                daemon=True,
            )
            flooder.start()
            time.sleep(0.002)  # the forged pushes are on their way when the batch leaves
            (burst if count is not None else during).append(_push(settings, path))
            stop.set()
            flooder.join()
        rows = _refusal_rows(target)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    statuses = sorted({status for status, _ in flood + locked + flood_during})
    hq_ms_each = cpu_s * 1000 / max(1, len(flood))
    rss_growth = (memory_after["VmRSS"] - memory_before["VmRSS"]) / 1024
    peak_growth = (memory_after["VmHWM"] - memory_before["VmRSS"]) / 1024 if peak_reset else None
    figures = {
        "benchmark": "forged-batch",
        "forged_body_bytes": len(body),
        "forged_unpacked_mib": unpacked_mib,
        "forged_build_s": round(build_s, 1),
        "forged_pushes": len(flood),
        "parallel": parallel,
        "forged_statuses": statuses,
        "forged_wall": _ms([s for _, s in flood]),
        "forged_flood_s": round(flood_s, 2),
        "hq_cpu_ms_per_forged": round(hq_ms_each, 2),
        "hq_rss_mib_before": round(memory_before["VmRSS"] / 1024, 1),
        "hq_rss_growth_mib": round(rss_growth, 1),
        "hq_peak_growth_mib": None if peak_growth is None else round(peak_growth, 1),
        "forged_while_write_lock_held": {"statuses": sorted({s for s, _ in locked}), **_ms([s for _, s in locked])},
        "unsigned_status": unsigned[0],
        "unknown_post_status": unknown[0],
        "genuine_statuses": sorted({s for s, _ in alone + burst + during}),
        "genuine_reads_per_batch": reads,
        "genuine_batch_bytes": round(statistics.median(p.stat().st_size for p in genuine)),
        "genuine_alone": _ms([s for _, s in alone]),
        "genuine_with_forged_burst": _ms([s for _, s in burst]),
        "genuine_during_flood": _ms([s for _, s in during]),
        "forged_during_genuine": len(flood_during),
        "refusal_rows": rows,
        "goal": {
            "forged_under_50_ms_of_hq_time": hq_ms_each < GOAL_MS,
            "no_write_lock": all(s < LOCK_WAIT_S for _, s in locked),
            "under_10_mib_more_memory": (peak_growth if peak_growth is not None else rss_growth) < GOAL_MIB,
        },
        "dir": str(root),
    }
    return figures


def _refusal_rows(target: str) -> int:
    with sqlite3.connect(target) as conn:
        return conn.execute("SELECT count(*) FROM hq_batch WHERE status = 'refused'").fetchone()[0]


def lines(f: dict) -> list[str]:
    """The figures for people; the last line printed is the JSON."""
    peak = f["hq_peak_growth_mib"]
    locked = f["forged_while_write_lock_held"]
    return [
        f"forged batch: {f['forged_body_bytes']:,} bytes packed, {f['forged_unpacked_mib']} MiB unpacked "
        f"(built in {f['forged_build_s']} s); without the header: {f['unsigned_status']}, unknown post: "
        f"{f['unknown_post_status']}",
        f"{f['forged_pushes']} forged pushes, {f['parallel']} at a time: answered {f['forged_statuses']} in "
        f"{f['forged_wall']['median_ms']} ms (median), {f['forged_wall']['max_ms']} ms (max); headquarters CPU "
        f"{f['hq_cpu_ms_per_forged']} ms each (goal < {GOAL_MS}); resident memory {f['hq_rss_mib_before']} MiB, "
        f"+{f['hq_rss_growth_mib']} MiB after"
        + ("" if peak is None else f", peak +{peak} MiB")
        + f" (goal < {GOAL_MIB})",
        f"while another writer holds the write lock: answered {locked['statuses']} in {locked['median_ms']} ms "
        f"(median), {locked['max_ms']} ms (max): no forged push waited for the lock",
        f"a genuine batch ({f['genuine_reads_per_batch']} reads, {f['genuine_batch_bytes']:,} bytes, median of 2): "
        f"{f['genuine_alone']['median_ms']} ms alone, {f['genuine_with_forged_burst']['median_ms']} ms sent with "
        f"{f['parallel']} forged pushes, {f['genuine_during_flood']['median_ms']} ms while forged pushes went on back "
        f"to back ({f['forged_during_genuine']} in all, this machine's CPUs shared with their sender); answered "
        f"{f['genuine_statuses']}",
        f"batch log: {f['refusal_rows']} refusal row(s) for all of them",
    ]
