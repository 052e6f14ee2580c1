"""The hash-chained access log (Civil Code 1798.90.52).

Every access to ALPR data and every change to the system appends one record, in the SAME
transaction as the action, with: sequence number, UTC time, username and organization, action,
the plate or other data elements used to query, the purpose (a configured code plus a case or
incident number), the object ids touched, the result count, the client address, the previous
record's hash and its own hash over a canonical serialization.

Anyone holding the database file can rewrite it, so the chain only proves integrity relative to
something kept elsewhere: `waypost audit head` prints the last (seq, hash) for safekeeping, and
headquarters receives the records as a witness (sync). Against such a head, `verify()` detects a
modified field, a deleted, inserted or reordered record and a truncated tail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import os
import re
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from appliance.config import Settings
from appliance.models import AccessRecord, database

GENESIS = "0" * 64

# Action name -> whether it is an access to ALPR data (and so needs a purpose).
# Later features register theirs with register_action(); an unknown name is a programming error.
ACTIONS: dict[str, bool] = {
    "auth.login": False,
    "auth.login_failed": False,
    "auth.lockout": False,
    "auth.logout": False,
    "auth.password_change": False,
    "user.add": False,
    "user.update": False,
    "user.disable": False,
    "user.enable": False,
    "user.training": False,
    "user.password_reset": False,
    "config.change": False,
    "db.migrate": False,
    "system.start": False,
    "system.stop": False,  # a clean stop (SIGTERM/SIGINT); details: uptime_s
    "audit.verify": False,
    # the access log holds the plates searched: browsing, exporting or reporting on it is an
    # access with a stated purpose (AUDIT, and a reference), as a search is
    "audit.export": True,
    "audit.view": True,  # browsing the access log (the filter, and the plates shown, are the query)
    "audit.report": True,  # a quarterly or annual report produced
    "read.search": True,
    "read.view": True,
    "read.live": True,
    "evidence.view": True,
    "read.store": False,
}

# Case numbers people type when they have none. They are refused for data access.
PLACEHOLDERS = {
    "NA",
    "N/A",
    "NONE",
    "NIL",
    "NULL",
    "TEST",
    "TBD",
    "TODO",
    "UNKNOWN",
    "UNK",
    "XXX",
    "INVESTIGATION",
    "INV",
    "CASE",
    "PENDING",
    "ASDF",
    "QWERTY",
    "0",
    "00",
    "000",
    "0000",
    "123",
    "1234",
    "12345",
    "123456",
    "1234567",
    "12345678",
    "123456789",
}

_COLUMNS = (
    "seq",
    "at",
    "username",
    "organization",
    "action",
    "query",
    "purpose_code",
    "case_number",
    "object_ids",
    "result_count",
    "client_addr",
    "details",
    "prev_hash",
    "hash",
)


class PurposeError(ValueError):
    """The purpose given for a data access is missing, unknown or a placeholder."""


class AuditError(RuntimeError):
    pass


@dataclass(frozen=True)
class Actor:
    username: str
    organization: str
    client_addr: str = "local"


SYSTEM = "system"


def system_actor(settings: Settings) -> Actor:
    """Who the post's unattended jobs (the service, the pipeline, retention, sync) are recorded as:
    the system of the post's agency, not a person."""
    return Actor(SYSTEM, settings.post.agency, "local")


# The fields of a record's query that name plates: the plate queried or opened, the plates a page
# showed (a search's results, a listing), the listed plates beside a read. A page or a command
# that shows plates writes them there, so the record names every plate shown (1798.90.52(b)).
PLATE_KEYS = ("plate", "plates", "listed")


def plates_named(query) -> set[str]:
    """The plates a record's query (its canonical JSON, or the dict) names."""
    if isinstance(query, str):
        try:
            query = json.loads(query or "{}")
        except ValueError:
            return set()
    if not isinstance(query, dict):
        return set()
    found: set[str] = set()
    for key in PLATE_KEYS:
        value = query.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item:
                found.add(item)
    return found


@dataclass(frozen=True)
class Purpose:
    code: str
    case_number: str


def register_action(name: str, data_access: bool) -> None:
    ACTIONS[name] = data_access


def check_purpose(settings: Settings, code: str | None, case_number: str | None) -> Purpose:
    """Return a valid Purpose or raise PurposeError saying what is wrong."""
    code = (code or "").strip().upper()
    case_number = (case_number or "").strip()
    codes = settings.purpose_codes()
    if not code:
        raise PurposeError("a purpose code is required before any access to ALPR data")
    if code not in codes:
        raise PurposeError(f"unknown purpose code {code!r}; choose one of {', '.join(codes)}")
    if not case_number:
        raise PurposeError("a case or incident number is required with the purpose")
    normal = case_number.upper()
    if (
        normal in PLACEHOLDERS
        or len(set(re.sub(r"[^A-Z0-9]", "", normal))) <= 1
        or not re.search(r"\d", normal)
        or not re.fullmatch(settings.audit.case_number_pattern, case_number)
    ):
        raise PurposeError(
            f"{case_number!r} is not a case or incident number: give the real number from the report "
            "(letters, digits and - / . _, at least one digit), not a placeholder"
        )
    return Purpose(code, case_number)


def canonical(value) -> str:
    """JSON for the structured fields (query, object ids, details): sorted keys, no spaces, and
    control characters escaped, so the text never holds the field separator."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SEPARATOR = "\x1f"


def _plain(value) -> str:
    return _CONTROL.sub("\ufffd", str(value))


def _digest(row: tuple) -> str | None:
    """sha256 over the first 13 columns (all but the hash) as text, NULL as empty, joined by U+001F.
    No stored field can contain a control character (plain fields are cleaned on the way in, JSON
    fields escape them), so the serialization is unambiguous; a row where one appears anyway was
    edited outside the product and gets None, which never matches. So does a field holding a lone
    UTF-16 surrogate (from a JSON escape in a bundle or a batch): it is not text the product writes."""
    text = SEPARATOR.join(["" if v is None else str(v) for v in row[:13]])
    if text.count(SEPARATOR) != 12:
        return None
    try:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    except UnicodeEncodeError:
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def head() -> tuple[int, str]:
    row = database.execute_sql("SELECT seq, hash FROM access_record ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def record(
    action: str,
    actor: Actor,
    *,
    query=None,
    purpose: Purpose | None = None,
    objects=(),
    result_count: int | None = None,
    details: dict | None = None,
) -> AccessRecord:
    """Append one record. Must run inside the caller's write transaction (appliance.db.write()),
    so that the record and the action it describes commit or roll back together."""
    if action not in ACTIONS:
        raise AuditError(f"unknown audit action {action!r}; register it in appliance.audit.ACTIONS")
    if ACTIONS[action] and purpose is None:
        raise PurposeError(f"{action} is an access to ALPR data and needs a purpose and case number")
    if not database.in_transaction():
        raise AuditError("audit.record() must be called inside the transaction of the action it records")
    prev_seq, prev_hash = head()
    row: tuple = (
        prev_seq + 1,
        _now(),
        _plain(actor.username),
        _plain(actor.organization),
        action,
        canonical(query if query is not None else {}),
        _plain(purpose.code) if purpose else "",
        _plain(purpose.case_number) if purpose else "",
        canonical([str(o) for o in objects]),
        None if result_count is None else int(result_count),
        _plain(actor.client_addr),
        canonical(details or {}),
        prev_hash,
    )
    row = row + (_digest(row),)
    database.execute_sql(
        f"INSERT INTO access_record ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", row
    )
    return AccessRecord(**dict(zip(_COLUMNS, row)))


@dataclass
class VerifyResult:
    ok: bool
    checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    bad_seq: int | None = None
    problem: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return f"access log verified: {self.checked} records, head {self.head_seq} {self.head_hash}"
        where = f" at record {self.bad_seq}" if self.bad_seq is not None else ""
        return f"access log BROKEN{where}: {self.problem} ({self.checked} records checked before it)"


def parse_head(text: str) -> tuple[int, str]:
    """'SEQ HASH' or 'SEQ:HASH', as printed by `waypost audit head`."""
    match = re.fullmatch(r"\s*(\d+)[\s:]+([0-9a-f]{64})\s*", text)
    if not match:
        raise ValueError(f"not an access log head {text!r}: expected 'SEQ HASH' as printed by `waypost audit head`")
    return int(match.group(1)), match.group(2)


# The same text as _digest() joins, built by the database so that verify() spends its time hashing.
_SERIALIZED = " || char(31) || ".join(
    "coalesce(CAST(result_count AS TEXT), '')" if c == "result_count" else c for c in _COLUMNS[:13]
)


@dataclass
class _Span:
    """What one worker found in records lo..hi: where it stopped and the hashes at its ends."""

    lo: int
    count: int = 0
    first_link: str | None = None
    last_hash: str | None = None
    bad_seq: int | None = None
    problem: str = ""


def _walk(execute, lo: int, hi: int, chunk: int = 20000) -> _Span:
    """Check records lo..hi on their own: contiguous seq, each hash, each link inside the span."""
    cursor = execute(
        f"SELECT seq, prev_hash, hash, {_SERIALIZED} FROM access_record WHERE seq BETWEEN ? AND ? ORDER BY seq",
        (lo, hi),
    )
    sha256 = hashlib.sha256
    span = _Span(lo)
    expect_seq, prev_hash = lo, None
    while rows := cursor.fetchmany(chunk):
        for seq, link, digest, text in rows:
            if seq != expect_seq:
                kind = "missing record(s)" if seq > expect_seq else "sequence out of order"
                span.bad_seq, span.problem = seq, f"{kind}: expected seq {expect_seq}, found {seq}"
                return span
            if prev_hash is None:
                span.first_link = link
            elif link != prev_hash:
                span.bad_seq, span.problem = (
                    seq,
                    (
                        "previous-hash link does not match the record before it "
                        "(a record was deleted, inserted or reordered)"
                    ),
                )
                return span
            if text.count(SEPARATOR) != 12 or sha256(text.encode("utf-8")).hexdigest() != digest:
                span.bad_seq, span.problem = seq, "contents do not match the record's hash (a field was modified)"
                return span
            prev_hash = digest
            expect_seq += 1
            span.count += 1
    span.last_hash = prev_hash
    if expect_seq <= hi:
        span.bad_seq, span.problem = expect_seq, f"missing record(s): expected seq {expect_seq}, found none"
    return span


def _walk_file(path: str, lo: int, hi: int) -> _Span:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _walk(conn.execute, lo, hi)
    finally:
        conn.close()


def verify(
    expected_head: tuple[int, str] | None = None, workers: int | None = None, parallel_from: int = 200_000
) -> VerifyResult:
    """Walk the whole chain in seq order and report the first record that does not fit.

    Long chains are split into seq ranges checked by one process per core; the ranges are then
    stitched (each range's first link must be the previous range's last hash)."""
    lo, hi, count = database.execute_sql("SELECT min(seq), max(seq), count(*) FROM access_record").fetchone()
    if count == 0:
        lo = hi = 0
    elif lo != 1:
        return VerifyResult(False, 0, bad_seq=lo, problem=f"missing record(s): the log starts at seq {lo}, not 1")
    workers = workers or min(os.cpu_count() or 1, 8)
    path = getattr(database.obj, "database", None)
    if count >= parallel_from and workers > 1 and path and path != ":memory:":
        step = -(-hi // workers)
        bounds = [(a, min(a + step - 1, hi)) for a in range(1, hi + 1, step)]
        with ProcessPoolExecutor(len(bounds), mp_context=multiprocessing.get_context("fork")) as pool:
            spans = list(pool.map(_walk_file, [path] * len(bounds), *zip(*bounds)))
    else:
        spans = [_walk(database.execute_sql, 1, hi)] if count else []
    prev_hash = GENESIS
    for span in spans:
        if span.count and span.first_link != prev_hash:
            return VerifyResult(
                False,
                span.lo - 1,
                bad_seq=span.lo,
                problem="previous-hash link does not match the record before it "
                "(a record was deleted, inserted or reordered)",
            )
        if span.bad_seq is not None:
            return VerifyResult(False, span.bad_seq - 1, bad_seq=span.bad_seq, problem=span.problem)
        prev_hash = span.last_hash or prev_hash
    result = VerifyResult(True, hi, head_seq=hi, head_hash=prev_hash)
    if expected_head:
        want_seq, want_hash = expected_head
        if want_seq > hi:
            return VerifyResult(
                False,
                hi,
                bad_seq=hi + 1,
                problem=f"log truncated: the saved head is record {want_seq} but the log ends at {hi}",
            )
        if want_seq > 0:
            row = database.execute_sql("SELECT hash FROM access_record WHERE seq = ?", (want_seq,)).fetchone()
            if row is None or row[0] != want_hash:
                return VerifyResult(
                    False,
                    hi,
                    bad_seq=want_seq,
                    problem=f"record {want_seq} differs from the saved head (the log was rewritten)",
                )
        result.notes.append(f"matches the saved head {want_seq}")
    return result


def export_rows(start: dt.datetime | None = None, end: dt.datetime | None = None):
    """Records in seq order as dicts, optionally limited to a UTC time range [start, end)."""
    sql = f"SELECT {', '.join(_COLUMNS)} FROM access_record"
    clauses, params = [], []
    if start:
        clauses.append("at >= ?")
        params.append(start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    if end:
        clauses.append("at < ?")
        params.append(end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    cursor = database.execute_sql(sql + " ORDER BY seq", params)
    while rows := cursor.fetchmany(5000):
        for row in rows:
            yield dict(zip(_COLUMNS, row))


COLUMNS = _COLUMNS


def digest(rec: dict) -> str | None:
    """The hash a record (a dict with the COLUMNS, e.g. from export_rows or a bundle) should carry.
    None when a field holds a control character (such a record was edited outside the product)."""
    return _digest(tuple(rec.get(c) for c in _COLUMNS[:13]))


def sealed(rows, prev_hash: str):
    """Chain rows of the first 12 columns (seq .. details, already cleaned and canonical) in order,
    yielding full rows with prev_hash and hash. For bulk fills of scratch databases (benchmarks,
    tests); the product appends with record()."""
    prev: str | None = prev_hash  # None after a row that cannot be sealed (a control character in it)
    for row in rows:
        row = tuple(row[:12]) + (prev,)
        prev = _digest(row)
        yield row + (prev,)


def stamp(moment: dt.datetime) -> str:
    """A UTC datetime (naive means UTC) in the stored `at` form, for comparisons with `at`."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Filter:
    """What the access log browser narrows by. Dates are UTC datetimes, both inclusive (the form's
    'To' is the last instant of the minute typed: web.clock.LocalDateTimeField)."""

    username: str = ""
    action: str = ""  # an exact action name, or a family such as "hotlist.*"
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    query: str = ""  # substring of the query field (plate or other data used to query)
    purpose_code: str = ""

    def as_record(self) -> dict:
        """The filter as it is written into the 'audit.view' record's query."""
        out = {
            k: v
            for k, v in (
                ("username", self.username),
                ("action", self.action),
                ("query", self.query),
                ("purpose", self.purpose_code),
            )
            if v
        }
        if self.since:
            out["since"] = stamp(self.since)
        if self.until:
            out["until"] = stamp(self.until)
        return out

    def where(self) -> tuple[list[str], list]:
        clauses, params = [], []
        if self.username:
            clauses.append("username = ?")
            params.append(self.username)
        if self.action.endswith(".*"):
            # A range on the indexed column instead of LIKE (which ignores the index).
            family = self.action[:-1]
            clauses.append("action >= ? AND action < ?")
            params += [family, family[:-1] + chr(ord(family[-1]) + 1)]
        elif self.action:
            clauses.append("action = ?")
            params.append(self.action)
        if self.since:
            clauses.append("at >= ?")
            params.append(stamp(self.since))
        if self.until:
            clauses.append("at <= ?")
            params.append(stamp(self.until))
        if self.query:
            clauses.append("instr(lower(query), ?) > 0")
            params.append(self.query.lower())
        if self.purpose_code:
            clauses.append("purpose_code = ?")
            params.append(self.purpose_code)
        return clauses, params


@dataclass
class LogPage:
    records: list[dict]
    next_before: int | None  # pass as `before` for the next (older) page; None on the last page


def browse(flt: Filter, before: int | None = None, limit: int = 50) -> LogPage:
    """Records matching the filter, newest first, one keyset page (seq < before)."""
    clauses, params = flt.where()
    if before:
        clauses.append("seq < ?")
        params.append(int(before))
    sql = f"SELECT {', '.join(_COLUMNS)} FROM access_record"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    rows = database.execute_sql(sql + " ORDER BY seq DESC LIMIT ?", params + [limit + 1]).fetchall()
    records = [dict(zip(_COLUMNS, r)) for r in rows[:limit]]
    return LogPage(records, records[-1]["seq"] if len(rows) > limit else None)
