"""Legal holds: reads that are or may become evidence, kept out of the automatic purge.

A hold covers one read, or every read a plate search finds in a stated period. Either way the
reads it covers are written to `hold_read` when it is placed, so a hold on a query freezes that
set: reads stored later that would match are not held, and a read held stays held however the
search index changes. Retention (appliance/retention.py) skips every read of an active hold.

Placing a hold is an access to ALPR data (it selects reads by plate), so it needs a purpose and a
case or incident number, checked by the same rule as every other access (audit.check_purpose);
the hold is filed under that case number. Releasing a hold is an administrator's decision
(permission holds.release, checked by the web layer; a shell on the post is an administrator's),
recorded with who, when and why. The hold itself is never deleted: it stays on file, released.

Headquarters keeps its own copy of the reads, so a hold must reach it: placing and releasing each
queue an event in the outbox, in the same transaction as the hold and its access record, and the
event travels with the next batch (push or pull) in outbox order, after the reads before it. A
hold placed while headquarters is out of reach arrives when it is back, and its release after it.
`for_headquarters` is what a batch carries for an event (sync/post.py); headquarters keeps it as
a hold of this post (sync/hq/holds.py) that only a release here can end.
"""

from __future__ import annotations

import datetime as dt
import json

from peewee import AutoField, CharField, CompositeKey, DateTimeField, ForeignKeyField, IntegerField, TextField

from appliance import audit, search
from appliance.config import Settings
from appliance.db import write
from appliance.models import BaseModel, Outbox, Read, database, utcnow

MAX_READS = 100_000  # reads one query hold may freeze (a larger set is a query to narrow)
MAX_PERIOD_DAYS = 3660  # a query hold's period, at most the longest retention period

audit.register_action("hold.place", True)
audit.register_action("hold.release", False)
audit.register_action("hold.list", True)  # the list names the plates held
audit.register_action("hold.view", True)

# Outbox kinds of a hold's events (object_id is the hold's id).
PLACED, RELEASED = "hold.place", "hold.release"


class HoldError(ValueError):
    """A hold cannot be placed or released as asked; the message says why and what to change."""


class LegalHold(BaseModel):
    id = AutoField()
    kind = CharField()  # "read" or "query"
    case_number = CharField()
    purpose_code = CharField()
    reason = TextField()
    query = TextField()  # canonical JSON: {"read": uuid} or the search that chose the reads
    read_count = IntegerField()
    placed_by = CharField()
    placed_org = CharField()
    placed_at = DateTimeField(default=utcnow)
    released_at = DateTimeField(null=True)
    released_by = CharField(null=True)
    release_reason = TextField(null=True)

    class Meta:
        table_name = "legal_hold"

    @property
    def active(self) -> bool:
        return self.released_at is None

    @property
    def query_record(self) -> dict:
        return json.loads(self.query)


class HoldRead(BaseModel):
    hold = ForeignKeyField(LegalHold, backref="reads", on_delete="CASCADE", column_name="hold_id")
    read = ForeignKeyField(Read, on_delete="CASCADE", column_name="read_id")

    class Meta:
        table_name = "hold_read"
        primary_key = CompositeKey("hold", "read")


MODELS = (LegalHold, HoldRead)


def check_reason(reason: str | None, what: str) -> str:
    """The reason a hold is placed or released, whitespace folded; HoldError(`what`: ...) unless
    it is 10 to 500 characters. Headquarters' holds (sync/hq/holds.py) use the same rule."""
    reason = " ".join((reason or "").split())
    if len(reason) < 10:
        raise HoldError(f"{what}: give a reason of at least 10 characters (what the data is or may be evidence of)")
    if len(reason) > 500:
        raise HoldError(f"{what}: the reason is {len(reason)} characters; keep it to 500")
    return reason


def check_purpose(settings: Settings, purpose_code: str | None, case_number: str | None) -> audit.Purpose:
    """audit.check_purpose, its refusal as a HoldError ("hold not placed: ...")."""
    try:
        return audit.check_purpose(settings, purpose_code, case_number)
    except audit.PurposeError as exc:
        raise HoldError(f"hold not placed: {exc}") from exc


def _create(
    actor: audit.Actor,
    purpose: audit.Purpose,
    kind: str,
    reason: str,
    query: dict,
    read_ids: list[int],
    uuids: list[str],
    named: dict | None = None,
) -> LegalHold:
    """Inside the caller's write transaction: the hold, its reads and its access record (whose
    query is the hold's, with `named` added: the plate of a held read)."""
    hold = LegalHold.create(
        kind=kind,
        case_number=purpose.case_number,
        purpose_code=purpose.code,
        reason=reason,
        query=audit.canonical(query),
        read_count=len(read_ids),
        placed_by=actor.username,
        placed_org=actor.organization,
    )
    for chunk in range(0, len(read_ids), 5000):
        HoldRead.insert_many(
            [(hold.id, rid) for rid in read_ids[chunk : chunk + 5000]], fields=[HoldRead.hold, HoldRead.read]
        ).execute()
    audit.record(
        "hold.place",
        actor,
        query={**query, **(named or {})},
        purpose=purpose,
        objects=[f"hold:{hold.id}"] + [f"read:{u}" for u in uuids[:1000]],
        result_count=len(read_ids),
        details={
            "kind": kind,
            "reason": reason,
            "reads": len(read_ids),
            **({"objects_truncated": True} if len(uuids) > 1000 else {}),
        },
    )
    Outbox.create(kind=PLACED, object_id=str(hold.id))
    return hold


def place_on_read(
    settings: Settings, actor: audit.Actor, read_id: int, purpose_code: str, case_number: str, reason: str
) -> LegalHold:
    """Hold one read (by its id) under a case."""
    purpose = check_purpose(settings, purpose_code, case_number)
    reason = check_reason(reason, "hold not placed")
    with write():
        read = Read.get_or_none(Read.id == read_id)
        if read is None:
            raise HoldError(f"hold not placed: there is no read with id {read_id} (it may have been purged)")
        return _create(
            actor, purpose, "read", reason, {"read": read.uuid}, [read.id], [read.uuid], named={"plate": read.plate}
        )


def matching_reads(query: search.Query) -> list[tuple[int, str]]:
    """(id, uuid) of every read the search finds, all pages of it."""
    found: list[tuple[int, str]] = []
    before = None
    while True:
        page = search.search(query, limit=search.PAGE_MAX, before=before)
        found.extend((h.read.id, h.read.uuid) for h in page.hits)
        if len(found) > MAX_READS:
            raise HoldError(
                f"hold not placed: the search finds more than {MAX_READS:,} reads; narrow the plate or the period"
            )
        if page.next_before is None:
            return found
        before = page.next_before


def place_on_query(
    settings: Settings, actor: audit.Actor, query: search.Query, purpose_code: str, case_number: str, reason: str
) -> LegalHold:
    """Hold every read the plate search finds in its period (since and until are required). The
    set is chosen and frozen in one transaction, so the hold covers exactly what was found."""
    purpose = check_purpose(settings, purpose_code, case_number)
    reason = check_reason(reason, "hold not placed")
    if query.since is None or query.until is None:
        raise HoldError("hold not placed: a hold on a search needs a period (from and to)")
    if query.since > query.until:
        raise HoldError("hold not placed: the period ends before it starts")
    if query.until - query.since > dt.timedelta(days=MAX_PERIOD_DAYS):
        raise HoldError(f"hold not placed: the period is longer than {MAX_PERIOD_DAYS} days")
    # The search runs in a read snapshot, not under the write lock: a wide one may take seconds,
    # and the pipeline must go on storing reads meanwhile.
    with database.atomic():
        try:
            found = matching_reads(query)
        except search.SearchError as exc:
            raise HoldError(f"hold not placed: {exc}") from exc
    with write():
        # a read purged between the snapshot and now is no longer there to hold
        ids = {f[0] for f in found}
        present: set[int] = set()
        listed = sorted(ids)
        for i in range(0, len(listed), 5000):
            chunk = listed[i : i + 5000]
            present.update(
                r[0]
                for r in database.execute_sql(f"SELECT id FROM read WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
            )
        found = sorted(f for f in found if f[0] in present)
        if not found:
            raise HoldError("hold not placed: the search finds no reads in that period")
        return _create(actor, purpose, "query", reason, query.as_record(), [f[0] for f in found], [f[1] for f in found])


def release(actor: audit.Actor, hold_id: int, reason: str) -> LegalHold:
    """Release a hold (its reads become subject to retention again unless another hold covers them)."""
    reason = check_reason(reason, "hold not released")
    with write():
        hold = LegalHold.get_or_none(LegalHold.id == hold_id)
        if hold is None:
            raise HoldError(f"hold not released: there is no hold {hold_id}")
        if not hold.active:
            raise HoldError(
                f"hold not released: hold {hold_id} was already released on "
                f"{hold.released_at:%Y-%m-%d %H:%M} UTC by {hold.released_by}"
            )
        hold.released_at, hold.released_by, hold.release_reason = utcnow(), actor.username, reason
        hold.save()
        audit.record(
            "hold.release",
            actor,
            query={"hold": hold.id},
            objects=[f"hold:{hold.id}"],
            result_count=hold.read_count,
            details={"case_number": hold.case_number, "reason": reason, "placed_by": hold.placed_by},
        )
        Outbox.create(kind=RELEASED, object_id=str(hold.id))
    return hold


def listing(actor: audit.Actor, purpose: audit.Purpose, active_only: bool = False) -> list[LegalHold]:
    """Holds, newest first; the listing itself is recorded with its purpose and the plates the
    holds name (a hold on a search shows its plate)."""
    with write():
        q = LegalHold.select().order_by(LegalHold.id.desc())
        if active_only:
            q = q.where(LegalHold.released_at.is_null())
        holds = list(q)
        plates = sorted({h.query_record["plate"] for h in holds if h.kind == "query" and "plate" in h.query_record})
        audit.record(
            "hold.list",
            actor,
            query={"active_only": active_only, "plates": plates},
            purpose=purpose,
            result_count=len(holds),
            objects=[f"hold:{h.id}" for h in holds[:1000]],
        )
    return holds


def held_reads(
    actor: audit.Actor, purpose: audit.Purpose, hold_id: int, limit: int = 200
) -> tuple[LegalHold, list[Read]]:
    """A hold and (the first `limit` of) the reads it holds that still exist, as a recorded access."""
    with write():
        hold = LegalHold.get_or_none(LegalHold.id == hold_id)
        if hold is None:
            raise HoldError(f"there is no hold {hold_id}")
        reads = list(
            Read.select()
            .join(HoldRead, on=(HoldRead.read == Read.id))
            .where(HoldRead.hold == hold.id)
            .order_by(Read.captured_at.desc())
            .limit(limit)
        )
        audit.record(
            "hold.view",
            actor,
            query={"hold": hold.id, "plates": sorted({r.plate for r in reads})},
            purpose=purpose,
            objects=[f"hold:{hold.id}"] + [f"read:{r.uuid}" for r in reads],
            result_count=len(reads),
        )
    return hold, reads


def active_holds_on(read_id: int) -> list[LegalHold]:
    return list(
        LegalHold.select()
        .join(HoldRead)
        .where((HoldRead.read == read_id) & LegalHold.released_at.is_null())
        .order_by(LegalHold.id)
    )


# The SQL retention uses to skip held reads (r is the read table's alias).
HELD_SQL = (
    "EXISTS (SELECT 1 FROM hold_read hr JOIN legal_hold h ON h.id = hr.hold_id "
    "WHERE hr.read_id = r.id AND h.released_at IS NULL)"
)


def held_count(before: dt.datetime) -> int:
    """Reads captured before `before` that an active hold keeps."""
    return database.execute_sql(
        f"SELECT count(*) FROM read r WHERE r.captured_at < ? AND {HELD_SQL}", [before]
    ).fetchone()[0]


def for_headquarters(kind: str, hold_id: int) -> dict | None:
    """What a batch carries for one outbox event of a hold: for a placing, the hold with the rule
    headquarters matches by (plate, mode, capture period) and the uuids of the reads it froze;
    for a release, who released it, when and why (times as datetimes: the batch writes them as
    every row's, sync.post._plain_dict). None if the hold is not there (never deleted; only a
    database edited by hand would lose one)."""
    hold = LegalHold.get_or_none(LegalHold.id == hold_id)
    if hold is None:
        return None
    if kind == RELEASED:
        if hold.released_at is None:
            return None
        return {
            "id": hold.id,
            "released_at": hold.released_at,
            "released_by": hold.released_by,
            "release_reason": hold.release_reason,
        }
    reads = [
        r[0]
        for r in database.execute_sql(
            "SELECT r.uuid FROM hold_read hr JOIN read r ON r.id = hr.read_id WHERE hr.hold_id = ? ORDER BY r.uuid",
            (hold.id,),
        )
    ]
    query = hold.query_record
    if hold.kind == "read":
        # the read itself, by uuid; the rule is its plate at its capture time
        read = Read.get_or_none(Read.uuid == query.get("read"))
        at = read.captured_at if read is not None else hold.placed_at
        rule = {"plate": read.plate if read is not None else "", "mode": "exact", "since": at, "until": at}
        reads = sorted(set(reads) | {str(query.get("read"))})
    else:
        rule = {
            "plate": query.get("plate", ""),
            "mode": query.get("mode", "exact"),
            "since": str(query.get("since", "")).removesuffix("Z"),
            "until": str(query.get("until", "")).removesuffix("Z"),
        }
    return dict(
        rule,
        id=hold.id,
        kind=hold.kind,
        case_number=hold.case_number,
        purpose_code=hold.purpose_code,
        reason=hold.reason,
        placed_by=hold.placed_by,
        placed_org=hold.placed_org,
        placed_at=hold.placed_at,
        reads=reads,
    )
