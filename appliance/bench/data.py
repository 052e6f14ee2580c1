"""Synthetic data the benchmarks share: scratch settings, JPEGs of a given size, California-style
plates and their misreadings, reads and access records in bulk."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import struct
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from appliance import audit, config, db, search
from appliance.models import utcnow


def scratch_settings(where: Path | None) -> config.Settings:
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    return config.load(None, environ={"WAYPOST_STORAGE__DATA_DIR": str(root), "WAYPOST_STORAGE__MIN_FREE_MB": "0"})


def jpeg_of_size(target: int, rng) -> bytes:
    """A noise JPEG close to `target` bytes (noise compresses poorly, so size tracks pixel count)."""
    side = 16
    while True:
        img = rng.integers(0, 256, (side, side * 2, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=85)
        if buf.tell() >= target:
            return buf.getvalue()
        side = int(side * 1.15) + 1


def unique(jpeg: bytes, n: int) -> bytes:
    """The same picture with a COM segment that makes the bytes (and so the sha256) unique."""
    payload = f"waypost-bench {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"

DIGITS = "0123456789"

CONFUSE = {
    "0": "OD",
    "O": "0D",
    "D": "0O",
    "1": "I",
    "I": "1",
    "8": "B",
    "B": "8",
    "5": "S",
    "S": "5",
    "2": "Z",
    "Z": "2",
    "6": "G",
    "G": "6",
}


def random_plate(rng) -> str:
    """US-like serials: California's 9AAA999 most, other states' layouts, some vanity plates."""
    kind = rng.random()
    pick = lambda alphabet, n: "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))  # noqa: E731
    if kind < 0.55:
        return pick(DIGITS[1:], 1) + pick(LETTERS, 3) + pick(DIGITS, 3)
    if kind < 0.75:
        return pick(LETTERS, 3) + pick(DIGITS, 4)
    if kind < 0.85:
        return pick(DIGITS, 3) + pick(LETTERS, 3)
    if kind < 0.93:
        return pick(DIGITS, 1) + pick(LETTERS, 2) + pick(DIGITS, 4)
    return pick(LETTERS + DIGITS, int(rng.integers(3, 8)))


def misread(plate: str, rng) -> str:
    i = int(rng.integers(0, len(plate)))
    c = plate[i]
    options = CONFUSE.get(c) or (DIGITS if c.isdigit() else LETTERS)
    return plate[:i] + options[int(rng.integers(0, len(options)))] + plate[i + 1 :]


def fill(settings: config.Settings, count: int, seed: int = 1, batch: int = 20_000, progress=None) -> dict:
    """Add synthetic reads (rows only: evidence rows point at no file) until the database holds
    `count`: plates of US layouts, a fifth of them regulars seen again and again, 1-3 alternative
    readings each, two cameras, a year of timestamps. Indexed exactly as save_read indexes."""

    database = db.database
    have = database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
    # a fill that grows an interrupted one draws another stream (the same seed would repeat its uuids)
    rng = np.random.default_rng(seed if not have else [seed, have])
    regulars = [random_plate(rng) for _ in range(max(1000, count // 50))]
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
            plate = regulars[int(rng.integers(0, len(regulars)))] if rng.random() < 0.2 else random_plate(rng)
            alts: list[dict[str, str | float]] = []
            for _ in range(int(rng.integers(1, 4))):
                alt = misread(plate, rng)
                if alt != plate and alt not in [a["text"] for a in alts]:
                    alts.append({"text": alt, "score": round(float(rng.uniform(0.01, 0.3)), 4)})
            at = start_at + step * (done + k)
            conf = round(float(rng.uniform(0.5, 0.99)), 4)
            x, y = int(rng.integers(0, 1700)), int(rng.integers(300, 900))
            reads.append(
                (
                    rid,
                    str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                    settings.post.id,
                    "cam-1" if rng.random() < 0.7 else "cam-2",
                    at,
                    at - dt.timedelta(seconds=2),
                    at,
                    plate,
                    plate,
                    "ca",
                    0.8,
                    conf,
                    json.dumps([round(float(c), 3) for c in rng.uniform(0.6, 1.0, len(plate))]),
                    json.dumps(alts),
                    x,
                    y,
                    120,
                    60,
                    json.dumps([[x, y], [x + 120, y], [x + 120, y + 60], [x, y + 60]]),
                    "toward" if rng.random() < 0.5 else "away",
                    conf < 0.6,
                    at,
                )
            )
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
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                reads,
            )
            cur.executemany(
                "INSERT INTO evidence (read_id, kind, sha256, bytes, width, height, content_type) "
                "VALUES (?, ?, ?, ?, ?, ?, 'image/jpeg')",
                evidence,
            )
            cur.executemany("INSERT INTO outbox (kind, object_id, created_at) VALUES (?, ?, ?)", outbox)
            cur.executemany(f"INSERT INTO read_text (rowid, {cols}) VALUES (?, ?, ?, ?, ?, ?)", fts)
        done += n
        if progress:
            progress(done, count, time.perf_counter() - t0)
    return {"added": done - have, "seconds": round(time.perf_counter() - t0, 1)}


def fill_access_log(
    settings: config.Settings, count: int, since: dt.datetime, until: dt.datetime, seed: int = 3, batch: int = 50_000
) -> int:
    """Append `count` chained access records with times spread evenly over [since, until) (naive
    UTC): searches (a sixth without a hit), views, live views, sign-ins and failures, hotlist,
    sharing, hold and retention actions, by 60 users under every configured purpose. Rows are made
    with audit.sealed() and inserted in large transactions: the same records record() would write,
    minutes faster. Returns the new head seq."""

    rng = random.Random(seed)
    users = [f"officer.{i:02d}" for i in range(60)]
    codes = settings.purpose_codes()
    agency = settings.post.agency
    # (action, weight, data access)
    kinds = [
        ("read.search", 40, True),
        ("read.view", 25, True),
        ("evidence.view", 15, True),
        ("read.live", 8, True),
        ("alert.view", 4, True),
        ("auth.login", 4, False),
        ("auth.login_failed", 1.5, False),
        ("auth.lockout", 0.2, False),
        ("hotlist.entry_add", 0.1, False),
        ("hotlist.import", 0.05, False),
        ("sharing.request", 0.05, False),
        ("hold.place", 0.05, False),
        ("retention.run", 0.01, False),
        ("auth.logout", 2, False),
    ]
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
                    query = audit.canonical(
                        {"plate": plate, "mode": "exact"} if action == "read.search" else {"read": plate}
                    )
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
