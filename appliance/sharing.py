"""Data-sharing requests: another agency's written request for ALPR data, its review, and its export.

Civil Code 1798.90.55(b) lets an ALPR operator share ALPR information only with public agencies,
and the California Attorney General's bulletin 2023-DLE-06 reads that as California state and local
public agencies only: never an out-of-state or federal agency, nor a private entity or person
(including through a vendor's sharing network). So the recipient is checked here, in the domain,
when a request is recorded AND again when it is approved: a form or a command that forgets the
rule still cannot get data out.

The policies (e.g. Cypress 464.7) ask for a written request naming the agency, the person
requesting and the intended purpose; the ALPR administrator (or designee) reviews it and approves
it before it is fulfilled; the approved request is retained on file. Requests live in their own
tables (migration 0006) which retention never purges: they are the record of every disclosure.

Every step is an access record with the request's stated purpose code and case number:
sharing.request (recorded), sharing.approve, sharing.deny, sharing.export; a recipient refused at
entry leaves sharing.refuse, so an auditor sees the attempts as well as the disclosures. Looking at
the requests on file (which show the plates asked for, the periods, the agencies and the export
counts) is recorded too: sharing.list and sharing.view, in the transaction of the lookup.

A request covers the reads whose stored plate (read.plate) matches it, never a read that merely
has the plate among its alternative OCR readings: those are other vehicles' reads (an officer's
search shows them as possible misreads; a disclosure releases only what the approved written
request names, Civil Code 1798.90.55).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

from peewee import AutoField, CharField, DateTimeField, ForeignKeyField, IntegerField, TextField

from appliance import audit, search
from appliance import export as exporting
from appliance.config import Settings
from appliance.db import write
from appliance.models import BaseModel, Read, utcnow

STATUTE = "Civil Code § 1798.90.55(b)"
BULLETIN = "California Attorney General Information Bulletin 2023-DLE-06"

# The kinds of recipient a request may name. The refused kinds are listed too, so that a person
# entering a request from, say, a federal task force sees the refusal and its reason rather than
# squeezing the agency into "other".
AGENCY_TYPES: dict[str, str] = {
    "ca-city-police": "California city police department",
    "ca-county-sheriff": "California county sheriff's office",
    "ca-state-agency": "California state agency (CHP, DOJ, ...)",
    "ca-district-attorney": "California district attorney",
    "ca-court": "California court",
    "ca-other-public": "Other California state or local public agency",
    "out-of-state": "Agency of another state (refused)",
    "federal": "Federal agency: FBI, DHS, ICE, CBP, DEA, ATF, ... (refused)",
    "private": "Private entity or person, including vendor networks (refused)",
}
ALLOWED_TYPES = frozenset(t for t in AGENCY_TYPES if t.startswith("ca-"))
REFUSED_TYPES = frozenset(AGENCY_TYPES) - ALLOWED_TYPES

_WHY = {
    "out-of-state": "an agency of another state is not a California public agency",
    "federal": "a federal agency is not a California state or local public agency",
    "private": "a private entity or person is not a public agency (this includes sharing through a vendor's network)",
}

MATCH_MODES = ("exact", "wildcard")
STATUSES = ("pending", "approved", "denied")
MAX_PERIOD_DAYS = 366 * 5
_STATE = re.compile(r"^[A-Z]{2}$")

for _name in ("sharing.request", "sharing.approve", "sharing.deny", "sharing.export"):
    audit.register_action(_name, True)
audit.register_action("sharing.refuse", False)
# Viewing the file of requests discloses no read (the request's own purpose stays with its
# sharing.* records), so these are recorded without a stated purpose, like hold.list.
audit.register_action("sharing.list", False)
audit.register_action("sharing.view", False)


class SharingError(ValueError):
    """The request cannot be recorded or acted on as given; `field` names the input at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class RecipientRefused(SharingError):
    """The recipient is not a California state or local public agency."""


class NotApproved(SharingError):
    """Only an approved request can produce an export."""


class SharingRequest(BaseModel):
    id = AutoField()
    agency_name = CharField()
    agency_type = CharField()
    agency_state = CharField()
    agency_ori = CharField(default="")  # NCIC originating agency identifier, 9 characters
    requester_name = CharField()
    requester_title = CharField()
    requester_contact = CharField()
    intended_purpose = TextField()  # in the requesting agency's words
    legal_authority = CharField()  # their case number, warrant, statute...
    purpose_code = CharField()  # this department's code, recorded with every step
    case_number = CharField()
    plate = CharField()
    match_mode = CharField()
    period_start_at = DateTimeField()
    period_end_at = DateTimeField()
    status = CharField(default="pending")
    created_by = CharField()
    created_organization = CharField()
    created_at = DateTimeField(default=utcnow)
    decided_by = CharField(null=True)
    decided_at = DateTimeField(null=True)
    decision_note = TextField(null=True)
    assurance = TextField(default="")  # the recipient's written assurance: no onward sharing

    class Meta:
        table_name = "sharing_request"

    @property
    def purpose(self) -> audit.Purpose:
        return audit.Purpose(self.purpose_code, self.case_number)

    @property
    def agency_type_label(self) -> str:
        return AGENCY_TYPES.get(self.agency_type, self.agency_type)

    def query(self) -> search.Query:
        """The reads this request covers: the stored plate only (alternatives=False), whatever the mode."""
        return search.Query(
            text=self.plate,
            mode=self.match_mode,
            since=self.period_start_at,
            until=self.period_end_at,
            alternatives=False,
        )

    def as_record(self) -> dict:
        """The data elements the request asks for, as its access records store them."""
        return {"sharing_request": self.id, **self.query().as_record()}


class SharingExport(BaseModel):
    """One evidence ZIP made for a request: who, when, how many reads, and the access record."""

    id = AutoField()
    request = ForeignKeyField(SharingRequest, backref="exports", on_delete="RESTRICT")
    exported_by = CharField()
    exported_at = DateTimeField(default=utcnow)
    read_count = IntegerField()
    image_count = IntegerField()
    data_sha256 = CharField()
    record_seq = IntegerField()

    class Meta:
        table_name = "sharing_export"


@dataclasses.dataclass
class NewRequest:
    agency_name: str
    agency_type: str
    agency_state: str
    requester_name: str
    requester_title: str
    requester_contact: str
    intended_purpose: str
    legal_authority: str
    plate: str
    match_mode: str
    period_start_at: dt.datetime
    period_end_at: dt.datetime


def refusal(agency_type: str, agency_state: str) -> str | None:
    """Why this recipient may not receive ALPR data, or None when it may."""
    state = (agency_state or "").strip().upper()
    if agency_type in REFUSED_TYPES:
        why = _WHY[agency_type]
    elif agency_type in ALLOWED_TYPES and state != "CA":
        why = f"the agency is in {state or 'an unstated state'}, not California, so it is an out-of-state agency"
    else:
        return None
    return (
        f"Refused: {why}. ALPR information may be shared only with California state and local public "
        f"agencies ({STATUTE}; {BULLETIN}: no out-of-state, federal or private recipients). "
        "Nothing has been shared."
    )


def _text(value, field: str, label: str, max_len: int, min_len: int = 2) -> str:
    value = re.sub(r"\s+", " ", (value or "")).strip()
    if len(value) < min_len:
        raise SharingError(f"{label} is required ({min_len} characters at least)", field)
    if len(value) > max_len:
        raise SharingError(f"{label} is too long ({len(value)} characters, at most {max_len})", field)
    return value


def _recipient_state(new: NewRequest) -> str:
    if new.agency_type not in AGENCY_TYPES:
        raise SharingError(
            f"unknown agency type {new.agency_type!r}; choose one of {', '.join(AGENCY_TYPES)}", "agency_type"
        )
    state = (new.agency_state or "").strip().upper()
    if not _STATE.fullmatch(state):
        raise SharingError(
            f"agency state {new.agency_state!r} must be a two-letter postal code such as CA", "agency_state"
        )
    return state


def _checked(new: NewRequest) -> NewRequest:
    """The request with its fields cleaned, or SharingError naming the first bad field."""
    out = dataclasses.replace(
        new,
        agency_state=_recipient_state(new),
        agency_name=_text(new.agency_name, "agency_name", "The agency's name", 120),
        requester_name=_text(new.requester_name, "requester_name", "The name of the person requesting", 120),
        requester_title=_text(new.requester_title, "requester_title", "The requester's title or rank", 120),
        requester_contact=_text(
            new.requester_contact, "requester_contact", "The requester's contact (telephone or e-mail)", 160, 5
        ),
        intended_purpose=_text(new.intended_purpose, "intended_purpose", "The intended purpose", 2000, 10),
        legal_authority=_text(
            new.legal_authority, "legal_authority", "The legal authority or the requesting agency's case number", 200, 3
        ),
    )
    if new.match_mode not in MATCH_MODES:
        raise SharingError(f"match {new.match_mode!r} must be one of {', '.join(MATCH_MODES)}", "match_mode")
    try:
        plate = search.normalise(new.plate, new.match_mode)
    except search.SearchError as exc:
        raise SharingError(str(exc), "plate") from None
    if new.period_start_at is None or new.period_end_at is None:
        raise SharingError(
            "the period (from and to) is required: a request names the time span it asks for",
            "period_start_at" if new.period_start_at is None else "period_end_at",
        )
    if new.period_end_at <= new.period_start_at:
        raise SharingError("the period ends before it starts", "period_end_at")
    if new.period_end_at - new.period_start_at > dt.timedelta(days=MAX_PERIOD_DAYS):
        raise SharingError(
            f"the period is longer than {MAX_PERIOD_DAYS} days; ask for the span the case needs", "period_end_at"
        )
    return dataclasses.replace(out, plate=plate)


def create(settings: Settings, actor: audit.Actor, new: NewRequest, purpose: audit.Purpose) -> SharingRequest:
    """Record a written request (status pending). A recipient that is not a California public agency
    is refused (RecipientRefused) and the refusal itself is logged; other bad input raises SharingError."""
    purpose = audit.check_purpose(settings, purpose.code, purpose.case_number)
    _recipient_state(new)
    why = refusal(new.agency_type, new.agency_state)
    if why:
        with write():
            audit.record(
                "sharing.refuse",
                actor,
                purpose=purpose,
                details={
                    "agency_name": (new.agency_name or "")[:120],
                    "agency_type": new.agency_type,
                    "agency_state": (new.agency_state or "")[:8],
                    "reason": why,
                },
            )
        raise RecipientRefused(why, "agency_type" if new.agency_type in REFUSED_TYPES else "agency_state")
    new = _checked(new)
    with write():
        req = SharingRequest.create(
            **dataclasses.asdict(new),
            purpose_code=purpose.code,
            case_number=purpose.case_number,
            status="pending",
            created_by=actor.username,
            created_organization=actor.organization,
        )
        audit.record(
            "sharing.request",
            actor,
            query=req.as_record(),
            purpose=purpose,
            objects=[f"sharing_request:{req.id}"],
            details={
                "agency_name": req.agency_name,
                "agency_type": req.agency_type,
                "agency_state": req.agency_state,
                "requester": req.requester_name,
                "legal_authority": req.legal_authority,
            },
        )
    return req


def get(request_id: int) -> SharingRequest:
    """The request, unrecorded: for the steps that record themselves. People look through view()."""
    req = SharingRequest.get_or_none(SharingRequest.id == request_id)
    if req is None:
        raise SharingError(f"no sharing request {request_id}", "request")
    return req


def view(actor: audit.Actor, request_id: int) -> tuple[SharingRequest, list[SharingExport]]:
    """One request and its exports, newest last; the viewing is recorded (sharing.view) in the same
    transaction. An unknown id raises SharingError and records nothing."""
    with write():
        req = get(request_id)
        exports = list(req.exports.order_by(SharingExport.id))  # type: ignore[attr-defined]  # peewee adds the backref exports
        audit.record(
            "sharing.view",
            actor,
            query={"sharing_request": req.id},
            result_count=1,
            objects=[f"sharing_request:{req.id}"],
            details={
                "plate": req.plate,
                "agency_name": req.agency_name,
                "purpose_code": req.purpose_code,
                "case_number": req.case_number,
            },
        )
    return req, exports


def decide(settings: Settings, actor: audit.Actor, request_id: int, approve: bool, note: str) -> SharingRequest:
    """Approve or deny a pending request, with the reviewer's note. An approval re-checks the
    recipient: a request that names a refused recipient can only be denied."""
    note = _text(note, "note", "A note explaining the decision", 2000, 3)
    with write():
        req = get(request_id)
        if req.status != "pending":
            raise SharingError(
                f"sharing request {req.id} was already {req.status} by {req.decided_by} "
                f"on {req.decided_at:%Y-%m-%d %H:%M} UTC; a decision is final",
                "decision",
            )
        if approve:
            why = refusal(req.agency_type, req.agency_state) or (
                None if req.agency_type in AGENCY_TYPES else f"Refused: unknown agency type {req.agency_type!r}."
            )
            if why:
                raise RecipientRefused(why + " Deny the request instead.", "decision")
        req.status = "approved" if approve else "denied"
        req.decided_by, req.decided_at, req.decision_note = actor.username, utcnow(), note
        req.save()
        audit.record(
            "sharing.approve" if approve else "sharing.deny",
            actor,
            query=req.as_record(),
            purpose=req.purpose,
            objects=[f"sharing_request:{req.id}"],
            details={"agency_name": req.agency_name, "note": note},
        )
    return req


def matching_reads(req: SharingRequest, page: int = 100) -> Iterator[Read]:
    """The reads the request covers, newest first, a page at a time (memory stays bounded)."""
    q = req.query()
    before = None
    while True:
        found = search.search(q, limit=page, before=before)
        for hit in found.hits:
            yield hit.read
        if found.next_before is None:
            return
        before = found.next_before


def export(settings: Settings, actor: audit.Actor, request_id: int, out: Path):
    """Write the evidence ZIP of an approved request to `out` (returns export.Summary).
    NotApproved, before anything is read or written, for any other status."""
    req = get(request_id)
    _require_approved(req)

    def still_allowed():
        fresh = get(request_id)
        _require_approved(fresh)

    def recorded(record, summary):
        SharingExport.create(
            request=req.id,
            exported_by=actor.username,
            read_count=summary.read_count,
            image_count=summary.image_count,
            data_sha256=summary.data_sha256,
            record_seq=record.seq,
        )

    reason = exporting.Reason(
        action="sharing.export",
        purpose=req.purpose,
        query=req.as_record(),
        objects=[f"sharing_request:{req.id}"],
        subject=f"sharing request {req.id}",
        statement=statement_lines(req),
        still_allowed=still_allowed,
        recorded=recorded,
    )
    try:
        return exporting.build_zip(settings, actor, matching_reads(req), reason, out=out)
    except search.SearchError as exc:
        raise SharingError(f"the request's query cannot be run: {exc}", "plate") from None


def _require_approved(req: SharingRequest) -> None:
    if req.status != "approved":
        raise NotApproved(
            f"sharing request {req.id} is {req.status}, not approved: only an approved request can "
            "produce an export (the ALPR administrator reviews it first). Nothing was exported.",
            "status",
        )
    why = refusal(req.agency_type, req.agency_state)
    if why:
        raise RecipientRefused(why, "agency_type")


def statement_lines(req: SharingRequest) -> list[str]:
    """The export's statement: the request, its approval and the legal basis (an approved request)."""
    return request_lines(req) + [
        f"Approved by:       {req.decided_by} on {req.decided_at:%Y-%m-%d %H:%M} UTC: {req.decision_note}",
        f"Legal basis:       {STATUTE}; {BULLETIN}. The recipient was checked to be a California "
        "state or local public agency when the request was recorded, approved and exported.",
    ]


def request_lines(req: SharingRequest) -> list[str]:
    """The request as filed, whatever its status."""
    return [
        f"Sharing request:   {req.id}",
        f"Recipient agency:  {req.agency_name} ({req.agency_type_label}), state {req.agency_state}",
        f"Requested by:      {req.requester_name}, {req.requester_title} ({req.requester_contact})",
        f"Intended purpose:  {req.intended_purpose}",
        f"Legal authority:   {req.legal_authority}",
        f"Data requested:    plate {req.plate} ({req.match_mode}), "
        f"{req.period_start_at:%Y-%m-%d %H:%M} to {req.period_end_at:%Y-%m-%d %H:%M} UTC",
        f"Recorded by:       {req.created_by} ({req.created_organization}) on {req.created_at:%Y-%m-%d %H:%M} UTC, "
        f"purpose {req.purpose_code}, case {req.case_number}",
    ]


def listing(actor: audit.Actor, status: str | None = None, limit: int = 200) -> list[SharingRequest]:
    """Requests on file, newest first; the listing itself is recorded (sharing.list)."""
    if status is not None and status not in STATUSES:
        raise SharingError(f"status {status!r} must be one of {', '.join(STATUSES)}", "status")
    with write():
        q = SharingRequest.select().order_by(SharingRequest.id.desc()).limit(limit)
        if status:
            q = q.where(SharingRequest.status == status)
        found = list(q)
        audit.record(
            "sharing.list",
            actor,
            query={"status": status or "all"},
            result_count=len(found),
            objects=[f"sharing_request:{r.id}" for r in found],
        )
    return found
