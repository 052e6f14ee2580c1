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
import re
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
    "audit.verify": False,
    "audit.export": False,
    "read.search": True,
    "read.view": True,
    "evidence.view": True,
    "read.store": False,
}

# Case numbers people type when they have none. They are refused for data access.
PLACEHOLDERS = {"NA", "N/A", "NONE", "NIL", "NULL", "TEST", "TBD", "TODO", "UNKNOWN", "UNK", "XXX",
                "INVESTIGATION", "INV", "CASE", "PENDING", "ASDF", "QWERTY", "0", "00", "000", "0000",
                "123", "1234", "12345", "123456", "1234567", "12345678", "123456789"}

_COLUMNS = ("seq", "at", "username", "organization", "action", "query", "purpose_code", "case_number",
            "object_ids", "result_count", "client_addr", "details", "prev_hash", "hash")


class PurposeError(ValueError):
    """The purpose given for a data access is missing, unknown or a placeholder."""


class AuditError(RuntimeError):
    pass


@dataclass(frozen=True)
class Actor:
    username: str
    organization: str
    client_addr: str = "local"


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
    if (normal in PLACEHOLDERS or len(set(re.sub(r"[^A-Z0-9]", "", normal))) <= 1
            or not re.search(r"\d", normal) or not re.fullmatch(settings.audit.case_number_pattern, case_number)):
        raise PurposeError(
            f"{case_number!r} is not a case or incident number: give the real number from the report "
            "(letters, digits and - / . _, at least one digit), not a placeholder")
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
    edited outside the product and gets None, which never matches."""
    text = SEPARATOR.join(["" if v is None else str(v) for v in row[:13]])
    if text.count(SEPARATOR) != 12:
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def head() -> tuple[int, str]:
    row = database.execute_sql("SELECT seq, hash FROM access_record ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def record(action: str, actor: Actor, *, query=None, purpose: Purpose | None = None, objects=(),
           result_count: int | None = None, details: dict | None = None) -> AccessRecord:
    """Append one record. Must run inside the caller's write transaction (appliance.db.write()),
    so that the record and the action it describes commit or roll back together."""
    if action not in ACTIONS:
        raise AuditError(f"unknown audit action {action!r}; register it in appliance.audit.ACTIONS")
    if ACTIONS[action] and purpose is None:
        raise PurposeError(f"{action} is an access to ALPR data and needs a purpose and case number")
    if not database.in_transaction():
        raise AuditError("audit.record() must be called inside the transaction of the action it records")
    prev_seq, prev_hash = head()
    row = (prev_seq + 1, _now(), _plain(actor.username), _plain(actor.organization), action,
           canonical(query if query is not None else {}),
           _plain(purpose.code) if purpose else "", _plain(purpose.case_number) if purpose else "",
           canonical([str(o) for o in objects]), None if result_count is None else int(result_count),
           _plain(actor.client_addr), canonical(details or {}), prev_hash)
    row = row + (_digest(row),)
    database.execute_sql(
        f"INSERT INTO access_record ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", row)
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


def verify(expected_head: tuple[int, str] | None = None, chunk: int = 20000) -> VerifyResult:
    """Walk the whole chain in seq order and report the first record that does not fit."""
    cursor = database.execute_sql(f"SELECT {', '.join(_COLUMNS)} FROM access_record ORDER BY seq")
    expect_seq, prev_hash, checked = 1, GENESIS, 0
    seen_head_hash = None
    while True:
        rows = cursor.fetchmany(chunk)
        if not rows:
            break
        for row in rows:
            seq = row[0]
            if seq != expect_seq:
                kind = "missing record(s)" if seq > expect_seq else "sequence out of order"
                return VerifyResult(False, checked, bad_seq=seq,
                                    problem=f"{kind}: expected seq {expect_seq}, found {seq}")
            if row[12] != prev_hash:
                return VerifyResult(False, checked, bad_seq=seq,
                                    problem="previous-hash link does not match the record before it "
                                            "(a record was deleted, inserted or reordered)")
            if _digest(row) != row[13]:
                return VerifyResult(False, checked, bad_seq=seq,
                                    problem="contents do not match the record's hash (a field was modified)")
            if expected_head and seq == expected_head[0]:
                seen_head_hash = row[13]
            prev_hash = row[13]
            expect_seq += 1
            checked += 1
    result = VerifyResult(True, checked, head_seq=expect_seq - 1, head_hash=prev_hash)
    if expected_head:
        want_seq, want_hash = expected_head
        if want_seq > result.head_seq:
            return VerifyResult(False, checked, bad_seq=result.head_seq + 1,
                                problem=f"log truncated: the saved head is record {want_seq} "
                                        f"but the log ends at {result.head_seq}")
        if want_seq > 0 and seen_head_hash != want_hash:
            return VerifyResult(False, checked, bad_seq=want_seq,
                                problem=f"record {want_seq} differs from the saved head (the log was rewritten)")
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
