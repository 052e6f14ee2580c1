"""Finding reads by plate: exact, wildcard, partial and similar, across every stored reading.

A read is found by its plate AND by its alternative readings (a 3 read as an 8 is still the
vehicle an officer is looking for), unless the query says `alternatives=False`: then only the
stored plate (read.plate) counts, as for a sharing export, which releases exactly the plates an
approved written request names and never another vehicle's read whose OCR merely guessed it.
Every text of a read goes, folded to its OCR skeleton
(0/O/D/Q, 1/I/L, 8/B, 5/S, 2/Z, 6/G each become one character), into `read_text`: an SQLite FTS5
table with the trigram tokenizer, contentless and without positions (detail=none), keyed by the
read's id. It only proposes candidates: a query is turned into trigrams that every match must
contain, FTS5 returns the ids holding all of them (newest first), and each candidate is then
checked against its real texts. So the index can be small and approximate while results stay
exact.

- exact:   every trigram of the folded plate;
- wildcard (`*` any run, `?` one character) and partial (contains): the trigrams of each run of
  at least three known characters. A pattern without such a run cannot use the index; it is
  refused unless a time range bounds the scan (see MAX_SCAN);
- similar: texts within one edit (substitution, insertion, deletion) of the plate after folding,
  so confusable characters cost nothing. For each position i one of them may differ, so a match
  holds every trigram of plate[:i] and of plate[i+1:]: one FTS query per position, unioned.
  Ranked: same text, then confusable-only, then one edit; a plate before an alternative; newest.

`index_read()` must be called in the read's own transaction (store.save_read does), and
`unindex_read()` before a read is deleted: the table is contentless, so it is told what to remove.

A search only reads, and may read for seconds (a pattern scanning a time range): an officer's runs in
a read transaction (db.read(), a snapshot that never holds up the pipeline's writes), between the
two short writes that record it (web/reads.py: "read.search_asked" before it runs, then
"read.search" naming the plates shown, or "read.search_refused" saying why nothing was). Two
bounds keep many of them from taking the post's cores and web threads: `time_cap_s`, past which a
search is stopped, and `Running`, how many heavy searches (see `heavy()`) run at once, per
account and in all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import peewee

from appliance import audit
from appliance.db import database
from appliance.hotlist import skeleton
from appliance.models import Alert, Read
from recognizer.similarity import edits_within_one

MODES = ("exact", "wildcard", "partial", "similar")
ALT_COLUMNS = 4  # alternatives indexed per read, best first (besides the plate)
MAX_SCAN = 200_000  # reads a pattern without a usable run may scan (time range required)
MIN_SIMILAR = 4  # shortest plate for a similar search
SKELETON_ALPHABET = "0123456789ACEFHJKMNPRTUVWXY"  # what plates fold to (see hotlist.skeleton)
PAGE_MAX = 100

_PLATE = re.compile(r"^[A-Z0-9]{1,10}$")
_PATTERN = re.compile(r"^[A-Z0-9*?]{1,12}$")
PROGRESS_STEPS = 1000  # SQLite VM steps between two looks at the time cap (a few microseconds of work)

# An officer's search is recorded before it runs and after (see the module docstring); a search
# refused, before or while it runs, is recorded as refused, with the reason and nothing shown.
audit.register_action("read.search_asked", True)
audit.register_action("read.search_refused", True)


class SearchError(ValueError):
    """The query cannot be run as given; the message says why and what to change. `reason` is the
    word the refused search's access record keeps."""

    reason = "invalid"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class SearchStopped(SearchError):
    """The search ran past its time cap and was stopped before it showed anything."""

    reason = "time cap"


class SearchLimited(SearchError):
    """Too many heavy searches run already: this account's (`own`), or the post's. Try again shortly."""

    def __init__(self, message: str, reason: str, retry_after_s: int, own: bool):
        super().__init__(message, reason)
        self.retry_after_s, self.own = retry_after_s, own


@dataclasses.dataclass(frozen=True)
class Query:
    text: str
    mode: str = "exact"
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    camera_id: str | None = None
    min_confidence: float | None = None
    alerts_only: bool = False
    alternatives: bool = True  # False: match the stored plate only, never an alternative reading

    def as_record(self) -> dict:
        """The query as stored in the access record (the data used to query)."""
        out: dict[str, str | float | bool] = {"plate": self.text, "mode": self.mode}
        if self.since:
            out["since"] = self.since.isoformat(timespec="seconds") + "Z"
        if self.until:
            out["until"] = self.until.isoformat(timespec="seconds") + "Z"
        if self.camera_id:
            out["camera"] = self.camera_id
        if self.min_confidence is not None:
            out["min_confidence"] = self.min_confidence
        if self.alerts_only:
            out["alerts_only"] = True
        if not self.alternatives:
            out["plate_only"] = True
        return out


@dataclasses.dataclass
class Hit:
    read: Read
    matched: str  # the text that matched (the plate or one alternative)
    on_alternative: bool
    rank: tuple = ()  # (kind, ...sort keys); kind is "match", or for similar: same/confusable/one edit

    @property
    def kind(self) -> str:
        return self.rank[0]


@dataclasses.dataclass
class Page:
    hits: list[Hit]
    next_before: int | None  # pass as `before` for the next (older) page
    scanned: int  # candidates examined (for the benchmark and the log)


# -- the index --------------------------------------------------------------------------------------


def texts_of(plate: str, alternatives) -> list[str]:
    """The plate and its best alternatives, as indexed."""
    alts = [a["text"] if isinstance(a, dict) else a for a in (alternatives or [])]
    return [plate] + [t for t in alts if t and t != plate][:ALT_COLUMNS]


def _columns(plate: str, alternatives) -> list[str]:
    texts = [skeleton(t) for t in texts_of(plate, alternatives)]
    return texts + [""] * (1 + ALT_COLUMNS - len(texts))


_COLS = ", ".join(["plate"] + [f"alt{i}" for i in range(1, ALT_COLUMNS + 1)])
_MARKS = ", ".join("?" * (1 + ALT_COLUMNS))


def index_read(read_id: int, plate: str, alternatives) -> None:
    database.execute_sql(
        f"INSERT INTO read_text (rowid, {_COLS}) VALUES (?, {_MARKS})", [read_id, *_columns(plate, alternatives)]
    )


def unindex_read(read_id: int, plate: str, alternatives) -> None:
    database.execute_sql(
        f"INSERT INTO read_text (read_text, rowid, {_COLS}) VALUES ('delete', ?, {_MARKS})",
        [read_id, *_columns(plate, alternatives)],
    )


# -- queries ------------------------------------------------------------------------------------------


def normalise(text: str, mode: str) -> str:
    text = re.sub(r"[\s\-.·]", "", (text or "").upper())
    if mode not in MODES:
        raise SearchError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "wildcard":
        text = re.sub(r"\*+", "*", text)
        if not _PATTERN.fullmatch(text):
            raise SearchError(
                "a wildcard plate uses letters, digits, * (any run) and ? (one character), at most 12 in all"
            )
        if not re.search(r"[A-Z0-9]", text):
            raise SearchError("a wildcard plate needs at least one known character")
    elif not _PLATE.fullmatch(text):
        raise SearchError("a plate is 1 to 10 letters and digits (spaces and dashes are ignored)")
    if mode == "similar" and len(text) < MIN_SIMILAR:
        raise SearchError(f"a similar-plate search needs at least {MIN_SIMILAR} characters")
    return text


def _trigrams(run: str) -> set[str]:
    return {run[i : i + 3] for i in range(len(run) - 2)}


def _match_expr(trigrams: set[str]) -> str:
    return " AND ".join(f'"{t}"' for t in sorted(trigrams))


@dataclasses.dataclass(frozen=True)
class _Pattern:
    whole: re.Pattern  # matches one text whole (fullmatch)
    quoted: re.Pattern  # finds, in the alternatives as stored (JSON), a quoted text `whole` matches


def _pattern(mode: str, text: str) -> _Pattern:
    """A scan checks up to MAX_SCAN reads: `quoted` looks for a matching alternative in the stored
    JSON before it is decoded (a decode per read held the GIL for most of a scan). Every text is
    there between double quotes, as it is unless JSON escaped something in it (_accept decodes
    those)."""
    if mode == "exact":
        parts = [(re.escape(text), re.escape(text))]
    elif mode == "partial":
        parts = [(".*", '[^"]*'), (re.escape(text), re.escape(text)), (".*", '[^"]*')]
    else:
        parts = [(".*", '[^"]*') if c == "*" else (".", '[^"]') if c == "?" else (re.escape(c),) * 2 for c in text]
    return _Pattern(re.compile("".join(w for w, _ in parts)), re.compile('"' + "".join(q for _, q in parts) + '"'))


def candidate_queries(q: Query) -> list[str] | None:
    """FTS5 MATCH expressions whose union holds every match; None when the index cannot help."""
    if q.mode == "similar":
        folded = skeleton(q.text)
        out = []
        for i in range(len(folded)):
            grams = _trigrams(folded[:i]) | _trigrams(folded[i + 1 :])
            if len(grams) >= 2:
                out.append(_match_expr(grams))
                continue
            # One trigram (or none) left intact around i proposes tens of thousands of reads in
            # a big database: spell out the texts one edit away at i instead, each fully indexed.
            variants = [folded[:i] + c + folded[i + 1 :] for c in SKELETON_ALPHABET]  # substitution
            variants += [folded[:i] + c + folded[i:] for c in SKELETON_ALPHABET]  # insertion
            variants.append(folded[:i] + folded[i + 1 :])  # deletion
            out.extend(_match_expr(_trigrams(v)) for v in variants if _trigrams(v))
        return sorted(set(out)) if out else None
    grams = _known_trigrams(q)
    return [_match_expr(grams)] if grams else None


def _known_trigrams(q: Query) -> set[str]:
    """The trigrams every match of an exact, wildcard or partial query holds (its runs of known
    characters, folded)."""
    runs = re.split(r"[*?]", q.text) if q.mode == "wildcard" else [q.text]
    return set().union(*(_trigrams(skeleton(r)) for r in runs))


def heavy(q: Query) -> bool:
    """Whether the query is heavy: the index narrows it by fewer than two trigrams, so it scans a
    time range (a pattern without three known characters in a row) or checks every read holding
    one trigram (1?1?111). Raises SearchError, before anything is read, for a query that cannot
    run at all (a bad plate, a scan without a time range)."""
    q = dataclasses.replace(q, text=normalise(q.text, q.mode))
    if q.mode == "similar":  # every position's candidates are narrowed by two trigrams or spelled out
        return False
    grams = _known_trigrams(q)
    if not grams and not (q.since and q.until):
        raise _unbounded()
    return len(grams) < 2


def _unbounded() -> SearchError:
    return SearchError(
        "this pattern has no three known characters in a row, so it would search every "
        "read: give a time range (from and to), or more characters",
        "too broad",
    )


class Running:
    """The heavy searches running now in this process, by account, within two bounds: `per_user`
    for one account (a second tab or a script's loop waits its turn) and `at_once` for all. A
    search over either is refused at once rather than queued: a queue would hold a web thread
    each, and the officer is better told to try again."""

    RETRY_AFTER_S = 5

    def __init__(self, per_user: int, at_once: int):
        if per_user < 1 or at_once < 1:
            raise ValueError(f"search bounds must be at least 1, got per_user={per_user} at_once={at_once}")
        self.per_user, self.at_once = per_user, at_once
        self._lock = threading.Lock()
        self._by_user: dict[str, int] = {}

    @contextmanager
    def slot(self, username: str) -> Iterator[None]:
        with self._lock:
            mine = self._by_user.get(username, 0)
            if mine >= self.per_user:
                raise SearchLimited(
                    f"you already have {mine} heavy search{'' if mine == 1 else 'es'} running (at most "
                    f"{self.per_user} at once, search.heavy_per_user): wait for it to finish, or give three "
                    "known characters in a row",
                    "over the per-user bound",
                    self.RETRY_AFTER_S,
                    own=True,
                )
            if sum(self._by_user.values()) >= self.at_once:
                raise SearchLimited(
                    f"the post is busy: it runs at most {self.at_once} heavy search{'' if self.at_once == 1 else 'es'} "
                    f"at once (search.heavy_at_once); try again in {self.RETRY_AFTER_S} seconds, or give three "
                    "known characters in a row",
                    "busy",
                    self.RETRY_AFTER_S,
                    own=False,
                )
            self._by_user[username] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._by_user[username] - 1
                if left:
                    self._by_user[username] = left
                else:
                    del self._by_user[username]


def _filters(q: Query) -> tuple[str, list]:
    where: list[str] = []
    args: list[dt.datetime | str | float] = []
    if q.since:
        where.append("r.captured_at >= ?")
        args.append(q.since)
    if q.until:
        where.append("r.captured_at <= ?")
        args.append(q.until)
    if q.camera_id:
        where.append("r.camera_id = ?")
        args.append(q.camera_id)
    if q.min_confidence is not None:
        where.append("r.confidence >= ?")
        args.append(q.min_confidence)
    if q.alerts_only:
        where.append(f"EXISTS (SELECT 1 FROM {Alert._meta.table_name} a WHERE a.read_id = r.id)")
    return " AND ".join(where), args


def _candidate_texts(q: Query, read: Read) -> list[str]:
    """The texts of `read` a query may match: the plate and its alternatives, or the plate alone."""
    return texts_of(read.plate, read.alternatives if q.alternatives else ())


def _similar_hit(q: Query, read: Read) -> Hit | None:
    folded = skeleton(q.text)
    best = None
    for i, text in enumerate(_candidate_texts(q, read)):
        d = edits_within_one(folded, skeleton(text))
        if d is None:
            continue
        kind = "same" if text == q.text else "confusable" if d == 0 else "one edit"
        rank = (kind, ("same", "confusable", "one edit").index(kind), i > 0, -read.id)
        if best is None or rank[1:] < best.rank[1:]:
            best = Hit(read, text, i > 0, rank)
    return best


def search(q: Query, limit: int = 25, before: int | None = None, time_cap_s: float | None = None) -> Page:
    """Newest first (similar: best first); `before` continues after the last page's oldest read.
    With `time_cap_s`, a search still running after that many seconds is stopped (SearchStopped)."""
    if not 1 <= limit <= PAGE_MAX:
        raise SearchError(f"page size must be 1 to {PAGE_MAX}")
    q = dataclasses.replace(q, text=normalise(q.text, q.mode))
    matches = candidate_queries(q)
    where, args = _filters(q)
    pattern = _pattern(q.mode, q.text)
    # The page is chosen on the texts, then its whole rows are read (_hydrated): one snapshot for
    # both (a savepoint inside the caller's transaction, such as db.read(); a read transaction
    # for a caller in autocommit, such as a sharing export, while a paced purge commits between
    # statements).
    with database.atomic(), _capped(time_cap_s) as cap:  # the cap is lifted before a rollback runs
        if matches is None:
            return _scan(q, pattern, where, args, limit, before, cap)
        if q.mode == "similar":
            return _similar(q, matches, where, args, limit, before)
        return _indexed(q, matches[0], pattern, where, args, limit, before, cap)


class _Cap:
    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.passed = False

    def over(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.passed = True
        return self.passed

    def stopped(self) -> SearchStopped:
        return SearchStopped(
            f"this search ran past the {self.seconds:g} s one search may take (search.time_cap_s) and was "
            "stopped: narrow the time range or give more known characters"
        )


@contextmanager
def _capped(seconds: float | None) -> Iterator[_Cap]:
    """The time cap, looked at between rows (_first_page) and, through SQLite's progress handler,
    inside a statement that runs long before its next row (a filter that rejects most candidates):
    the handler interrupts it, and the interruption is turned into SearchStopped."""
    cap = _Cap(seconds)
    if seconds is None:
        yield cap
        return
    conn = database.connection()
    conn.set_progress_handler(lambda: int(cap.over()), PROGRESS_STEPS)
    try:
        yield cap
    except (sqlite3.OperationalError, peewee.OperationalError) as exc:
        if cap.passed:
            raise cap.stopped() from exc
        raise
    finally:
        conn.set_progress_handler(None, PROGRESS_STEPS)


def _accept(q: Query, pattern: _Pattern, row: tuple) -> Hit | None:
    """Exact, wildcard and partial searches match the real texts (the folded index only
    proposes, alternatives included); "similar" is the search that forgives confusable characters.
    `row` is (id, plate, alternatives as stored): a scan checks up to MAX_SCAN of them, so the
    alternatives are decoded only when one of them may match, and a Read is made for a hit only
    (a peewee model and a JSON decode per row took most of a scan's time, and the GIL with it,
    which the pipeline's thread needs too); the page's hits are read whole after (_hydrated)."""
    read_id, plate, stored = row
    if pattern.whole.fullmatch(plate):
        return Hit(Read(id=read_id, plate=plate), plate, False, ("match", False, -read_id))
    if not q.alternatives or not stored or ("\\" not in stored and not pattern.quoted.search(stored)):
        return None  # (a text JSON escaped, with a backslash, is decoded and checked whole)
    for text in texts_of(plate, json.loads(stored))[1:]:
        if pattern.whole.fullmatch(text):
            return Hit(Read(id=read_id, plate=plate), text, True, ("match", True, -read_id))
    return None


def _rows(sql: str, args: list):
    """Reads from raw SQL, lazily, with their fields decoded (JSON, dates) as peewee does."""
    return Read.raw(sql, *args).iterator()


_READ_COLUMNS = ", ".join(f"r.{f.column_name}" for f in Read._meta.sorted_fields)
_TEXT_OF_READ = "r.id, r.plate, r.alternatives"


def _texts(sql: str, args: list):
    """Candidates as (id, plate, alternatives as stored) only: decoding whole rows cost a scan ten
    times more (seconds for a pattern scanning a month). Whole rows are read for the page's hits
    only (_hydrated)."""
    cursor = database.execute_sql(sql, args)
    try:
        yield from cursor
    finally:
        cursor.close()


def _hydrated(hits: list[Hit]) -> list[Hit]:
    if hits:
        full = {
            r.id: r
            for r in _rows(
                f"SELECT {_READ_COLUMNS} FROM read r WHERE r.id IN ({', '.join('?' * len(hits))})",
                [h.read.id for h in hits],
            )
        }
        for hit in hits:
            hit.read = full[hit.read.id]
    return hits


def _indexed(q, match, pattern, where, args, limit, before, cap: _Cap) -> Page:
    sql = (
        f"SELECT {_TEXT_OF_READ} FROM read_text t JOIN read r ON r.id = t.rowid "
        f"WHERE read_text MATCH ?"
        + (" AND t.rowid < ?" if before else "")
        + (f" AND {where}" if where else "")
        + " ORDER BY t.rowid DESC"
    )
    return _first_page(q, _texts(sql, [match] + ([before] if before else []) + args), pattern, limit, cap)


def _scan(q, pattern, where, args, limit, before, cap: _Cap) -> Page:
    """The reads of the time range, newest first. SQLite finds a range's reads by the captured_at
    index, but must then sort all of them by id before handing back the first: for a range that
    holds more than MAX_SCAN (a year of 10,000,000 reads) that sort took seconds and a gigabyte
    before one read was checked. Such a range is walked by id instead, newest first, and stops
    after MAX_SCAN of its reads; counting that far reads the index alone (tens of milliseconds)."""
    if not (q.since and q.until):
        raise _unbounded()
    in_range = database.execute_sql(
        "SELECT count(*) FROM (SELECT 1 FROM read WHERE captured_at >= ? AND captured_at <= ? LIMIT ?)",
        [q.since, q.until, MAX_SCAN + 1],
    ).fetchone()[0]
    sql = (
        f"SELECT {_TEXT_OF_READ} FROM read r {'NOT INDEXED ' if in_range > MAX_SCAN else ''}WHERE {where}"
        + (" AND r.id < ?" if before else "")
        + " ORDER BY r.id DESC"
    )
    return _first_page(q, _texts(sql, args + ([before] if before else [])), pattern, limit, cap, max_scan=MAX_SCAN)


def _first_page(q: Query, reads, pattern, limit, cap: _Cap, max_scan: int | None = None) -> Page:
    """Check candidates newest first until a page (and one more, to know there is a next) matched."""
    hits, scanned = [], 0
    try:
        for row in reads:
            scanned += 1
            if cap.over():
                raise cap.stopped()
            if max_scan is not None and scanned > max_scan:
                raise SearchError(
                    f"this pattern would scan more than {max_scan:,} reads in that time range: "
                    "narrow the range or give three known characters in a row",
                    "too broad",
                )
            hit = _accept(q, pattern, row)
            if hit is not None:
                hits.append(hit)
                if len(hits) > limit:
                    break
    finally:
        # The candidates' statement is reset now, not when a refusal's traceback lets go of it: a
        # statement left open keeps the search's snapshot after its transaction ended, and the
        # access record written next finds it stale ("database is locked") once a read was stored.
        reads.close()
    page = _page(hits, limit, scanned)
    _hydrated(page.hits)
    return page


def _similar(q, matches, where, args, limit, before) -> Page:
    """All candidates are ranked (few: within one edit), then paged by position in the ranking."""
    ids: set[int] = set()
    for match in matches:
        ids.update(r[0] for r in database.execute_sql("SELECT rowid FROM read_text WHERE read_text MATCH ?", [match]))
    ranked = []  # checked on the texts alone; whole rows are read for the page only
    for chunk in _chunks(sorted(ids, reverse=True), 500):
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT r.id, r.plate, r.alternatives FROM read r WHERE r.id IN ({marks})" + (
            f" AND {where}" if where else ""
        )
        for read_id, plate, alternatives in database.execute_sql(sql, list(chunk) + args):
            hit = _similar_hit(q, Read(id=read_id, plate=plate, alternatives=json.loads(alternatives or "[]")))
            if hit is not None:
                ranked.append(hit)
    ranked.sort(key=lambda h: h.rank[1:])
    start = before or 0  # `before` is the position in the ranking for similar searches
    page = _hydrated(ranked[start : start + limit])
    return Page(page, start + limit if len(ranked) > start + limit else None, len(ids))


def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _page(hits: list[Hit], limit: int, scanned: int) -> Page:
    more = len(hits) > limit
    hits = hits[:limit]
    return Page(hits, hits[-1].read.id if more and hits else None, scanned)
