"""Hotlists: state lists imported from CSV files, custom entries typed in by officers.

A state list is replaced whole by each import, all or nothing: a malformed line stops the import
with every problem named by file, line and field, and nothing changes. A list of hundreds of
thousands of entries takes seconds to write, and every search waits for the write lock (its access
record), so the new entries are written in short transactions (appliance.db.Paced) under a staging
list that matches nothing (a "~" name no list can have, never refreshed, so stale); one short
transaction then swaps the names and the old entries are deleted in short transactions after. The
list's row (its id) is the staging one from then on. A staging or retired list a crash left behind
is removed by the next import. A state list not
refreshed for `hotlist.stale_after_hours` produces no alerts (Barstow 466.5: 72 hours), and the
first time that is noticed it is written to the access log. Custom entries need the approving
commander and a narrative (Barstow 466.6); they may be partial plates with `*` and `?`. Entries are
removed (kept, marked with who, when and why), never deleted. Every change is an access record.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from appliance import audit
from appliance.config import Settings
from appliance.db import Paced, write
from appliance.models import Hotlist, HotlistEntry, database, utcnow
from recognizer.formats import normalise

for _name in ("hotlist.import", "hotlist.entry_add", "hotlist.entry_remove", "hotlist.stale"):
    audit.register_action(_name, False)

# OCR-confusable characters fold to one representative: 0/O/D/Q, 1/I/L, 8/B, 5/S, 2/Z, 6/G.
_FOLD = str.maketrans({"O": "0", "D": "0", "Q": "0", "I": "1", "L": "1", "B": "8", "S": "5", "Z": "2", "G": "6"})
PLATE = re.compile(r"^[A-Z0-9]{1,8}$")
PARTIAL = re.compile(r"^[A-Z0-9*?]{1,10}$")
MAX_PROBLEMS = 25
STAGING = "~"  # a list being imported or retired: no list name can start with it
ROWS = 20_000  # the most entries written or deleted in one transaction
LEFTOVER_HOURS = 6  # a staging list older than this is a crashed import's (an import takes minutes)


class HotlistError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        super().__init__("\n".join(shown + ([f"... and {more} more"] if more > 0 else [])))


def skeleton(plate: str) -> str:
    return plate.translate(_FOLD)


def is_stale(hotlist: Hotlist, settings: Settings, now: dt.datetime | None = None) -> bool:
    if hotlist.kind != "state":
        return False
    now = now or utcnow()
    return hotlist.refreshed_at is None or now - hotlist.refreshed_at > dt.timedelta(
        hours=settings.hotlist.stale_after_hours
    )


@dataclass(frozen=True)
class ImportResult:
    hotlist: str
    entries: int
    replaced: int


def _parse(settings: Settings, path: Path) -> list[dict]:
    cfg = settings.hotlist
    columns = {
        "plate": cfg.plate_column,
        "state": cfg.state_column,
        "reason": cfg.reason_column,
        "entry_date": cfg.entry_date_column,
        "source_ref": cfg.source_ref_column,
    }
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise HotlistError([f"{path}: file not found"]) from None
    except UnicodeDecodeError as exc:
        raise HotlistError([f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8 CSV"]) from None
    # newline="": the csv module finds the line ends itself, so reader.line_num counts the file's
    # own lines (blank ones included; a form feed or U+2028 inside a field is not a line end).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    # plate and reason are required; state, entry date and source reference are used when present
    missing = [f"{field} (column {columns[field]!r})" for field in ("plate", "reason") if columns[field] not in header]
    if missing:
        raise HotlistError(
            [
                f"{path}: line 1: header {header!r} lacks {', '.join(missing)}; "
                "set the hotlist.*_column keys to this file's column names"
            ]
        )
    rows, problems = [], []
    for raw in reader:
        line = reader.line_num
        if raw.get(None):
            problems.append(f"{path}: line {line}: {len(header) + len(raw[None])} fields, the header has {len(header)}")
            continue
        values = {field: (raw.get(col) or "").strip() for field, col in columns.items()}
        if not any(values.values()):
            continue  # blank line
        plate = normalise(values["plate"])
        if not PLATE.match(plate) or re.search(r"[^A-Za-z0-9 \-]", values["plate"]):
            problems.append(
                f"{path}: line {line}: field plate: {values['plate']!r} is not a plate "
                "(1-8 letters and digits; spaces and dashes are ignored)"
            )
            continue
        state = values["state"].lower()
        if state and not re.fullmatch(r"[a-z]{2}", state):
            problems.append(f"{path}: line {line}: field state: {values['state']!r} is not a two-letter code")
            continue
        if not values["reason"]:
            problems.append(f"{path}: line {line}: field reason: empty (every entry needs its reason or category)")
            continue
        entry_date = None
        if values["entry_date"]:
            try:
                entry_date = dt.datetime.strptime(values["entry_date"], cfg.date_format).date()
            except ValueError:
                problems.append(
                    f"{path}: line {line}: field entry_date: {values['entry_date']!r} does not match "
                    f"{cfg.date_format!r}"
                )
                continue
        rows.append(
            {
                "plate": plate,
                "skeleton": skeleton(plate),
                "state": state,
                "reason": values["reason"][:200],
                "entry_date": entry_date,
                "source_ref": values["source_ref"][:100],
            }
        )
    if problems:
        raise HotlistError(problems)
    if not rows:
        raise HotlistError([f"{path}: no entries; an empty list would silently stop every alert from it"])
    return rows


def import_csv(settings: Settings, path: str | Path, name: str, actor: audit.Actor) -> ImportResult:
    """Replace the state list `name` with the file's entries, all or nothing (see the module
    docstring for how the write is chunked)."""
    path = Path(path)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}", name):
        raise HotlistError([f"list name {name!r}: use 1-40 letters, digits, spaces, '.', '_' or '-'"])
    rows = _parse(settings, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    now = utcnow()
    # what a crash left: retired lists, and staging lists too old to be another import's in progress
    for leftover in Hotlist.select().where(
        Hotlist.name.startswith(f"{STAGING}retired ")
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
    try:
        pace = Paced(2000, most=ROWS, least=500)
        done = 0
        while done < len(rows):
            with pace.write() as n:
                HotlistEntry.insert_many(
                    [
                        {**r, "hotlist": staging.id, "created_at": now, "created_by": actor.username}
                        for r in rows[done : done + n]
                    ]
                ).execute()
            done += n
        with write():
            current = Hotlist.get_or_none(Hotlist.name == name)
            if current is not None and current.kind != "state":
                raise HotlistError([f"{name!r} became a custom list during the import; nothing was imported"])
            staged = HotlistEntry.select().where(HotlistEntry.hotlist == staging.id).count()
            if staged != len(rows):
                raise HotlistError(
                    [
                        (
                            f"{path}: {staged} of {len(rows)} entries were staged (was the staging list "
                            "removed meanwhile?); nothing was imported: import the file again"
                        )
                    ]
                )
            replaced = 0
            if current is not None:
                replaced = HotlistEntry.select().where(HotlistEntry.hotlist == current).count()
                Hotlist.update(
                    name=f"{STAGING}retired {current.id} {name}"[:255], refreshed_at=None, stale_recorded_at=now
                ).where(Hotlist.id == current.id).execute()
            Hotlist.update(
                name=name,
                source=path.name,
                source_sha256=digest,
                refreshed_at=now,
                entry_count=len(rows),
                stale_recorded_at=None,
                created_at=current.created_at if current else now,
            ).where(Hotlist.id == staging.id).execute()
            audit.record(
                "hotlist.import",
                actor,
                objects=[f"hotlist:{staging.id}"],
                result_count=len(rows),
                details={"list": name, "file": path.name, "sha256": digest, "replaced": replaced},
            )
    except BaseException:
        _drop(staging.id)
        raise
    if current is not None:
        _drop(current.id)
    return ImportResult(name, len(rows), replaced)


def _drop(hotlist_id: int) -> None:
    """Delete a staging or retired list: its entries in paced transactions, then its row. The
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


def custom_list() -> Hotlist:
    hotlist, _ = Hotlist.get_or_create(name="custom", defaults={"kind": "custom"})
    return hotlist


def add_custom(
    actor: audit.Actor, plate: str, reason: str, approved_by: str, narrative: str, state: str = ""
) -> HotlistEntry:
    """A custom entry; `plate` may be partial with * (any run) and ? (one character)."""
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
    if state and not re.fullmatch(r"[a-zA-Z]{2}", state):
        problems.append(f"state {state!r}: a two-letter code")
    if problems:
        raise HotlistError(problems)
    pattern = "*" in text or "?" in text
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
            details={"reason": entry.reason, "approved_by": entry.approved_by, "pattern": pattern},
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


def status(settings: Settings) -> list[dict]:
    now = utcnow()
    return [
        {
            "name": h.name,
            "kind": h.kind,
            "entries": h.entry_count,
            "refreshed_at": h.refreshed_at.isoformat(timespec="seconds") + "Z" if h.refreshed_at else None,
            "stale": is_stale(h, settings, now),
        }
        for h in _lists().order_by(Hotlist.name)
    ]


def _lists():
    """The lists in use (not one being imported or retired)."""
    return Hotlist.select().where(~Hotlist.name.startswith(STAGING))
