"""Throughput figures for `waypost bench`. Each works in a scratch directory of its own."""
from __future__ import annotations

import datetime as dt
import io
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from appliance import audit, config, db
from appliance.models import utcnow


def _scratch_settings(where: Path | None) -> config.Settings:
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    return config.load(None, environ={"WAYPOST_STORAGE__DATA_DIR": str(root), "WAYPOST_STORAGE__MIN_FREE_MB": "0"})


def _jpeg_of_size(target: int, rng) -> bytes:
    """A noise JPEG close to `target` bytes (noise compresses poorly, so size tracks pixel count)."""
    side = 16
    while True:
        img = rng.integers(0, 256, (side, side * 2, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=85)
        if buf.tell() >= target:
            return buf.getvalue()
        side = int(side * 1.15) + 1


def _unique(jpeg: bytes, n: int) -> bytes:
    """The same picture with a COM segment that makes the bytes (and so the sha256) unique."""
    payload = f"waypost-bench {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def store(count: int, where: Path | None = None) -> dict:
    from appliance.service import bootstrap
    from appliance.store import EvidenceStore, NewRead, save_read

    settings = _scratch_settings(where)
    bootstrap(settings, create_admin=False)
    rng = np.random.default_rng(0)
    crop, frame = _jpeg_of_size(5_000, rng), _jpeg_of_size(60_000, rng)
    evidence = EvidenceStore(settings)
    with db.connection():
        start = time.perf_counter()
        for i in range(count):
            new = NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.93, captured_at=utcnow(),
                          char_confidences=[0.9] * 7, alternatives=[{"text": "7A8C123", "score": 0.04}],
                          box=(100, 200, 120, 60))
            save_read(settings, evidence, new, _unique(crop, i), _unique(frame, i))
        elapsed = time.perf_counter() - start
    return {"benchmark": "store", "reads": count, "seconds": round(elapsed, 3),
            "reads_per_s": round(count / elapsed, 1), "crop_bytes": len(crop), "frame_bytes": len(frame),
            "synchronous": settings.storage.synchronous, "data_dir": str(settings.data_dir)}


def audit_chain(count: int, where: Path | None = None, single: int = 5000) -> dict:
    """Appends `single` records one transaction each (as the product does), the rest in large
    transactions to reach `count`, then times a full verify."""
    from appliance.service import bootstrap

    settings = _scratch_settings(where)
    bootstrap(settings, create_admin=False)
    actor = audit.Actor("officer.bench", "Bench PD", "127.0.0.1")
    purpose = audit.Purpose("STOLEN-VEH", "24-000123")
    single = min(single, count)
    with db.connection():
        base = audit.head()[0]
        start = time.perf_counter()
        for i in range(single):
            with db.write():
                audit.record("read.search", actor, query={"plate": f"7ABC{i % 1000:03d}"}, purpose=purpose,
                             result_count=i % 7)
        per_txn = single / (time.perf_counter() - start)
        start = time.perf_counter()
        remaining = count - single
        while remaining > 0:
            n = min(remaining, 50_000)
            with db.write():
                for i in range(n):
                    audit.record("read.search", actor, query={"plate": f"8XYZ{i % 1000:03d}"}, purpose=purpose,
                                 result_count=i % 7)
            remaining -= n
        bulk = (count - single) / (time.perf_counter() - start) if count > single else None
        start = time.perf_counter()
        result = audit.verify()
        verify_s = time.perf_counter() - start
    assert result.ok, result.summary()
    return {"benchmark": "audit", "records": result.checked, "appends_per_s_one_txn_each": round(per_txn, 1),
            "appends_per_s_batched": round(bulk, 1) if bulk else None, "verify_seconds": round(verify_s, 3),
            "verify_records_per_s": round(result.checked / verify_s, 1), "db_bytes": os.path.getsize(settings.db_path),
            "base": base}


def pipeline(seconds: float = 60, width: int = 1920, height: int = 1080, fps: float = 10.0,
             vehicles_per_min: float = 20.0, where: Path | None = None, empty: bool = False) -> dict:
    """Frames per second through the whole pipeline (video decode, motion gate, detect, read,
    track, store, match) on a synthetic demo clip, with 1 inference thread; and, against the
    clip's truth, reads per vehicle pass and alerts for hotlisted vehicles only."""
    import dataclasses
    import datetime as dt

    from appliance import hotlist
    from appliance.capture import create_source
    from appliance.capture.demo import demo_hotlist_csv, write_clip
    from appliance.models import Alert, Read
    from appliance.pipeline import Pipeline
    from appliance.service import bootstrap, system_actor
    from appliance.store import EvidenceStore
    from recognizer import Recognizer

    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    clip = root / ("empty.avi" if empty else "street.avi")
    truth = write_clip(clip, seconds, fps, width, height, seed=1, vehicles_per_min=vehicles_per_min, empty=empty)
    settings = config.load(None, environ={
        "WAYPOST_STORAGE__DATA_DIR": str(root / "data"), "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CAPTURE__TYPE": "video", "WAYPOST_CAPTURE__SOURCE": str(clip), "WAYPOST_CAPTURE__LOOP": "false",
        "WAYPOST_CAPTURE__FPS": str(fps), "WAYPOST_RECOGNIZER__THREADS": "1"})
    bootstrap(settings, create_admin=False)
    with db.connection():
        demo_hotlist_csv(root / "demo.csv")
        hotlist.import_csv(settings, root / "demo.csv", "DEMO", system_actor(settings))
        pipe = Pipeline(settings, Recognizer(threads=1), EvidenceStore(settings))
        source = create_source(settings.capture)
        source.open()
        t0 = utcnow()
        frames = 0
        start = time.perf_counter()
        while (frame := source.read()) is not None:
            # clip time, not wall time, decides when a pass has ended
            pipe.process(dataclasses.replace(frame, captured_at=t0 + dt.timedelta(seconds=frame.index / fps)))
            frames += 1
        pipe.flush()
        elapsed = time.perf_counter() - start
        source.close()
        reads = list(Read.select())
        alerted = {a.read.plate for a in Alert.select().join(Read)}
    passes = truth["passes"]
    by_plate: dict[str, int] = {}
    for r in reads:
        by_plate[r.plate] = by_plate.get(r.plate, 0) + 1
    truth_plates = {p["plate"] for p in passes}
    hot = {p["plate"] for p in passes if p["hotlisted"]}
    return {
        "benchmark": "pipeline", "clip": f"{width}x{height} {seconds:g}s @ {fps:g} fps" + (" empty" if empty else ""),
        "frames": frames, "seconds": round(elapsed, 2), "fps": round(frames / elapsed, 1),
        "frames_read": pipe.stats.frames_read, "passes": len(passes), "reads": len(reads),
        "reads_per_pass": round(len(reads) / len(passes), 3) if passes else None,
        "passes_read_exactly": sum(1 for p in truth_plates if p in by_plate),
        "passes_read_more_than_once": sum(1 for p in truth_plates if by_plate.get(p, 0) > 1),
        "reads_not_matching_any_pass": sum(n for p, n in by_plate.items() if p not in truth_plates),
        "hotlisted_passes": len(hot), "hotlisted_alerted": len(hot & alerted),
        "alerts_for_other_vehicles": len(alerted - hot),
    }


# -- search at scale ----------------------------------------------------------------------------------

_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_DIGITS = "0123456789"
_CONFUSE = {"0": "OD", "O": "0D", "D": "0O", "1": "I", "I": "1", "8": "B", "B": "8", "5": "S", "S": "5",
            "2": "Z", "Z": "2", "6": "G", "G": "6"}


def _plate(rng) -> str:
    """US-like serials: California's 9AAA999 most, other states' layouts, some vanity plates."""
    kind = rng.random()
    pick = lambda alphabet, n: "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))  # noqa: E731
    if kind < 0.55:
        return pick(_DIGITS[1:], 1) + pick(_LETTERS, 3) + pick(_DIGITS, 3)
    if kind < 0.75:
        return pick(_LETTERS, 3) + pick(_DIGITS, 4)
    if kind < 0.85:
        return pick(_DIGITS, 3) + pick(_LETTERS, 3)
    if kind < 0.93:
        return pick(_DIGITS, 1) + pick(_LETTERS, 2) + pick(_DIGITS, 4)
    return pick(_LETTERS + _DIGITS, int(rng.integers(3, 8)))


def _misread(plate: str, rng) -> str:
    i = int(rng.integers(0, len(plate)))
    c = plate[i]
    options = _CONFUSE.get(c) or (_DIGITS if c.isdigit() else _LETTERS)
    return plate[:i] + options[int(rng.integers(0, len(options)))] + plate[i + 1:]


def fill(settings: config.Settings, count: int, seed: int = 1, batch: int = 20_000, progress=None) -> dict:
    """Add synthetic reads (rows only: evidence rows point at no file) until the database holds
    `count`: plates of US layouts, a fifth of them regulars seen again and again, 1-3 alternative
    readings each, two cameras, a year of timestamps. Indexed exactly as save_read indexes."""
    import json
    import uuid

    from appliance import search
    rng = np.random.default_rng(seed)
    regulars = [_plate(rng) for _ in range(max(1000, count // 50))]
    database = db.database
    have = database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
    start_at = utcnow() - dt.timedelta(days=365)
    step = dt.timedelta(days=365) / max(count, 1)
    cols = ", ".join(["plate"] + [f"alt{i}" for i in range(1, search.ALT_COLUMNS + 1)])
    t0 = time.perf_counter()
    done = have
    while done < count:
        n = min(batch, count - done)
        reads, evidence, outbox, fts = [], [], [], []
        base_id = (database.execute_sql("SELECT coalesce(max(id), 0) FROM read").fetchone()[0]) + 1
        for k in range(n):
            rid = base_id + k
            plate = regulars[int(rng.integers(0, len(regulars)))] if rng.random() < 0.2 else _plate(rng)
            alts = []
            for _ in range(int(rng.integers(1, 4))):
                alt = _misread(plate, rng)
                if alt != plate and alt not in [a["text"] for a in alts]:
                    alts.append({"text": alt, "score": round(float(rng.uniform(0.01, 0.3)), 4)})
            at = start_at + step * (done + k)
            conf = round(float(rng.uniform(0.5, 0.99)), 4)
            x, y = int(rng.integers(0, 1700)), int(rng.integers(300, 900))
            reads.append((rid, str(uuid.UUID(bytes=rng.bytes(16), version=4)), settings.post.id,
                          "cam-1" if rng.random() < 0.7 else "cam-2", at, at - dt.timedelta(seconds=2), at,
                          plate, plate, "ca", 0.8, conf,
                          json.dumps([round(float(c), 3) for c in rng.uniform(0.6, 1.0, len(plate))]),
                          json.dumps(alts), x, y, 120, 60,
                          json.dumps([[x, y], [x + 120, y], [x + 120, y + 60], [x, y + 60]]),
                          "toward" if rng.random() < 0.5 else "away", conf < 0.6, at))
            evidence.append((rid, "crop", rng.bytes(32).hex(), 5000, 180, 60))
            evidence.append((rid, "frame", rng.bytes(32).hex(), 60000, 1280, 720))
            outbox.append(("read", reads[-1][1], at))
            fts.append((rid, *search._columns(plate, alts)))
        with db.write():
            database.execute_sql("SELECT 1")
            cur = database.cursor()
            cur.executemany(
                "INSERT INTO read (id, uuid, post_id, camera_id, captured_at, first_seen_at, last_seen_at, plate_raw, "
                "plate, region, region_confidence, confidence, char_confidences, alternatives, box_x, box_y, box_w, "
                "box_h, corners, direction, low_confidence, created_at) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", reads)
            cur.executemany("INSERT INTO evidence (read_id, kind, sha256, bytes, width, height, content_type) "
                            "VALUES (?, ?, ?, ?, ?, ?, 'image/jpeg')", evidence)
            cur.executemany("INSERT INTO outbox (kind, object_id, created_at) VALUES (?, ?, ?)", outbox)
            cur.executemany(f"INSERT INTO read_text (rowid, {cols}) VALUES (?, ?, ?, ?, ?, ?)", fts)
        done += n
        if progress:
            progress(done, count, time.perf_counter() - t0)
    return {"added": done - have, "seconds": round(time.perf_counter() - t0, 1)}


def search_at_scale(count: int = 10_000_000, where: Path | None = None, queries: int = 100, seed: int = 7,
                    progress=None) -> dict:
    """Fill a scratch database to `count` reads (kept in `where` for the next run), then time the
    first page of each kind of search on plates that are there (and misread ones for similar)."""
    from appliance import search
    from appliance.service import bootstrap

    settings = _scratch_settings(where)
    bootstrap(settings, create_admin=False)
    with db.connection():
        filled = fill(settings, count, progress=progress)
        database = db.database
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        n_reads = database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
        max_id = database.execute_sql("SELECT max(id) FROM read").fetchone()[0]
        rng = np.random.default_rng(seed)
        samples = []
        while len(samples) < queries:
            row = database.execute_sql("SELECT plate FROM read WHERE id = ?", [int(rng.integers(1, max_id + 1))]).fetchone()
            if row and len(row[0]) >= 6:
                samples.append(row[0])
        cases = {
            "exact": [search.Query(p) for p in samples],
            "wildcard": [search.Query(p[:3] + "*", "wildcard") if i % 2 else
                         search.Query(p[:1] + "?" + p[2:-1] + "?", "wildcard") for i, p in enumerate(samples)],
            "partial": [search.Query(p[1:5], "partial") for p in samples],
            "similar": [search.Query(_misread(p, rng), "similar") for p in samples],
        }
        out = {"benchmark": "search", "reads": n_reads, "filled": filled}
        for mode, qs in cases.items():
            times, found = [], 0
            for q in qs:
                t = time.perf_counter()
                page = search.search(q, limit=25)
                times.append((time.perf_counter() - t) * 1000)
                found += bool(page.hits)
            out[mode] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                         "p95_ms": round(float(np.percentile(times, 95)), 1),
                         "max_ms": round(max(times), 1), "queries": len(qs), "with_results": found}
        db_bytes = sum(p.stat().st_size for p in (settings.db_path, settings.db_path.with_name(settings.db_path.name + "-wal"))
                       if p.exists())     # not the backups a migration leaves beside it
        out["db_bytes"] = db_bytes
        out["db_bytes_per_read"] = round(db_bytes / max(n_reads, 1), 1)
        out["data_dir"] = str(settings.data_dir)
    return out


def live_page(loads: int = 30, where: Path | None = None, capture: bool = True) -> dict:
    """Load time of the live view in Debian's chromium (Playwright, a dev dependency) with a warm
    cache: a running post (demo capture unless capture=False) with a day of reads and open alerts,
    an officer signed in with a purpose stated, then `loads` reloads timed by the browser's own
    navigation timing (start of the request to the load event)."""
    import shutil
    import socket

    from appliance import hotlist, search, users
    from appliance.alerts import raise_alerts
    from appliance.capture.demo import DEMO_HOTLIST, demo_hotlist_csv
    from appliance.models import Read, User
    from appliance.service import PostService, bootstrap, system_actor
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise RuntimeError("the live-page benchmark needs Playwright (requirements-dev.txt)") from exc
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise RuntimeError("the live-page benchmark needs Debian's chromium (apt install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    settings = config.load(None, environ={
        "WAYPOST_STORAGE__DATA_DIR": str(root), "WAYPOST_STORAGE__MIN_FREE_MB": "0", "WAYPOST_WEB__PORT": str(port),
        "WAYPOST_CAPTURE__TYPE": "demo" if capture else "folder", "WAYPOST_RECOGNIZER__THREADS": "1"})
    bootstrap(settings, create_admin=False)
    password = "bench officer passphrase"
    with db.connection():
        fill(settings, 5000)
        demo_hotlist_csv(root / "hot.csv")
        hotlist.import_csv(settings, root / "hot.csv", "DEMO", system_actor(settings))
        plates = [e["plate"] for e in DEMO_HOTLIST[:5]]
        with db.write():
            for read in Read.select().order_by(Read.id.desc()).limit(5):   # five reads become hotlisted
                search.unindex_read(read.id, read.plate, read.alternatives)
                read.plate = plates.pop()
                read.save()
                search.index_read(read.id, read.plate, read.alternatives)
                raise_alerts(settings, read)
        if not User.select().where(User.username == "bench.officer").exists():
            users.add(system_actor(settings), username="bench.officer", display_name="Bench Officer",
                      organization=settings.post.agency, role="officer", password=password, must_change_password=False)
            users.set_training(system_actor(settings), "bench.officer", completed_on=utcnow().date() - dt.timedelta(days=1),
                               expires_on=utcnow().date() + dt.timedelta(days=300), course="bench")
    service = PostService(settings, with_capture=capture).start()
    base = f"http://127.0.0.1:{port}"
    times, server = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/auth/login")
            page.fill("#username", "bench.officer")
            page.fill("#password", password)
            page.click("button[type=submit]")
            page.select_option("#purpose", "STOLEN-VEH")
            page.fill("#case_number", "26-000417")
            page.click("#state-purpose")
            page.locator("#latest-reads").wait_for()
            for _ in range(loads):
                page.reload(wait_until="load")
                nav = page.evaluate("() => { const n = performance.getEntriesByType('navigation')[0];"
                                    " return [n.loadEventEnd - n.startTime, n.responseEnd - n.requestStart]; }")
                times.append(nav[0])
                server.append(nav[1])
            rows = page.locator("#latest-reads tbody tr").count()
            browser.close()
    finally:
        service.stop()
    return {"benchmark": "live_page", "loads": loads, "capture_running": capture, "reads_listed": rows,
            "load_ms_p50": round(float(np.percentile(times, 50)), 1), "load_ms_p95": round(float(np.percentile(times, 95)), 1),
            "response_ms_p50": round(float(np.percentile(server, 50)), 1), "data_dir": str(root)}


def fill_access_log(settings: config.Settings, count: int, since: dt.datetime, until: dt.datetime,
                    seed: int = 3, batch: int = 50_000) -> int:
    """Append `count` chained access records with times spread evenly over [since, until) (naive
    UTC): searches (a sixth without a hit), views, live views, sign-ins and failures, hotlist,
    sharing, hold and retention actions, by 60 users under every configured purpose. Rows are made
    with audit.sealed() and inserted in large transactions: the same records record() would write,
    minutes faster. Returns the new head seq."""
    import random

    rng = random.Random(seed)
    users = [f"officer.{i:02d}" for i in range(60)]
    codes = settings.purpose_codes()
    agency = settings.post.agency
    # (action, weight, data access)
    kinds = [("read.search", 40, True), ("read.view", 25, True), ("evidence.view", 15, True),
             ("read.live", 8, True), ("alert.view", 4, True), ("auth.login", 4, False),
             ("auth.login_failed", 1.5, False), ("auth.lockout", 0.2, False), ("hotlist.entry_add", 0.1, False),
             ("hotlist.import", 0.05, False), ("sharing.request", 0.05, False), ("hold.place", 0.05, False),
             ("retention.run", 0.01, False), ("auth.logout", 2, False)]
    names = [k[0] for k in kinds]
    weights = [k[1] for k in kinds]
    data = {k[0]: k[2] for k in kinds}
    step = (until - since) / count
    columns = ", ".join(audit.COLUMNS)
    marks = ", ".join("?" * len(audit.COLUMNS))
    with db.connection():
        seq, prev = audit.head()
        done = 0
        while done < count:
            n = min(batch, count - done)
            actions = rng.choices(names, weights, k=n)
            rows = []
            for i, action in enumerate(actions):
                k = done + i
                at = audit.stamp(since + step * k)
                who = users[k % 60]
                plate = f"{k % 9}ABC{k % 997:03d}"
                if data[action]:
                    code, case = codes[k % len(codes)], f"24-{k % 5000:06d}"
                    query = audit.canonical({"plate": plate, "mode": "exact"} if action == "read.search" else {"read": plate})
                    result = (0 if k % 6 == 0 else k % 5 + 1) if action == "read.search" else 1
                else:
                    code = case = ""
                    query, result = "{}", None
                rows.append((seq + 1 + k, at, who, agency, action, query, code, case, "[]", result, "10.0.0.2", "{}"))
            sealed = list(audit.sealed(rows, prev))
            prev = sealed[-1][-1]
            with db.write():
                db.database.cursor().executemany(f"INSERT INTO access_record ({columns}) VALUES ({marks})", sealed)
            done += n
    return seq + count


def report(count: int = 1_000_000, where: Path | None = None) -> dict:
    """Time reports.quarterly() (chain verification included) over `count` access records in one
    quarter, on a scratch database filled by fill_access_log()."""
    from appliance import reports
    from appliance.service import bootstrap

    settings = _scratch_settings(where)
    bootstrap(settings, create_admin=False)
    label = reports.previous_quarter(settings.post.timezone)
    period = reports.quarter(label, settings.post.timezone)
    with db.connection():
        have = db.database.execute_sql("SELECT count(*) FROM access_record").fetchone()[0]
    start = time.perf_counter()
    if have < count:
        fill_access_log(settings, count - have, period.start_utc, period.end_utc)
    fill_s = time.perf_counter() - start
    def cpu():      # this process and its finished children (verify's workers): a figure load does not inflate
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    with db.connection():
        start, cpu0 = time.perf_counter(), cpu()
        result = reports.quarterly(settings, label, verify_chain=False)
        queries_s, queries_cpu = time.perf_counter() - start, cpu() - cpu0
        start, cpu0 = time.perf_counter(), cpu()
        result = reports.quarterly(settings, label)
        total_s, total_cpu = time.perf_counter() - start, cpu() - cpu0
    assert result.chain.ok, result.chain.summary()
    return {"benchmark": "report", "quarter": label, "records_in_quarter": result.records,
            "records_in_log": result.chain.checked, "fill_seconds": round(fill_s, 1),
            "quarterly_seconds_without_verify": round(queries_s, 3), "quarterly_seconds": round(total_s, 3),
            "cpu_seconds_without_verify": round(queries_cpu, 3), "cpu_seconds": round(total_cpu, 3),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "users": len(result.users), "searches": result.searches,
            "searches_without_hit": result.searches_without_hit, "db_bytes": os.path.getsize(settings.db_path),
            "data_dir": str(settings.data_dir)}
