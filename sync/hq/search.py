"""The officers' search at headquarters: every post's reads by plate (exact, wildcard, contains,
similar), filtered by post, camera and time range, newest first, on SQLite or PostgreSQL.

A read is found by its plate AND its alternative readings, as on the post (appliance/search.py,
whose rules and messages this shares). `hq_read_text` holds one row per text of a read (the plate,
then its best alternatives), the text folded to its OCR skeleton, and the text reversed; all
byte-ordered, so that every search is an index lookup or range on either database:

- exact:    text = plate;
- wildcard: the known characters before the first `*`/`?` are a range of `text`, or those after
            the last one a range of `reversed`; LIKE checks the rest;
- contains, or a wildcard without two known characters at either end: LIKE over the rows of a
            time range (from and to are required, as the post requires them for a pattern it
            cannot index);
- similar:  every text within one edit of the plate after folding is spelled out (about 30 per
            character) and looked up in `folded`; ranked same, confusable, one edit, plate before
            alternative, newest.

The table is filled from hq_read by catch_up(), never by ingest (a batch stays one insert per
chunk): `waypost hq serve` runs it every few seconds in a thread, and every search runs it first,
so a search sees every read stored before it started (unless more than SEARCH_CATCH_UP wait: the
page then says that the newest reads are not searched yet). Nothing here writes an access record or
checks a purpose: the web layer (web/hq/pages.py) does both before any of this data leaves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager

from peewee import (
    SQL,
    ColumnBase,
    NodeList,
    OperationalError,
    SqliteDatabase,
    Tuple,
    fn,
)

from appliance.hotlist import skeleton
from appliance.search import SKELETON_ALPHABET, SearchError, normalise, texts_of
from recognizer.similarity import edits_within_one
from sync.hq.models import HQAlert, HQCamera, HQImage, HQPost, HQRead, HQReadText, hq_database
from sync.hq.models import write as hq_write

log = logging.getLogger(__name__)

MODES = ("exact", "wildcard", "partial", "similar")
PAGE_MAX = 100
CHUNK = 2000  # reads indexed per transaction
# PostgreSQL hands out ids before commit, so a read with a lower id can become visible after a
# higher one was indexed (two posts' batches committing out of order): each catch-up looks again
# at this many ids below the highest indexed, and the indexer thread looks at all of them every
# FULL_EVERY_S. (SQLite has one writer at a time: its ids become visible in order.)
MARGIN = 5_000
FULL_EVERY_S = 600
# A search indexes at most about this many reads itself (a few seconds); beyond that (the first
# start after an upgrade, a very large sync) it answers from what is indexed and says so, while
# the indexer thread catches up.
SEARCH_CATCH_UP = 20_000
# How long a search waits to index reads itself: a batch being stored holds the write lock (on
# SQLite) for as long as it streams in, and the search can answer from what is indexed meanwhile
# (the page says the newest reads are not searched yet) instead of waiting for it.
SEARCH_WAIT_S = 0.5


@dataclasses.dataclass(frozen=True)
class Query:
    text: str
    mode: str = "exact"
    post_id: str | None = None
    camera_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def as_record(self) -> dict:
        """The query as stored in the access record (the data used to query)."""
        out = {"plate": self.text, "mode": self.mode, "at": "headquarters"}
        if self.post_id:
            out["post"] = self.post_id
        if self.camera_id:
            out["camera"] = self.camera_id
        if self.since:
            out["since"] = self.since.isoformat(timespec="seconds") + "Z"
        if self.until:
            out["until"] = self.until.isoformat(timespec="seconds") + "Z"
        return out


@dataclasses.dataclass
class Hit:
    read: HQRead
    matched: str
    on_alternative: bool
    kind: str = "match"  # similar: same | confusable | one edit

    def has_image(self, kind: str) -> bool:
        return any(im.get("kind") == kind for im in self.read.data.get("images") or [])


@dataclasses.dataclass
class Page:
    hits: list[Hit]
    next_cursor: str | None  # pass as `cursor` for the next (older, or lower-ranked) page
    candidates: int  # rows examined
    behind: bool = False  # reads stored but not yet indexed (after a large sync or an upgrade)


# --- the index -------------------------------------------------------------------------------------

_lock = threading.Lock()


def _stamp(value) -> str:
    return str(value).replace(" ", "T")


_TEXT_COLUMNS = "read_id, alt, post_id, camera_id, captured_at, text, folded, reversed"


def catch_up(chunk: int = CHUNK, full: bool = False, limit: int | None = None, wait_s: float | None = None) -> int:
    """Index the reads hq_read holds and hq_read_text does not yet; returns how many. `full`
    looks at every read (else only from a little below the highest indexed); `limit` stops
    after about that many. The lock is held a chunk at a time, so that a search's catch-up and
    the indexer's take turns instead of one waiting for the other's whole backlog. With `wait_s`
    (a search), it stops when the indexer's lock or the database's write lock is not had within
    that long, and leaves the rest to the indexer thread."""
    db = hq_database
    p = db.param
    done = 0
    top = db.execute_sql("SELECT coalesce(max(read_id), 0) FROM hq_read_text").fetchone()[0]
    margin = 0 if isinstance(db.obj, SqliteDatabase) else MARGIN
    cursor = 0 if full else max(0, top - margin)
    while limit is None or done < limit:
        if not _lock.acquire(timeout=-1 if wait_s is None else wait_s):
            return done
        try:
            rows = db.execute_sql(
                f"SELECT r.id, r.post_id, r.captured_at, r.plate, r.data FROM hq_read r WHERE r.id > {p} "
                # t.read_id's own bound lets PostgreSQL's merge anti-join start at the cursor
                # instead of walking the whole index.
                f"AND NOT EXISTS (SELECT 1 FROM hq_read_text t WHERE t.read_id = r.id AND t.read_id > {p}) "
                f"ORDER BY r.id LIMIT {p}",
                (cursor, cursor, chunk if limit is None else min(chunk, limit - done)),
            ).fetchall()
            if not rows:
                return done
            texts, cams = [], set()
            for read_id, post_id, captured_at, plate, data in rows:
                data = json.loads(data) if isinstance(data, str) else (data or {})
                camera = str(data.get("camera_id") or "")
                for alt, text in enumerate(dict.fromkeys(texts_of(plate, data.get("alternatives")))):
                    texts.append((read_id, alt, post_id, camera, _stamp(captured_at), text, skeleton(text), text[::-1]))
                cams.add((post_id, camera))
            try:
                with _waiting_at_most(db, wait_s), hq_write():
                    # Plain multi-row INSERTs: peewee's statement builder costs more than the database here.
                    for start in range(0, len(texts), 500):
                        part = texts[start : start + 500]
                        db.execute_sql(
                            f"INSERT INTO hq_read_text ({_TEXT_COLUMNS}) VALUES "
                            + ", ".join([f"({', '.join([p] * 8)})"] * len(part))
                            + " ON CONFLICT DO NOTHING",
                            [v for row in part for v in row],
                        )
                    HQCamera.insert_many(
                        [{"post_id": a, "camera_id": b} for a, b in sorted(cams)]
                    ).on_conflict_ignore().execute()
            except OperationalError as exc:
                if wait_s is None or "locked" not in str(exc):
                    raise
                log.info("a search left %d read(s) to the indexer: headquarters' database is being written", len(rows))
                return done
        finally:
            _lock.release()
        cursor = rows[-1][0]
        done += len(rows)
    return done


@contextmanager
def _waiting_at_most(db, wait_s: float | None):
    """SQLite's busy timeout of this connection lowered to `wait_s` for the block, then restored
    (PostgreSQL: nothing; a batch being stored holds no lock on the tables a catch-up writes)."""
    if wait_s is None or not isinstance(db.obj, SqliteDatabase):
        yield
        return
    before = db.execute_sql("PRAGMA busy_timeout").fetchone()[0]
    db.execute_sql(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
    try:
        yield
    finally:
        db.execute_sql(f"PRAGMA busy_timeout = {int(before)}")


def behind() -> bool:
    """Whether headquarters holds reads above the highest one indexed (a search would miss them)."""
    db = hq_database  # two index lookups (as one statement PostgreSQL plans a scan of hq_read)
    held = db.execute_sql("SELECT coalesce(max(id), 0) FROM hq_read").fetchone()[0]
    return held > db.execute_sql("SELECT coalesce(max(read_id), 0) FROM hq_read_text").fetchone()[0]


class Indexer(threading.Thread):
    """Keeps the index close behind ingest, so that a search after a large sync does not wait."""

    def __init__(self, stop: threading.Event, interval_s: float = 5.0):
        super().__init__(name="hq-index", daemon=True)
        self.stop, self.interval_s = stop, interval_s

    def run(self) -> None:
        full_at = 0.0
        while not self.stop.is_set():
            try:
                with hq_database.connection_context():
                    full = time.monotonic() >= full_at
                    catch_up(full=full)
                    if full:
                        full_at = time.monotonic() + FULL_EVERY_S
            except Exception:  # a busy or restarting database: try again at the next tick
                log.exception("indexing reads for the search")
            self.stop.wait(self.interval_s)


# --- search ----------------------------------------------------------------------------------------


def _filters(q: Query) -> list:
    T = HQReadText
    out = []
    if q.post_id:
        out.append(T.post_id == q.post_id)
    if q.camera_id:
        out.append(T.camera_id == q.camera_id)
    if q.since:
        out.append(T.captured_at >= q.since.strftime("%Y-%m-%dT%H:%M:%S"))
    if q.until:
        out.append(T.captured_at <= q.until.strftime("%Y-%m-%dT%H:%M:%S.999999"))
    return out


def _bump(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _pattern(q: Query) -> list:
    """The conditions on hq_read_text for exact, wildcard and partial searches."""
    T = HQReadText
    if q.mode == "exact":
        return [T.text == q.text]
    if q.mode == "partial":
        like, prefix, suffix = f"%{q.text}%", "", ""
    else:
        like = q.text.replace("*", "%").replace("?", "_")
        head, tail = re.match(r"[A-Z0-9]*", q.text), re.search(r"[A-Z0-9]*$", q.text)
        assert head is not None and tail is not None  # a starred pattern matches everywhere, if only ""
        prefix = head.group(0)
        suffix = tail.group(0)[::-1]
    # LIKE spelled out: peewee turns its LIKE operator into GLOB on SQLite.
    conds: list[ColumnBase] = [NodeList((T.text, SQL("LIKE"), like))]
    if len(prefix) >= 2 and len(prefix) >= len(suffix):
        conds += [T.text >= prefix, T.text < _bump(prefix)]
    elif len(suffix) >= 2:
        conds += [T.reversed >= suffix, T.reversed < _bump(suffix)]
    elif not (q.since and q.until):
        raise SearchError(
            "a 'contains' search, or a wildcard without two known characters at its start or "
            "end, looks at every read: give a time range (from and to), or anchor the pattern "
            "(e.g. 7AB* or *123)"
        )
    return conds


def search(q: Query, limit: int = 25, cursor: str | None = None) -> Page:
    if not 1 <= limit <= PAGE_MAX:
        raise SearchError(f"page size must be 1 to {PAGE_MAX}")
    q = dataclasses.replace(q, text=normalise(q.text, q.mode))
    catch_up(limit=SEARCH_CATCH_UP, wait_s=SEARCH_WAIT_S)
    late = behind()
    page = _similar(q, limit, cursor) if q.mode == "similar" else _search(q, limit, cursor)
    page.behind = late
    return page


def _search(q: Query, limit: int, cursor: str | None) -> Page:
    T = HQReadText
    conds = _pattern(q) + _filters(q)
    if cursor:
        at, _, read_id = cursor.rpartition("|")
        if not at or not read_id.isdigit():
            raise SearchError(f"the page cursor {cursor[:40]!r} is not one this search made; search again")
        conds.append(Tuple(T.captured_at, T.read_id) < Tuple(at, int(read_id)))
    where = conds[0]
    for cond in conds[1:]:
        where &= cond
    query = (
        T.select(T.read_id, fn.MIN(T.alt).alias("alt"), T.captured_at)
        .where(where)
        .group_by(T.read_id, T.captured_at)
        .order_by(T.captured_at.desc(), T.read_id.desc())
        .limit(limit + 1)
        .tuples()
    )
    rows: list[tuple] = list(query)  # type: ignore[arg-type]  # peewee stubs: .tuples() yields tuples
    more = len(rows) > limit
    rows = rows[:limit]
    reads = _reads([r[0] for r in rows])
    hits = [_hit(reads[read_id], alt) for read_id, alt, _ in rows if read_id in reads]
    return Page(hits, f"{rows[-1][2]}|{rows[-1][0]}" if more and rows else None, len(rows))


def _similar(q: Query, limit: int, cursor: str | None) -> Page:
    if cursor is not None and not cursor.isdigit():
        raise SearchError(f"the page cursor {cursor[:40]!r} is not one this search made; search again")
    T = HQReadText
    folded = skeleton(q.text)
    variants = {folded} | {folded[:i] + folded[i + 1 :] for i in range(len(folded))}
    for i in range(len(folded) + 1):
        for c in SKELETON_ALPHABET:
            variants.add(folded[:i] + c + folded[i:])  # insertion
            if i < len(folded):
                variants.add(folded[:i] + c + folded[i + 1 :])  # substitution
    where = T.folded.in_(sorted(variants))
    for cond in _filters(q):
        where &= cond
    best: dict[int, tuple] = {}
    rows = 0
    query = T.select(T.read_id, T.alt, T.text, T.captured_at).where(where).tuples()
    found: Iterable[tuple] = query  # type: ignore[assignment]  # peewee stubs: .tuples() yields tuples
    for read_id, alt, text, captured_at in found:
        rows += 1
        d = edits_within_one(folded, skeleton(text))
        if d is None:
            continue
        kind = "same" if text == q.text else "confusable" if d == 0 else "one edit"
        rank = (("same", "confusable", "one edit").index(kind), alt > 0)
        if read_id not in best or rank < best[read_id][0]:
            best[read_id] = (rank, kind, alt, captured_at)
    ordered = sorted(best.items(), key=lambda kv: (kv[1][3], kv[0]), reverse=True)  # newest first...
    ordered.sort(key=lambda kv: kv[1][0])  # ...within each rank
    start = int(cursor or 0)
    page = ordered[start : start + limit]
    reads = _reads([read_id for read_id, _ in page])
    hits = []
    for read_id, (_, kind, alt, _) in page:
        if read_id in reads:
            hit = _hit(reads[read_id], alt)
            hit.kind = kind
            hits.append(hit)
    return Page(hits, str(start + limit) if len(ordered) > start + limit else None, rows)


def _reads(ids: list[int]) -> dict[int, HQRead]:
    if not ids:
        return {}
    return {r.id: r for r in HQRead.select().where(HQRead.id.in_(ids))}


def _hit(read: HQRead, alt: int) -> Hit:
    texts = list(dict.fromkeys(texts_of(read.plate, read.data.get("alternatives"))))
    return Hit(read, texts[alt] if alt < len(texts) else read.plate, alt > 0)


# --- one read, its images, what the form offers ---------------------------------------------------


def read(read_id: int) -> HQRead | None:
    return HQRead.get_or_none(HQRead.id == read_id)


def alerts_for(reads: list[HQRead]) -> dict[tuple[str, str], list[dict]]:
    """(post id, read uuid) -> the hotlist alerts the post raised on it."""
    out: dict[tuple[str, str], list[dict]] = {}
    for post_id in {r.post_id for r in reads}:
        uuids = [r.uuid for r in reads if r.post_id == post_id]
        for a in HQAlert.select().where((HQAlert.post_id == post_id) & HQAlert.read_uuid.in_(uuids)):
            out.setdefault((post_id, a.read_uuid), []).append(a.data)
    return out


class ImageError(RuntimeError):
    pass


def image(read: HQRead, kind: str) -> tuple[dict, bytes] | None:
    """The read's image of this kind, found through the read (never by a name from the request) and
    checked against its sha256. None when the read has none; ImageError when the stored bytes differ."""
    meta = next((im for im in read.data.get("images") or [] if im.get("kind") == kind), None)
    if meta is None:
        return None
    row = HQImage.get_or_none(HQImage.sha256 == meta.get("sha256"))
    if row is None:
        return None
    data = bytes(row.data)
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise ImageError(f"image {row.sha256} of read {read.id} does not match its sha256")
    return meta, data


def cameras() -> list[tuple[str, str]]:
    return [(c.post_id, c.camera_id) for c in HQCamera.select().order_by(HQCamera.post_id, HQCamera.camera_id)]


def posts() -> dict[str, str]:
    return {p.id: p.name for p in HQPost.select(HQPost.id, HQPost.name).order_by(HQPost.id)}
