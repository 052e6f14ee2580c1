"""Hotlists: state lists imported from CSV files, custom entries typed in by officers.

A state list is replaced whole by each import, all or nothing: a malformed line stops the import
with every problem named by file, line and field, and nothing changes. The file is read twice,
streamed, so a state extract of a million lines takes tens of megabytes, not its size many times
over: a first pass checks every line and keeps only what finding repeated entries needs (16-byte
hashes of each NIC and of each plate, state and reason, and their line numbers, in flat arrays);
a second pass writes the entries. A file that changed between the two passes (its SHA-256 differs)
is refused.

A list of hundreds of thousands of entries takes seconds to write, and every search waits for the
write lock (its access record), so the new entries are written in short transactions
(appliance.db.Paced) under a staging list that matches nothing (a "~" name no list can have, never
refreshed, so stale); one short transaction then swaps the names and the old entries are deleted in
short transactions after. The list's row (its id) is the staging one from then on. A staging list,
or a replaced one, that a crash left behind is removed by the next import.

A state list not refreshed for `hotlist.stale_after_hours` produces no alerts (Barstow 466.5:
72 hours), and the first time that is noticed it is written to the access log. A list no longer
used is retired (who, when, why): it raises no alerts, its entries and alerts stay, and importing
its name again starts it afresh. Custom entries need the approving commander and a narrative
(Barstow 466.6); they may be partial plates with `*` and `?`, and they carry a review date
(`hotlist.custom_review_days` after they are made): past it an entry raises no alerts until it is
renewed with a reason. Entries are removed (kept, marked with who, when and why), never deleted.
Every change is an access record.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import itertools
import re
from array import array
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance import audit
from appliance.clock import to_local, zone_of
from appliance.config import Settings
from appliance.db import Paced, write
from appliance.models import Hotlist, HotlistEntry, database, utcnow
from recognizer.formats import normalise

for _name in (
    "hotlist.import",
    "hotlist.retire",
    "hotlist.entry_add",
    "hotlist.entry_remove",
    "hotlist.entry_renew",
    "hotlist.stale",
):
    audit.register_action(_name, False)

# OCR-confusable characters fold to one representative: 0/O/D/Q, 1/I/L, 8/B, 5/S, 2/Z, 6/G.
_FOLD = str.maketrans({"O": "0", "D": "0", "Q": "0", "I": "1", "L": "1", "B": "8", "S": "5", "Z": "2", "G": "6"})
PLATE = re.compile(r"^[A-Z0-9]{1,8}$")
PARTIAL = re.compile(r"^[A-Z0-9*?]{1,10}$")
MAX_PROBLEMS = 25
STAGING = "~"  # a list being imported or replaced: no list name can start with it
REPLACED = f"{STAGING}replaced "  # the old list between the swap and the deletion of its entries
ROWS = 20_000  # the most entries written or deleted in one transaction
LEFTOVER_HOURS = 6  # a staging list older than this is a crashed import's (an import takes minutes)

# The fields of a state list entry, in the order the hotlist.*_column keys name their columns.
FIELDS = (
    "plate",
    "state",
    "reason",
    "entry_date",
    "source_ref",
    "plate_type",
    "plate_year",
    "vehicle_make",
    "ori",
)
# The longest value a field may hold, in characters; a longer one is refused, naming line and
# field (never cut: a cut NIC or reason would be another record's). Sized to what the NCIC and SVS
# formats carry, with room for lists an agency makes itself. The plate (1-8 letters and digits),
# the state (2 letters) and the entry date (hotlist.date_format) have formats of their own.
LIMITS = {
    "reason": 200,
    "source_ref": 40,  # the NIC: 10 (a letter and 9 digits)
    "plate_type": 10,  # LIT: 2 (PC passenger, TK truck, MC motorcycle, ...)
    "plate_year": 4,  # LIY: the year the registration expires, or NX for a plate that does not
    "vehicle_make": 24,  # MKE/VMA: 4-letter codes; some lists spell the make out
    "ori": 9,  # the NCIC ORI: 2-letter state and 7 characters
}
CODE = re.compile(r"^[A-Za-z0-9]*$")  # the plate type, plate year and ORI: letters and digits
MAX_LINE = 65_536  # characters: no extract's line is near this; a longer one is not read into memory
CUSTOM_LIMITS = {"reason": 200, "approved_by": 80, "narrative": 2000}
_ESCAPED = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, as the surrogateescape decoder keeps it


class HotlistError(ValueError):
    """The problems of a file or a request; `total` counts them all when only the first are given."""

    def __init__(self, problems: list[str], total: int | None = None):
        self.problems = problems
        shown = problems[:MAX_PROBLEMS]
        more = max(total or 0, len(problems)) - len(shown)
        super().__init__("\n".join(shown + ([f"... and {more} more"] if more > 0 else [])))


def skeleton(plate: str) -> str:
    return plate.translate(_FOLD)


def local_today(settings: Settings, now: dt.datetime | None = None) -> dt.date:
    """Today in post.timezone: review dates are days as the officers at the post count them."""
    return to_local(now or utcnow(), zone_of(settings)).date()


def is_stale(hotlist: Hotlist, settings: Settings, now: dt.datetime | None = None) -> bool:
    """A state list in use not refreshed for `hotlist.stale_after_hours`. A retired list is not
    stale: nothing relies on it any more."""
    if hotlist.kind != "state" or hotlist.retired_at is not None:
        return False
    now = now or utcnow()
    return hotlist.refreshed_at is None or now - hotlist.refreshed_at > dt.timedelta(
        hours=settings.hotlist.stale_after_hours
    )


def review_date(entry: HotlistEntry, hotlist: Hotlist, settings: Settings) -> dt.date | None:
    """The last day a custom entry raises alerts unless it is renewed; None for a state list's
    entry (its list's freshness governs it)."""
    if hotlist.kind != "custom":
        return None
    if entry.review_on is not None:
        return entry.review_on
    # made before custom entries carried a review date (migration 0011): due as a new one would be
    made = to_local(entry.created_at, zone_of(settings)).date()
    return made + dt.timedelta(days=settings.hotlist.custom_review_days)


def past_review(entry: HotlistEntry, hotlist: Hotlist, settings: Settings, today: dt.date | None = None) -> bool:
    due = review_date(entry, hotlist, settings)
    return due is not None and (today or local_today(settings)) > due


@dataclass(frozen=True)
class ImportResult:
    hotlist: str
    entries: int
    replaced: int
    restarted: bool = False  # the name was a retired list's


# --- reading a state list ----------------------------------------------------------------------


class _Problems:
    """A file's problems, in line order: the first MAX_PROBLEMS kept, every one counted (a file
    of a million bad lines must not become a million messages in memory)."""

    def __init__(self, path: Path):
        self.path = path
        self.kept: list[tuple[int, str]] = []
        self.count = 0

    def add(self, line: int, text: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append((line, f"{self.path}: line {line}: {text}"))


class _Hashing(io.RawIOBase):
    """A file's bytes as read, hashed on the way: the SHA-256 of exactly what was checked."""

    def __init__(self, raw):
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:n])
        return n


def _quoted(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:40]) + f"... ({len(value)} characters)"


def _lines(text: io.TextIOWrapper, unreadable: deque) -> Iterator[str]:
    """The file's lines for the csv reader, each at most MAX_LINE characters. A line with a byte
    that is not UTF-8 (kept as a lone surrogate by surrogateescape), or a longer line (not read
    into memory: a placeholder stands in for it), is put on `unreadable` by its number, and its
    row is then reported rather than checked; the other lines are still read and checked."""
    number = 0
    while True:
        line = text.readline(MAX_LINE)
        if not line:
            return
        number += 1
        if len(line) >= MAX_LINE and line[-1] not in "\r\n":
            while line and line[-1] not in "\r\n":
                line = text.readline(MAX_LINE)
            unreadable.append((number, f"longer than {MAX_LINE} characters; no entry is that long: is it a CSV file?"))
            yield "\n"
            continue
        found = _ESCAPED.search(line)
        if found:
            byte = ord(found.group()) - 0xDC00
            unreadable.append(
                (
                    number,
                    f"column {found.start() + 1}: byte 0x{byte:02X} is not UTF-8 text; "
                    "save the file as UTF-8 CSV (the rest of this line was not checked)",
                )
            )
        yield line


def _columns(settings: Settings) -> dict[str, str]:
    cfg = settings.hotlist
    return {field: getattr(cfg, f"{field}_column") for field in FIELDS}


def _entries(
    settings: Settings, path: Path, problems: _Problems, hashing: list[_Hashing]
) -> Generator[tuple, None, None]:
    """The file's entries, one (line, plate, skeleton, state, reason, entry_date, source_ref,
    plate_type, plate_year, vehicle_make, ori) tuple each, streamed; a malformed line is added
    to `problems` instead. A file that cannot be used at all (missing, no header) raises
    HotlistError. `hashing` receives the byte counter, to read the file's SHA-256 at the end."""
    cfg = settings.hotlist
    columns = _columns(settings)
    try:
        raw = open(path, "rb")  # closed by the with block below, with its wrappers
    except FileNotFoundError:
        raise HotlistError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise HotlistError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from None
    counted = _Hashing(raw)
    hashing.append(counted)
    # newline="": the csv module finds the line ends itself, so its line count is the file's own
    # (blank lines included; a form feed or U+2028 inside a field is not a line end).
    # surrogateescape: a byte that is not UTF-8 stays in its line, to be named by line and column.
    with (
        raw,
        io.TextIOWrapper(
            io.BufferedReader(counted), encoding="utf-8-sig", errors="surrogateescape", newline=""
        ) as text,
    ):
        unreadable: deque = deque()
        reader = csv.reader(_lines(text, unreadable))
        try:
            header = [h.strip() for h in next(reader, [])]
        except csv.Error as exc:
            raise HotlistError([f"{path}: line 1: the header is not CSV: {exc}"]) from None
        if unreadable:
            raise HotlistError([f"{path}: line 1 (the header): {unreadable[0][1]}"])
        # plate and reason are required; the other fields are used when their column is present
        missing = [
            f"{field} (column {columns[field]!r})" for field in ("plate", "reason") if columns[field] not in header
        ]
        if missing:
            raise HotlistError(
                [
                    f"{path}: line 1: header {_quoted(','.join(header))} lacks {', '.join(missing)}; "
                    "set the hotlist.*_column keys to this file's column names"
                ]
            )
        where = [header.index(columns[f]) if columns[f] in header else None for f in FIELDS]
        width = len(header)
        limited = [(k, field, LIMITS[field]) for k, field in enumerate(FIELDS) if field in LIMITS]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                line = reader.line_num
                if not (unreadable and unreadable[0][0] <= line):
                    problems.add(line, f"not CSV: {exc}")
                while unreadable and unreadable[0][0] <= line:
                    problems.add(*unreadable.popleft())
                continue
            line = reader.line_num
            if unreadable and unreadable[0][0] <= line:
                while unreadable and unreadable[0][0] <= line:
                    problems.add(*unreadable.popleft())
                continue
            if len(row) > width:
                problems.add(line, f"{len(row)} fields, the header has {width}")
                continue
            values = [row[k].strip() if k is not None and k < len(row) else "" for k in where]
            if not any(values):
                continue  # blank line
            plate_as_written, state, reason, entry_date, source_ref, plate_type, plate_year, make, ori = values
            long = next(((field, values[k], most) for k, field, most in limited if len(values[k]) > most), None)
            if long:
                field, value, most = long
                problems.add(line, f"field {field}: {len(value)} characters, at most {most} ({_quoted(value)})")
                continue
            plate = normalise(plate_as_written)
            if not PLATE.match(plate) or re.search(r"[^A-Za-z0-9 \-]", plate_as_written):
                problems.add(
                    line,
                    f"field plate: {_quoted(plate_as_written)} is not a plate "
                    "(1-8 letters and digits; spaces and dashes are ignored)",
                )
                continue
            state = state.lower()
            if state and not re.fullmatch(r"[a-z]{2}", state):
                problems.add(line, f"field state: {_quoted(values[1])} is not a two-letter code")
                continue
            if not reason:
                problems.add(line, "field reason: empty (every entry needs its reason or category)")
                continue
            code = next(
                (
                    (f, v)
                    for f, v in (("plate_type", plate_type), ("plate_year", plate_year), ("ori", ori))
                    if not CODE.match(v)
                ),
                None,
            )
            if code:
                problems.add(line, f"field {code[0]}: {_quoted(code[1])} is not a code (letters and digits only)")
                continue
            date = None
            if entry_date:
                try:
                    date = dt.datetime.strptime(entry_date, cfg.date_format).date()
                except ValueError:
                    problems.add(line, f"field entry_date: {_quoted(entry_date)} does not match {cfg.date_format!r}")
                    continue
            yield (
                line,
                plate,
                skeleton(plate),
                state,
                reason,
                date,
                source_ref,
                plate_type.upper(),
                plate_year.upper(),
                make,
                ori.upper(),
            )
        while unreadable:  # a last line inside a quoted field that never closed
            problems.add(*unreadable.popleft())


def _key(*parts: str) -> bytes:
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogateescape"), digest_size=16).digest()


class _Seen:
    """16-byte hashes of a key and the line of each, in flat arrays (16 + 4 bytes an entry; a
    dict of a million strings to their lines takes over a hundred megabytes). Two different keys
    with one 128-bit hash is not a practical possibility."""

    def __init__(self):
        self.keys = bytearray()
        self.lines = array("I")

    def add(self, key: bytes, line: int) -> None:
        self.keys += key
        self.lines.append(line)

    def repeats(self) -> list[tuple[int, int]]:
        """(line, the line the key was first on) for each key seen before, in line order."""
        if len(self.lines) < 2:
            return []
        keys = np.frombuffer(self.keys, dtype="<u8").reshape(-1, 2)
        order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: equal keys stay in line order
        ordered = keys[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
        if first.all():
            return []
        lines = np.frombuffer(self.lines, dtype=np.uint32)
        group_start = np.flatnonzero(first)[np.cumsum(first) - 1]
        later = lines[order[~first]]
        earlier = lines[order[group_start[~first]]]
        return sorted(zip(later.tolist(), earlier.tolist(), strict=True))


def _duplicate_key(plate: str, state: str, reason: str) -> bytes:
    # reasons differ in case and spacing between exports: "STOLEN  VEHICLE" is "Stolen vehicle"
    return _key(plate, state, " ".join(reason.split()).casefold())


def _check(settings: Settings, path: Path) -> tuple[int, str]:
    """The first pass: every line checked, repeated NICs and entries found. Returns the number of
    entries and the file's SHA-256, or raises HotlistError listing the problems."""
    problems = _Problems(path)
    nics, entries = _Seen(), _Seen()
    hashing: list[_Hashing] = []
    count = 0
    for line, plate, _, state, reason, _, source_ref, *_ in _entries(settings, path, problems, hashing):
        count += 1
        if source_ref:
            nics.add(_key(source_ref.upper()), line)
        entries.add(_duplicate_key(plate, state, reason), line)
    repeated = [(line, first, "source_ref") for line, first in nics.repeats()]
    repeated += [(line, first, "entry") for line, first in entries.repeats()]
    if problems.count or repeated:
        repeated.sort()
        shown = _describe_repeats(settings, path, repeated[:MAX_PROBLEMS])
        merged = sorted(problems.kept + shown)[:MAX_PROBLEMS]
        raise HotlistError([text for _, text in merged], total=problems.count + len(repeated))
    if not count:
        raise HotlistError([f"{path}: no entries; an empty list would silently stop every alert from it"])
    return count, hashing[0].sha256.hexdigest()


def _describe_repeats(settings: Settings, path: Path, repeated: list[tuple[int, int, str]]) -> list[tuple[int, str]]:
    """The messages for repeated entries, with the values (read again, only for these lines)."""
    if not repeated:
        return []
    wanted = {line for line, _, _ in repeated}
    values = {}
    for entry in _entries(settings, path, _Problems(path), []):
        if entry[0] in wanted:
            values[entry[0]] = entry
    out = []
    for line, first, what in repeated:
        if line not in values:  # the file changed since the first pass
            text = f"the same {'NIC' if what == 'source_ref' else 'plate, state and reason'} as line {first}"
            out.append((line, f"{path}: line {line}: {text}: remove one of the two lines"))
            continue
        _, plate, _, state, reason, _, source_ref, *_ = values[line]
        if what == "source_ref":
            text = f"field source_ref: {_quoted(source_ref)} is also on line {first}; each NIC names one record"
        else:
            text = (
                f"{plate} ({f'state {state}' if state else 'no state'}, reason {_quoted(reason)}) is also on "
                f"line {first}"
            )
        out.append((line, f"{path}: line {line}: {text}: remove one of the two lines"))
    return out


_COLUMNS = (
    "hotlist_id, plate, skeleton, state, reason, entry_date, source_ref, plate_type, plate_year, vehicle_make, "
    "ori, created_at, created_by"
)
_INSERT = f"INSERT INTO hotlist_entry ({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS.split(', ')))})"


def import_csv(settings: Settings, path: str | Path, name: str, actor: audit.Actor) -> ImportResult:
    """Replace the state list `name` with the file's entries, all or nothing (see the module
    docstring for the two passes and how the write is chunked). A retired list of that name is
    started again by the import."""
    path = Path(path)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}", name):
        raise HotlistError([f"list name {name!r}: use 1-40 letters, digits, spaces, '.', '_' or '-'"])
    count, digest = _check(settings, path)
    now = utcnow()
    # what a crash left: replaced lists (named "~retired " before lists could be retired), and
    # staging lists too old to be another import's in progress
    for leftover in Hotlist.select().where(
        Hotlist.name.startswith(REPLACED)
        | Hotlist.name.startswith(f"{STAGING}retired ")
        | (
            Hotlist.name.startswith(f"{STAGING}import ")
            & (Hotlist.created_at < now - dt.timedelta(hours=LEFTOVER_HOURS))
        )
    ):
        _drop(leftover.id)
    with write():
        current = Hotlist.get_or_none(Hotlist.name == name)
        if current is not None and current.kind != "state":
            raise HotlistError([f"{name!r} is a custom list; imports replace state lists only"])
        staging = Hotlist.create(
            name=f"{STAGING}import {now:%Y%m%dT%H%M%S.%f} {name}"[:255],
            kind="state",
            refreshed_at=None,
            stale_recorded_at=now,
        )
    problems = _Problems(path)
    hashing: list[_Hashing] = []
    entries = _entries(settings, path, problems, hashing)
    try:
        pace = Paced(2000, most=ROWS, least=500)
        staged = 0
        while True:
            # read before the transaction: the lock is held for the writing only
            n = pace.size
            chunk = [(staging.id, *e[1:], now, actor.username) for e in itertools.islice(entries, n)]
            if chunk:
                with pace.write():
                    database.cursor().executemany(_INSERT, chunk)
                staged += len(chunk)
            if len(chunk) < n:
                break
        if problems.count or hashing[0].sha256.hexdigest() != digest or staged != count:
            raise HotlistError(
                [f"{path}: the file changed while it was imported; nothing was imported: import it again"]
            )
        with write():
            current = Hotlist.get_or_none(Hotlist.name == name)
            if current is not None and current.kind != "state":
                raise HotlistError([f"{name!r} became a custom list during the import; nothing was imported"])
            in_staging = HotlistEntry.select().where(HotlistEntry.hotlist == staging.id).count()
            if in_staging != count:
                raise HotlistError(
                    [
                        (
                            f"{path}: {in_staging} of {count} entries were staged (was the staging list "
                            "removed meanwhile?); nothing was imported: import the file again"
                        )
                    ]
                )
            replaced = 0
            details: dict = {"list": name, "file": path.name, "sha256": digest}
            if current is not None:
                replaced = HotlistEntry.select().where(HotlistEntry.hotlist == current).count()
                if current.retired_at is not None:
                    details["restarted"] = {
                        "retired_at": current.retired_at.isoformat() + "Z",
                        "retired_by": current.retired_by,
                        "retired_reason": current.retired_reason,
                    }
                Hotlist.update(
                    name=f"{REPLACED}{current.id} {name}"[:255], refreshed_at=None, stale_recorded_at=now
                ).where(Hotlist.id == current.id).execute()
            Hotlist.update(
                name=name,
                source=path.name,
                source_sha256=digest,
                refreshed_at=now,
                entry_count=count,
                stale_recorded_at=None,
                created_at=current.created_at if current else now,
            ).where(Hotlist.id == staging.id).execute()
            audit.record(
                "hotlist.import",
                actor,
                objects=[f"hotlist:{staging.id}"],
                result_count=count,
                details={**details, "replaced": replaced},
            )
    except BaseException:
        entries.close()
        _drop(staging.id)
        raise
    if current is not None:
        _drop(current.id)
    return ImportResult(name, count, replaced, restarted="restarted" in details)


def _drop(hotlist_id: int) -> None:
    """Delete a staging or replaced list: its entries in paced transactions, then its row. The
    first chunks are small and grow as they prove quick: each entry deleted sets its alerts'
    entry_id to NULL (ON DELETE SET NULL), a lookup by the alert_entry_id index (migration 8;
    before it, a scan of the alerts, about 1 ms per entry with 20,000 alerts)."""
    pace = Paced(100, most=ROWS, least=10)
    while True:
        with pace.write() as n:
            gone = database.execute_sql(
                "DELETE FROM hotlist_entry WHERE id IN (SELECT id FROM hotlist_entry WHERE hotlist_id = ? LIMIT ?)",
                [hotlist_id, n],
            ).rowcount
            if gone < n:
                Hotlist.delete().where(Hotlist.id == hotlist_id).execute()
                return


def retire(actor: audit.Actor, name: str, reason: str) -> Hotlist:
    """Stop using a state list: it raises no alerts from now on; its entries and alerts stay, and
    it is listed as retired (who, when, why) until an import of its name starts it again."""
    reason = reason.strip()
    if not reason:
        raise HotlistError(["reason: say why the list is retired (e.g. 'replaced by the DOJ SVS extract')"])
    if len(reason) > LIMITS["reason"]:
        raise HotlistError([f"reason: {len(reason)} characters, at most {LIMITS['reason']}"])
    with write():
        hotlist = _lists().where(Hotlist.name == name).first()
        if hotlist is None:
            raise HotlistError([f"list {name!r}: no such list (`waypost hotlist list` shows them)"])
        if hotlist.kind != "state":
            raise HotlistError(
                [
                    f"{name!r} is the custom list, which is not retired: remove its entries one by one, each with "
                    "its reason (`waypost hotlist remove`)"
                ]
            )
        if hotlist.retired_at is not None:
            raise HotlistError(
                [f"list {name!r}: already retired ({hotlist.retired_at:%Y-%m-%d %H:%M} UTC by {hotlist.retired_by})"]
            )
        hotlist.retired_at, hotlist.retired_by, hotlist.retired_reason = utcnow(), actor.username, reason
        hotlist.save()
        audit.record(
            "hotlist.retire",
            actor,
            objects=[f"hotlist:{hotlist.id}"],
            details={"list": name, "reason": reason, "entries": hotlist.entry_count},
        )
    return hotlist


def custom_list() -> Hotlist:
    hotlist, _ = Hotlist.get_or_create(name="custom", defaults={"kind": "custom"})
    return hotlist


def add_custom(
    settings: Settings, actor: audit.Actor, plate: str, reason: str, approved_by: str, narrative: str, state: str = ""
) -> HotlistEntry:
    """A custom entry; `plate` may be partial with * (any run) and ? (one character). It raises
    alerts until its review date, `hotlist.custom_review_days` from today, unless renewed."""
    text = re.sub(r"[\s-]", "", plate.upper())
    problems = []
    if not PARTIAL.match(text):
        problems.append(f"plate {plate!r}: letters, digits, * and ? only, at most 10")
    elif len(re.sub(r"[*?]", "", text)) < 3:
        problems.append(f"plate {plate!r}: a partial plate needs at least 3 known characters")
    if not reason.strip():
        problems.append("reason: required")
    if len(approved_by.strip()) < 3:
        problems.append("approved_by: the approving commander's name is required for a custom entry")
    if len(narrative.strip()) < 20:
        problems.append("narrative: describe the case and why the entry is needed (at least 20 characters)")
    for field, value in (("reason", reason), ("approved_by", approved_by), ("narrative", narrative)):
        if len(value.strip()) > CUSTOM_LIMITS[field]:
            problems.append(f"{field}: {len(value.strip())} characters, at most {CUSTOM_LIMITS[field]}")
    if state and not re.fullmatch(r"[a-zA-Z]{2}", state):
        problems.append(f"state {state!r}: a two-letter code")
    if problems:
        raise HotlistError(problems)
    pattern = "*" in text or "?" in text
    review_on = local_today(settings) + dt.timedelta(days=settings.hotlist.custom_review_days)
    with write():
        hotlist = custom_list()
        entry = HotlistEntry.create(
            hotlist=hotlist,
            plate=text,
            pattern=pattern,
            skeleton="" if pattern else skeleton(text),
            state=state.lower(),
            reason=reason.strip(),
            approved_by=approved_by.strip(),
            narrative=narrative.strip(),
            created_by=actor.username,
            review_on=review_on,
        )
        hotlist.entry_count = (
            HotlistEntry.select().where((HotlistEntry.hotlist == hotlist) & HotlistEntry.removed_at.is_null()).count()
        )
        hotlist.refreshed_at = utcnow()
        hotlist.save()
        audit.record(
            "hotlist.entry_add",
            actor,
            query={"plate": text},
            objects=[f"hotlist_entry:{entry.id}"],
            details={
                "reason": entry.reason,
                "approved_by": entry.approved_by,
                "pattern": pattern,
                "review_on": review_on.isoformat(),
            },
        )
    return entry


def renew_entry(settings: Settings, actor: audit.Actor, entry_id: int, reason: str) -> HotlistEntry:
    """Keep a custom entry raising alerts for `hotlist.custom_review_days` more from today, with
    the reason it is still needed (before or after its review date)."""
    reason = reason.strip()
    if not reason:
        raise HotlistError(["reason: say why the entry is still needed (e.g. 'suspect still at large, case open')"])
    if len(reason) > CUSTOM_LIMITS["reason"]:
        raise HotlistError([f"reason: {len(reason)} characters, at most {CUSTOM_LIMITS['reason']}"])
    with write():
        entry = HotlistEntry.get_or_none(HotlistEntry.id == entry_id)
        if entry is None or entry.removed_at is not None:
            raise HotlistError([f"entry {entry_id}: no such active entry"])
        hotlist = entry.hotlist
        if hotlist.kind != "custom":
            raise HotlistError(
                [
                    f"entry {entry_id}: on the state list {hotlist.name}, which each import refreshes; "
                    "only custom entries are renewed"
                ]
            )
        was_due = review_date(entry, hotlist, settings)
        entry.review_on = local_today(settings) + dt.timedelta(days=settings.hotlist.custom_review_days)
        entry.renewed_at, entry.renewed_by, entry.renew_reason = utcnow(), actor.username, reason
        entry.save()
        audit.record(
            "hotlist.entry_renew",
            actor,
            query={"plate": entry.plate},
            objects=[f"hotlist_entry:{entry.id}"],
            details={
                "reason": reason,
                "review_on": entry.review_on.isoformat(),
                "was_due": was_due.isoformat() if was_due else None,
            },
        )
    return entry


def remove_entry(actor: audit.Actor, entry_id: int, reason: str) -> HotlistEntry:
    """Mark an entry removed (vehicle recovered, warrant served...), keeping who, when and why."""
    if not reason.strip():
        raise HotlistError(["reason: say why the entry is removed (e.g. vehicle recovered)"])
    with write():
        entry = HotlistEntry.get_or_none(HotlistEntry.id == entry_id)
        if entry is None or entry.removed_at is not None:
            raise HotlistError([f"entry {entry_id}: no such active entry"])
        entry.removed_at, entry.removed_by, entry.removed_reason = utcnow(), actor.username, reason.strip()
        entry.save()
        audit.record(
            "hotlist.entry_remove",
            actor,
            query={"plate": entry.plate},
            objects=[f"hotlist_entry:{entry.id}"],
            details={"reason": entry.removed_reason},
        )
    return entry


def record_stale(settings: Settings, actor: audit.Actor) -> list[str]:
    """Write a `hotlist.stale` access record for each list that went stale since last noticed.
    Returns the names of all stale lists (for warnings)."""
    now = utcnow()
    stale = [h for h in _lists() if is_stale(h, settings, now)]
    fresh_notice = [h for h in stale if h.stale_recorded_at is None]
    if fresh_notice:
        with write():
            for h in fresh_notice:
                h.stale_recorded_at = now
                h.save()
                audit.record(
                    "hotlist.stale",
                    actor,
                    objects=[f"hotlist:{h.id}"],
                    details={
                        "list": h.name,
                        "refreshed_at": h.refreshed_at.isoformat() + "Z" if h.refreshed_at else None,
                        "stale_after_hours": settings.hotlist.stale_after_hours,
                    },
                )
    return [h.name for h in stale]


def _past_review(settings: Settings, now: dt.datetime) -> dict[int, list[int]]:
    """custom list id -> its active entries past their review date (custom entries are typed in
    by hand: dozens, not millions)."""
    today = local_today(settings, now)
    out: dict[int, list[int]] = {}
    for entry in (
        HotlistEntry.select(HotlistEntry, Hotlist)
        .join(Hotlist)
        .where((Hotlist.kind == "custom") & HotlistEntry.removed_at.is_null())
        .order_by(HotlistEntry.id)
    ):
        if past_review(entry, entry.hotlist, settings, today):
            out.setdefault(entry.hotlist.id, []).append(entry.id)
    return out


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def status(settings: Settings) -> list[dict]:
    """Every list in use or retired: its size, freshness, retirement, and for the custom list the
    entries past their review date (they raise no alerts)."""
    now = utcnow()
    past = _past_review(settings, now)
    return [
        {
            "name": h.name,
            "kind": h.kind,
            "entries": h.entry_count,
            "refreshed_at": _iso(h.refreshed_at),
            "stale": is_stale(h, settings, now),
            "retired": h.retired_at is not None,
            "retired_at": _iso(h.retired_at),
            "retired_by": h.retired_by,
            "retired_reason": h.retired_reason,
            "past_review": past.get(h.id, []),
        }
        for h in _lists().order_by(Hotlist.name)
    ]


def _lists():
    """The lists in use or retired (not one being imported or replaced)."""
    return Hotlist.select().where(~Hotlist.name.startswith(STAGING))
