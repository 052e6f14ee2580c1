"""Legal holds at headquarters: reads kept out of headquarters' purge (sync/hq/retention.py).

A post's hold freezes the set of reads it covers (appliance/holds.py); headquarters' copy is a
rule instead, because the reads it must keep may still be on their way from a post that was
offline: a hold covers every read of one post (or of every post) whose plate, or one of its
alternative readings, matches an exact plate or a wildcard (`*` any run, `?` one character, the
post's search rules), captured in a stated period. Retention skips a read while any active hold
covers it; once the hold is released, the next run purges what is past its period.

Placing a hold selects reads by plate, so it is an access to ALPR data: it needs a purpose and
a case or incident number (audit.check_purpose, as on the post) and a reason. The hold is never
deleted: a release is recorded on it (who, when, why).

Placing, releasing and listing each write an access record in headquarters' access log (the
accounts database under data_dir, the one its pages record to). That is another database than
headquarters' data (which may be PostgreSQL), so the two cannot be one transaction: the record is
written and committed inside the hold's transaction, just before it commits. If the record cannot
be written the hold is not changed; if headquarters' commit failed after the record's, the log
would show an attempt that did not take effect, never an action without its record.

A hold placed at a post reaches headquarters with the post's batches (appliance/holds.py queues
it in the post's outbox; sync/hq/ingest.py hands it here as the batch is stored, in the batch's
transaction). Headquarters keeps it as a hold of that post (origin_hold_id: its id there) with the
same rule as its own (plate, mode, capture period, case, purpose, reason, who placed it) and, on
top, the reads the post's hold froze, by uuid (hq_legal_hold_read): a post's hold is a frozen set
of reads, which a "similar" search or a hold on one read cannot express as a plate pattern, so
headquarters keeps the union of the two, never less than the post. It is released only by its
release at the post, arriving the same way; headquarters staff cannot release it here. Its access
records are the post's own (hold.place and hold.release in the post's log, copied to
headquarters with the batch), so storing it writes none here.
"""

from __future__ import annotations

import datetime as dt

from appliance import audit
from appliance.config import Settings
from appliance.db import write

# a hold's rules are the post's: the same errors, reason, purpose check and longest period
from appliance.holds import MAX_PERIOD_DAYS, HoldError, check_purpose, check_reason
from appliance.models import utcnow
from appliance.search import SearchError, normalise
from sync.hq.models import HQLegalHold, HQPost, hq_database, insert_rows
from sync.hq.models import write as hq_write
from sync.protocol import ProtocolError

MODES = ("exact", "wildcard")

# The post's action names, with the query saying "at": "headquarters" (as headquarters' search does).
audit.register_action("hold.place", True)
audit.register_action("hold.release", False)
audit.register_action("hold.list", True)


def _held(which: str) -> str:
    return (
        f"(EXISTS (SELECT 1 FROM hq_legal_hold h WHERE {which} "
        "AND (h.post_id IS NULL OR h.post_id = r.post_id) "
        "AND r.captured_at >= h.since AND r.captured_at <= h.until "
        "AND (r.plate LIKE h.pattern OR EXISTS (SELECT 1 FROM hq_read_text t "
        "WHERE t.read_id = r.id AND t.text LIKE h.pattern))) "
        "OR EXISTS (SELECT 1 FROM hq_legal_hold_read x JOIN hq_legal_hold h ON h.id = x.hold_id "
        f"WHERE {which} AND x.post_id = r.post_id AND x.read_uuid = r.uuid))"
    )


# The SQL retention uses to keep held reads (r is hq_read's alias). A read is matched by its
# plate or by any text the search index holds for it (its alternatives); retention only purges
# reads that are indexed, so a hold sees every text of a read before the read can go. A read a
# post's hold froze is matched by its uuid as well.
HELD_SQL = _held("h.released_at IS NULL")


def _stamp(value: dt.datetime, end: bool = False) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S") + (".999999" if end else "")


def place(
    settings: Settings,
    actor: audit.Actor,
    *,
    post_id: str | None,
    plate: str,
    mode: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    purpose_code: str | None,
    case_number: str | None,
    reason: str | None,
) -> tuple[HQLegalHold, int]:
    """Place a hold; returns it and how many reads headquarters holds now that it covers. The
    caller has headquarters' database and the accounts database connected."""
    purpose = check_purpose(settings, purpose_code, case_number)
    reason = check_reason(reason, "hold not placed")
    if mode not in MODES:
        raise HoldError(f"hold not placed: mode {mode!r}: choose exact or wildcard")
    try:
        text = normalise(plate, mode)
    except SearchError as exc:
        hint = (
            " (a plate with * or ? needs --mode wildcard)"
            if mode == "exact" and any(c in (plate or "") for c in "*?")
            else ""
        )
        raise HoldError(f"hold not placed: plate {plate!r}: {exc}{hint}") from exc
    if since is None or until is None:
        raise HoldError("hold not placed: a hold needs a period of capture times (from and to)")
    if since > until:
        raise HoldError(
            f"hold not placed: the period ends ({until:%Y-%m-%d %H:%M}) before it starts ({since:%Y-%m-%d %H:%M})"
        )
    if until - since > dt.timedelta(days=MAX_PERIOD_DAYS):
        raise HoldError(f"hold not placed: the period is longer than {MAX_PERIOD_DAYS} days")
    post_id = (post_id or "").strip() or None
    pattern = text.replace("*", "%").replace("?", "_")
    query = {
        "at": "headquarters",
        "post": post_id or "*",
        "plate": text,
        "mode": mode,
        "since": _stamp(since),
        "until": _stamp(until, end=True),
    }
    with hq_write():
        if post_id is not None and HQPost.get_or_none(HQPost.id == post_id) is None:
            raise HoldError(f"hold not placed: post {post_id!r} is not enrolled here (see `waypost hq status`)")
        hold = HQLegalHold.create(
            post_id=post_id,
            plate=text,
            mode=mode,
            pattern=pattern,
            since=query["since"],
            until=query["until"],
            reason=reason,
            purpose_code=purpose.code,
            case_number=purpose.case_number,
            placed_by=actor.username,
            placed_org=actor.organization,
        )
        covered = covered_count(hold.id)
        with write():
            audit.record(
                "hold.place",
                actor,
                query=query,
                purpose=purpose,
                objects=[f"hq_hold:{hold.id}"],
                result_count=covered,
                details={"reason": reason},
            )
    return hold, covered


def covered_count(hold_id: int) -> int:
    """Reads headquarters holds now that the hold covers (whether or not they are past retention)."""
    p = hq_database.param
    held = _held(f"h.id = {p}")
    # the first terms let the capture-time index narrow the scan to the hold's period
    return hq_database.execute_sql(
        f"SELECT count(*) FROM hq_read r, hq_legal_hold w WHERE w.id = {p} AND r.captured_at >= w.since "
        f"AND r.captured_at <= w.until AND {held}",
        (hold_id, hold_id, hold_id),
    ).fetchone()[0]


def release(actor: audit.Actor, hold_id: int, reason: str | None) -> HQLegalHold:
    """Release a hold: its reads become subject to retention again unless another hold covers them."""
    reason = check_reason(reason, "hold not released")
    with hq_write():
        hold = HQLegalHold.get_or_none(HQLegalHold.id == hold_id)
        if hold is None:
            raise HoldError(
                f"hold not released: there is no hold {hold_id} at headquarters (see `waypost hq hold list`)"
            )
        if hold.origin_hold_id is not None:
            raise HoldError(
                f"hold not released: hold {hold_id} was placed at post {hold.post_id} (its hold "
                f"{hold.origin_hold_id} there) and only that post can release it: release it there "
                f"(`waypost hold release {hold.origin_hold_id}`); the release reaches headquarters "
                "with the post's next batch"
            )
        if not hold.active:
            raise HoldError(
                f"hold not released: hold {hold_id} was already released on "
                f"{hold.released_at:%Y-%m-%d %H:%M} UTC by {hold.released_by}"
            )
        hold.released_at, hold.released_by, hold.release_reason = utcnow(), actor.username, reason
        hold.save()
        with write():
            audit.record(
                "hold.release",
                actor,
                query={"at": "headquarters", "hold": hold.id},
                objects=[f"hq_hold:{hold.id}"],
                details={"case_number": hold.case_number, "reason": reason, "placed_by": hold.placed_by},
            )
    return hold


def listing(actor: audit.Actor, purpose: audit.Purpose, active_only: bool = False) -> list[HQLegalHold]:
    """Holds, newest first; the listing itself is recorded with its purpose and the plates shown."""
    q = HQLegalHold.select().order_by(HQLegalHold.id.desc())
    if active_only:
        q = q.where(HQLegalHold.released_at.is_null())
    holds = list(q)
    with write():  # committed before the caller shows anything
        audit.record(
            "hold.list",
            actor,
            query={"at": "headquarters", "active_only": active_only, "plates": sorted({h.plate for h in holds})},
            purpose=purpose,
            result_count=len(holds),
            objects=[f"hq_hold:{h.id}" for h in holds[:1000]],
        )
    return holds


# --- holds placed at a post, arriving with its batches (sync/hq/ingest.py) -----------------------


def store_from_post(post_id: str, events: list[tuple[str, dict]], segment: int = 1) -> int:
    """Apply a batch's hold events (`(where, protocol.hold_event(...))`, in seq order), in the caller's
    ingest transaction. The same event again changes nothing (a batch delivered twice, or sent
    again after headquarters was restored from a backup). Returns how many changed a hold. A
    post's hold ids start again in each segment (`waypost hq rebase`): `segment` is the batch's."""
    changed = 0
    for where, ev in events:
        hold = HQLegalHold.get_or_none(
            (HQLegalHold.post_id == post_id)
            & (HQLegalHold.segment == segment)
            & (HQLegalHold.origin_hold_id == ev["id"])
        )
        if ev["event"] == "release":
            if hold is None:
                raise ProtocolError(
                    "malformed",
                    f"{where}: the release of hold {ev['id']}, which post {post_id} never sent to headquarters",
                )
            if hold.released_at is None:
                hold.released_at, hold.released_by = ev["released_at"], ev["released_by"]
                hold.release_reason = ev["release_reason"]
                hold.save()
                changed += 1
            continue
        if hold is not None:
            continue
        hold = HQLegalHold.create(
            post_id=post_id,
            segment=segment,
            origin_hold_id=ev["id"],
            plate=ev["plate"],
            mode=ev["mode"],
            pattern=ev["pattern"],
            since=_stamp(ev["since"]),
            until=_stamp(ev["until"], end=True),
            reason=ev["reason"],
            purpose_code=ev["purpose_code"],
            case_number=ev["case_number"],
            placed_by=ev["placed_by"],
            placed_org=ev["placed_org"],
            placed_at=ev["placed_at"],
        )
        if ev["reads"]:
            insert_rows(
                ("hq_legal_hold_read", ("hold_id", "post_id", "read_uuid")),
                [(hold.id, post_id, u) for u in ev["reads"]],
                on_conflict="ON CONFLICT (hold_id, read_uuid) DO NOTHING",
            )
        changed += 1
    return changed
