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
it in the post's outbox; sync/hq.py hands it here as the batch is stored, in the batch's
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

from peewee import (
    AutoField,
    CharField,
    CompositeKey,
    DateTimeField,
    IntegerField,
    TextField,
)

from appliance import audit
from appliance.config import Settings
from appliance.db import write
# a hold's rules are the post's: the same errors, reason, purpose check and longest period
from appliance.holds import MAX_PERIOD_DAYS, HoldError, check_purpose, check_reason
from appliance.models import utcnow
from appliance.search import SearchError, normalise
from sync import hq
from sync.protocol import ProtocolError

MODES = ("exact", "wildcard")
POST_MODES = ("exact", "wildcard", "partial", "similar")     # a post's hold is on one of its searches

# The post's action names, with the query saying "at": "headquarters" (as headquarters' search does).
audit.register_action("hold.place", True)
audit.register_action("hold.release", False)
audit.register_action("hold.list", False)


class HQLegalHold(hq.HQModel):
    id = AutoField()
    post_id = CharField(null=True)        # None: every post
    plate = CharField()                   # as typed, normalised
    mode = CharField()                    # exact | wildcard
    pattern = CharField()                 # the plate as a LIKE pattern
    since = CharField()                   # captured-at window, UTC, as hq_read.captured_at is written
    until = CharField()
    reason = TextField()
    purpose_code = CharField()
    case_number = CharField()
    placed_by = CharField()
    placed_org = CharField()
    placed_at = DateTimeField(default=utcnow)
    released_by = CharField(null=True)
    released_at = DateTimeField(null=True)
    release_reason = TextField(null=True)
    origin_hold_id = IntegerField(null=True)    # placed at post `post_id` as its hold of this id; None: here

    class Meta:
        table_name = "hq_legal_hold"

    @property
    def active(self) -> bool:
        return self.released_at is None

    @property
    def origin(self) -> str:
        return "headquarters" if self.origin_hold_id is None else f"post {self.post_id}"

    def describe(self) -> str:
        where = f"post {self.post_id}" if self.post_id else "every post"
        text = f"{self.mode} {self.plate} at {where}, captured {self.since} to {self.until} UTC"
        if self.origin_hold_id is not None:
            text += f", placed at post {self.post_id} (its hold {self.origin_hold_id}; released there only)"
        return text


class HQLegalHoldRead(hq.HQModel):
    """A read a post's hold froze, by its uuid (the read may not have reached headquarters yet)."""
    hold_id = IntegerField()
    post_id = CharField()
    read_uuid = CharField()

    class Meta:
        table_name = "hq_legal_hold_read"
        primary_key = CompositeKey("hold_id", "read_uuid")


def _held(which: str) -> str:
    return (f"(EXISTS (SELECT 1 FROM hq_legal_hold h WHERE {which} "
            "AND (h.post_id IS NULL OR h.post_id = r.post_id) "
            "AND r.captured_at >= h.since AND r.captured_at <= h.until "
            "AND (r.plate LIKE h.pattern OR EXISTS (SELECT 1 FROM hq_read_text t "
            "WHERE t.read_id = r.id AND t.text LIKE h.pattern))) "
            "OR EXISTS (SELECT 1 FROM hq_legal_hold_read x JOIN hq_legal_hold h ON h.id = x.hold_id "
            f"WHERE {which} AND x.post_id = r.post_id AND x.read_uuid = r.uuid))")


# The SQL retention uses to keep held reads (r is hq_read's alias). A read is matched by its
# plate or by any text the search index holds for it (its alternatives); retention only purges
# reads that are indexed, so a hold sees every text of a read before the read can go. A read a
# post's hold froze is matched by its uuid as well.
HELD_SQL = _held("h.released_at IS NULL")


def _stamp(value: dt.datetime, end: bool = False) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S") + (".999999" if end else "")


def place(settings: Settings, actor: audit.Actor, *, post_id: str | None, plate: str, mode: str,
          since: dt.datetime | None, until: dt.datetime | None, purpose_code: str | None,
          case_number: str | None, reason: str | None) -> tuple[HQLegalHold, int]:
    """Place a hold; returns it and how many reads headquarters holds now that it covers. The
    caller has headquarters' database and the accounts database connected."""
    purpose = check_purpose(settings, purpose_code, case_number)
    reason = check_reason(reason, "hold not placed")
    if mode not in MODES:
        raise HoldError(f"hold not placed: mode {mode!r}: choose exact or wildcard")
    try:
        text = normalise(plate, mode)
    except SearchError as exc:
        hint = " (a plate with * or ? needs --mode wildcard)" if mode == "exact" and any(c in (plate or "") for c in "*?") else ""
        raise HoldError(f"hold not placed: plate {plate!r}: {exc}{hint}") from exc
    if since is None or until is None:
        raise HoldError("hold not placed: a hold needs a period of capture times (from and to)")
    if since > until:
        raise HoldError(f"hold not placed: the period ends ({until:%Y-%m-%d %H:%M}) before it starts "
                        f"({since:%Y-%m-%d %H:%M})")
    if until - since > dt.timedelta(days=MAX_PERIOD_DAYS):
        raise HoldError(f"hold not placed: the period is longer than {MAX_PERIOD_DAYS} days")
    post_id = (post_id or "").strip() or None
    pattern = text.replace("*", "%").replace("?", "_")
    query = {"at": "headquarters", "post": post_id or "*", "plate": text, "mode": mode,
             "since": _stamp(since), "until": _stamp(until, end=True)}
    with hq._write():
        if post_id is not None and hq.HQPost.get_or_none(hq.HQPost.id == post_id) is None:
            raise HoldError(f"hold not placed: post {post_id!r} is not enrolled here (see `waypost hq status`)")
        hold = HQLegalHold.create(post_id=post_id, plate=text, mode=mode, pattern=pattern, since=query["since"],
                                  until=query["until"], reason=reason, purpose_code=purpose.code,
                                  case_number=purpose.case_number, placed_by=actor.username,
                                  placed_org=actor.organization)
        covered = covered_count(hold.id)
        with write():
            audit.record("hold.place", actor, query=query, purpose=purpose, objects=[f"hq_hold:{hold.id}"],
                         result_count=covered, details={"reason": reason})
    return hold, covered


def covered_count(hold_id: int) -> int:
    """Reads headquarters holds now that the hold covers (whether or not they are past retention)."""
    p = hq.hq_database.param
    held = _held(f"h.id = {p}")
    # the first terms let the capture-time index narrow the scan to the hold's period
    return hq.hq_database.execute_sql(
        f"SELECT count(*) FROM hq_read r, hq_legal_hold w WHERE w.id = {p} AND r.captured_at >= w.since "
        f"AND r.captured_at <= w.until AND {held}", (hold_id, hold_id, hold_id)).fetchone()[0]


def release(actor: audit.Actor, hold_id: int, reason: str | None) -> HQLegalHold:
    """Release a hold: its reads become subject to retention again unless another hold covers them."""
    reason = check_reason(reason, "hold not released")
    with hq._write():
        hold = HQLegalHold.get_or_none(HQLegalHold.id == hold_id)
        if hold is None:
            raise HoldError(f"hold not released: there is no hold {hold_id} at headquarters "
                            "(see `waypost hq hold list`)")
        if hold.origin_hold_id is not None:
            raise HoldError(f"hold not released: hold {hold_id} was placed at post {hold.post_id} (its hold "
                            f"{hold.origin_hold_id} there) and only that post can release it: release it there "
                            f"(`waypost hold release {hold.origin_hold_id}`); the release reaches headquarters "
                            "with the post's next batch")
        if not hold.active:
            raise HoldError(f"hold not released: hold {hold_id} was already released on "
                            f"{hold.released_at:%Y-%m-%d %H:%M} UTC by {hold.released_by}")
        hold.released_at, hold.released_by, hold.release_reason = utcnow(), actor.username, reason
        hold.save()
        with write():
            audit.record("hold.release", actor, query={"at": "headquarters", "hold": hold.id},
                         objects=[f"hq_hold:{hold.id}"],
                         details={"case_number": hold.case_number, "reason": reason, "placed_by": hold.placed_by})
    return hold


def listing(actor: audit.Actor, active_only: bool = False) -> list[HQLegalHold]:
    """Holds, newest first; the listing itself is recorded."""
    q = HQLegalHold.select().order_by(HQLegalHold.id.desc())
    if active_only:
        q = q.where(HQLegalHold.released_at.is_null())
    holds = list(q)
    with write():           # committed before the caller shows anything
        audit.record("hold.list", actor, query={"at": "headquarters", "active_only": active_only},
                     result_count=len(holds), objects=[f"hq_hold:{h.id}" for h in holds[:1000]])
    return holds


# --- holds placed at a post, arriving with its batches (sync/hq.py) ------------------------------

def _bad(where: str, field: str, what: str) -> ProtocolError:
    return ProtocolError("malformed", f"{where}: hold field {field!r} {what}")


def _text_field(hold: dict, name: str, where: str, empty: bool = False, most: int = 500) -> str:
    value = hold.get(name)
    if not isinstance(value, str) or (not empty and not value.strip()) or len(value) > most:
        raise _bad(where, name, f"must be a {'' if empty else 'non-empty '}string of at most {most} characters")
    return value


def _time_field(hold: dict, name: str, where: str) -> dt.datetime:
    value = hold.get(name)
    try:
        when = dt.datetime.fromisoformat(str(value).removesuffix("Z")) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None:
        raise _bad(where, name, f"must be an ISO date and time (UTC), not {str(value)[:40]!r}")
    return when.replace(tzinfo=None) if when.tzinfo is None else when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def from_post(item: dict, where: str) -> dict:
    """A batch's hold line, checked: the event ("place" or "release") and the hold's fields as
    headquarters stores them. Raises ProtocolError (malformed) naming `where` and the field."""
    event, hold = item.get("event"), item.get("hold")
    if event not in ("place", "release"):
        raise ProtocolError("malformed", f"{where}: hold event {str(event)[:20]!r} is neither place nor release")
    if not isinstance(hold, dict):
        raise ProtocolError("malformed", f"{where}: the hold is not an object")
    if not isinstance(hold.get("id"), int) or isinstance(hold.get("id"), bool) or hold["id"] < 1:
        raise _bad(where, "id", "must be the post's hold id (a whole number >= 1)")
    if event == "release":
        return {"event": event, "id": hold["id"], "released_at": _time_field(hold, "released_at", where),
                "released_by": _text_field(hold, "released_by", where, most=200),
                "release_reason": _text_field(hold, "release_reason", where)}
    kind = hold.get("kind")
    if kind not in ("read", "query"):
        raise _bad(where, "kind", "must be read or query")
    mode = hold.get("mode")
    if mode not in POST_MODES:
        raise _bad(where, "mode", f"must be one of {', '.join(POST_MODES)}")
    plate = hold.get("plate")
    if kind == "read":
        # the held read's plate as the post stores it (A-Z and 0-9, no longest: it may be longer
        # than a search takes); "" when the read's row was gone at the post. Its uuid holds it.
        if not isinstance(plate, str) or len(plate) > 100 or (plate and not (plate.isalnum() and plate == plate.upper())):
            raise _bad(where, "plate", f"{str(plate)[:20]!r} is not a read's plate (upper-case letters and "
                                       "digits, at most 100)")
        text = pattern = plate
    else:
        try:
            text = normalise(plate if isinstance(plate, str) else "", mode)
        except SearchError as exc:
            raise _bad(where, "plate", f"{str(plate)[:20]!r} is not a plate for {'an' if mode == 'exact' else 'a'} {mode} search: {exc}") from None
        pattern = {"wildcard": text.replace("*", "%").replace("?", "_"), "partial": f"%{text}%"}.get(mode, text)
    since, until = _time_field(hold, "since", where), _time_field(hold, "until", where)
    if since > until:
        raise _bad(where, "until", "is before its since")
    reads = hold.get("reads")
    if not isinstance(reads, list) or any(not isinstance(u, str) or not u or len(u) > 100 for u in reads):
        raise _bad(where, "reads", "must be a list of read uuids")
    return {"event": event, "id": hold["id"], "kind": kind, "plate": text, "mode": mode, "pattern": pattern,
            "since": _stamp(since), "until": _stamp(until, end=True),
            "case_number": _text_field(hold, "case_number", where, most=100),
            "purpose_code": _text_field(hold, "purpose_code", where, most=100),
            "reason": _text_field(hold, "reason", where),
            "placed_by": _text_field(hold, "placed_by", where, most=200),
            "placed_org": _text_field(hold, "placed_org", where, empty=True, most=200),
            "placed_at": _time_field(hold, "placed_at", where), "reads": sorted(set(reads))}


def store_from_post(post_id: str, events: list[tuple[str, dict]]) -> int:
    """Apply a batch's hold events (`(where, from_post(...))`, in seq order), in the caller's
    ingest transaction. The same event again changes nothing (a batch delivered twice, or sent
    again after headquarters was restored from a backup). Returns how many changed a hold."""
    changed = 0
    for where, ev in events:
        hold = HQLegalHold.get_or_none((HQLegalHold.post_id == post_id) & (HQLegalHold.origin_hold_id == ev["id"]))
        if ev["event"] == "release":
            if hold is None:
                raise ProtocolError("malformed", f"{where}: the release of hold {ev['id']}, which post {post_id} "
                                                 "never sent to headquarters")
            if hold.released_at is None:
                hold.released_at, hold.released_by = ev["released_at"], ev["released_by"]
                hold.release_reason = ev["release_reason"]
                hold.save()
                changed += 1
            continue
        if hold is not None:
            continue
        hold = HQLegalHold.create(
            post_id=post_id, origin_hold_id=ev["id"], plate=ev["plate"], mode=ev["mode"], pattern=ev["pattern"],
            since=ev["since"], until=ev["until"], reason=ev["reason"], purpose_code=ev["purpose_code"],
            case_number=ev["case_number"], placed_by=ev["placed_by"], placed_org=ev["placed_org"],
            placed_at=ev["placed_at"])
        if ev["reads"]:
            hq._insert(("hq_legal_hold_read", ("hold_id", "post_id", "read_uuid")),
                       [(hold.id, post_id, u) for u in ev["reads"]],
                       on_conflict="ON CONFLICT (hold_id, read_uuid) DO NOTHING")
        changed += 1
    return changed
